import Foundation
import Kernels

extension ForwardPass {
    /// Causal self-attention with RoPE: grouped-query heads, or DeepSeek's latent attention
    /// (`ForwardPass+LatentAttention`), absorbed over a latent cache or expanded to every head.
    func attend(_ x: [Float], count: Int, layer: Int) -> [Float] {
        let config = model.config
        if latentCache, let latent = config.latentAttention {
            return absorbedAttention(x, count: count, layer: layer, offset: position, latent: latent)
        }
        let (q, k, v) = projections(x, count: count, layer: layer, offset: position)
        keyCache[layer] += k
        valueCache[layer] += v
        let keys = keyCache[layer], values = valueCache[layer]
        let context = Attention.causal(
            q: q, keys: keys, values: values, count: count, position: position, heads: config.attentionHeads,
            kvHeads: config.attentionKVHeads, dim: config.keyHeadDim, valueDim: config.valueHeadDim,
            scale: config.attentionScale)
        return Kernels.linear(context, tokens: count, matrix: model.matrix(.output(layer: layer)))
    }

    /// Queries, keys and values of `count` tokens at positions `offset…`, after any QK norm,
    /// clipping and RoPE: `[count, heads · keyHeadDim]`, `[count, attentionKVHeads · keyHeadDim]`
    /// and `[count, attentionKVHeads · valueHeadDim]`.
    func projections(_ x: [Float], count: Int, layer: Int, offset: Int) -> (q: [Float], k: [Float], v: [Float]) {
        if let latent = model.config.latentAttention {
            return latentProjections(x, count: count, layer: layer, offset: offset, latent: latent)
        }
        let config = model.config
        let heads = config.attentionHeads, kvHeads = config.keyValueHeads, dim = config.headDim
        let eps = Float(config.rmsNormEps)
        // One call: a decode step quantizes x once for the three (`Kernels.linears`).
        let qkv = Kernels.linears(
            x, tokens: count,
            matrices: [
                model.matrix(.query(layer: layer)), model.matrix(.key(layer: layer)),
                model.matrix(.value(layer: layer)),
            ],
            biases: [
                model.optionalWeight(.queryBias(layer: layer)), model.optionalWeight(.keyBias(layer: layer)),
                model.optionalWeight(.valueBias(layer: layer)),
            ])
        var q = qkv[0], k = qkv[1], v = qkv[2]
        switch config.qkNorm {
        case .none: break
        case .perHead:
            q = Kernels.rmsNorm(q, width: dim, weight: model.weight(.queryNorm(layer: layer)), eps: eps)
            k = Kernels.rmsNorm(k, width: dim, weight: model.weight(.keyNorm(layer: layer)), eps: eps)
        case .fullProjection:
            q = Kernels.rmsNorm(q, width: heads * dim, weight: model.weight(.queryNorm(layer: layer)), eps: eps)
            k = Kernels.rmsNorm(k, width: kvHeads * dim, weight: model.weight(.keyNorm(layer: layer)), eps: eps)
        }
        if let clip = config.clipQKV.map(Float.init) {
            for i in q.indices { q[i] = min(max(q[i], -clip), clip) }
            for i in k.indices { k[i] = min(max(k[i], -clip), clip) }
            for i in v.indices { v[i] = min(max(v[i], -clip), clip) }
        }
        Rope.apply(&q, count: count, heads: heads, stride: dim, dim: dim, rope: config.rope, offset: offset)
        Rope.apply(&k, count: count, heads: kvHeads, stride: dim, dim: dim, rope: config.rope, offset: offset)
        return (q, k, v)
    }
}
