import Foundation
import Kernels
import ModelFormat

extension ForwardPass {
    /// DeepSeek's multi-head latent attention, as transformers' `DeepseekV2Attention`: queries
    /// from `q_proj` or `q_b_proj(norm(q_a_proj x))`, split per head into a part without position
    /// (`nopeDim`) and a rotary part (`ropeDim`); `kv_a_proj_with_mqa` gives each token one latent
    /// (`latentRank`, normed) and one rotary key shared by all heads; `kv_b_proj` expands the
    /// latent into every head's key (nope part) and value. Returns queries and keys
    /// `[count, heads · (nope + rope)]` and values `[count, heads · valueDim]`.
    ///
    /// The cache holds these expanded keys and values, so decode reads each position's once per
    /// head, as for grouped-query attention; holding the latent instead (`latentRank + ropeDim`
    /// floats per position, the memory MLA saves) would mean expanding or absorbing `kv_b_proj`
    /// at every step (docs/ARCHITECTURES.md measures both sides).
    func latentProjections(
        _ x: [Float], count: Int, layer: Int, offset: Int, latent: LatentAttention
    ) -> (q: [Float], k: [Float], v: [Float]) {
        let config = model.config
        let heads = config.attentionHeads
        let nope = latent.nopeDim, ropeDim = latent.ropeDim, valueDim = latent.valueDim, rank = latent.latentRank
        let headWidth = nope + ropeDim
        // transformers builds q_a_layernorm and kv_a_layernorm with RMSNorm's default eps, not the config's.
        let bottleneckEps: Float = 1e-6
        var q: [Float]
        if let queryRank = latent.queryRank {
            let compressed = Kernels.linear(x, tokens: count, matrix: model.matrix(.queryA(layer: layer)))
            let normed = Kernels.rmsNorm(
                compressed, width: queryRank, weight: model.weight(.queryANorm(layer: layer)), eps: bottleneckEps)
            q = Kernels.linear(normed, tokens: count, matrix: model.matrix(.queryB(layer: layer)))
        } else {
            q = Kernels.linear(x, tokens: count, matrix: model.matrix(.query(layer: layer)))
        }
        let compressed = Kernels.linear(x, tokens: count, matrix: model.matrix(.keyValueA(layer: layer)))
        var latents = [Float](repeating: 0, count: count * rank)
        var ropeKeys = [Float](repeating: 0, count: count * ropeDim)
        for t in 0..<count {
            let row = t * (rank + ropeDim)
            for i in 0..<rank { latents[t * rank + i] = compressed[row + i] }
            for i in 0..<ropeDim { ropeKeys[t * ropeDim + i] = compressed[row + rank + i] }
        }
        latents = Kernels.rmsNorm(
            latents, width: rank, weight: model.weight(.keyValueANorm(layer: layer)), eps: bottleneckEps)
        let expanded = Kernels.linear(latents, tokens: count, matrix: model.matrix(.keyValueB(layer: layer)))
        Rope.apply(
            &q, count: count, heads: heads, stride: headWidth, start: nope, dim: ropeDim, rope: config.rope,
            offset: offset, interleaved: latent.interleaved)
        Rope.apply(
            &ropeKeys, count: count, heads: 1, stride: ropeDim, dim: ropeDim, rope: config.rope, offset: offset,
            interleaved: latent.interleaved)
        var k = [Float](repeating: 0, count: count * heads * headWidth)
        var v = [Float](repeating: 0, count: count * heads * valueDim)
        for t in 0..<count {
            for h in 0..<heads {
                let source = (t * heads + h) * (nope + valueDim)
                let key = (t * heads + h) * headWidth
                for i in 0..<nope { k[key + i] = expanded[source + i] }
                for i in 0..<ropeDim { k[key + nope + i] = ropeKeys[t * ropeDim + i] }
                for i in 0..<valueDim { v[(t * heads + h) * valueDim + i] = expanded[source + nope + i] }
            }
        }
        return (q, k, v)
    }
}
