import Foundation
import Kernels
import ModelFormat

/// `kv_b_proj` split per head for absorbed attention: the key half transposed (`[latentRank,
/// nopeDim]` per head, so that `W_ukᵀ · q_nope` is a linear layer) and the value half as stored
/// (`[valueDim, latentRank]` per head).
struct AbsorbedWeights {
    var keys: [[Float]]
    var values: [[Float]]

    init(_ matrix: Matrix, heads: Int, latent: LatentAttention) {
        let w = matrix.floats, rank = latent.latentRank, nope = latent.nopeDim, valueDim = latent.valueDim
        keys = (0..<heads).map { h in
            var transposed = [Float](repeating: 0, count: rank * nope)
            for n in 0..<nope {
                let row = (h * (nope + valueDim) + n) * rank
                for c in 0..<rank { transposed[c * nope + n] = w[row + c] }
            }
            return transposed
        }
        values = (0..<heads).map { h in
            let first = (h * (nope + valueDim) + nope) * rank
            return Array(w[first..<(first + valueDim * rank)])
        }
    }
}

extension ForwardPass {
    /// Whether new sessions of MLA models cache the latent (see `latentCache`).
    public static let latentCacheDefault = true

    /// DeepSeek's multi-head latent attention's inputs, as transformers' `DeepseekV2Attention`:
    /// queries from `q_proj` or `q_b_proj(norm(q_a_proj x))`, `[count, heads · (nope + rope)]`
    /// with RoPE on each head's last `ropeDim`; the normed latents `[count, latentRank]`; and per
    /// token the cache row `[normed latent | rotary key (ropeDim)]` from `kv_a_proj_with_mqa`.
    func latentInputs(
        _ x: [Float], count: Int, layer: Int, offset: Int, latent: LatentAttention
    ) -> (q: [Float], latents: [Float], rows: [Float]) {
        let config = model.config
        let rank = latent.latentRank, ropeDim = latent.ropeDim
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
        Rope.apply(
            &q, count: count, heads: config.attentionHeads, stride: latent.nopeDim + ropeDim, start: latent.nopeDim,
            dim: ropeDim, rope: config.rope, offset: offset, interleaved: latent.interleaved)
        var rows = Kernels.linear(x, tokens: count, matrix: model.matrix(.keyValueA(layer: layer)))
        var latents = [Float](repeating: 0, count: count * rank)
        for t in 0..<count {
            for i in 0..<rank { latents[t * rank + i] = rows[t * (rank + ropeDim) + i] }
        }
        latents = Kernels.rmsNorm(
            latents, width: rank, weight: model.weight(.keyValueANorm(layer: layer)), eps: bottleneckEps)
        for t in 0..<count {
            for i in 0..<rank { rows[t * (rank + ropeDim) + i] = latents[t * rank + i] }
        }
        Rope.apply(
            &rows, count: count, heads: 1, stride: rank + ropeDim, start: rank, dim: ropeDim, rope: config.rope,
            offset: offset, interleaved: latent.interleaved)
        return (q, latents, rows)
    }

    /// Expanded MLA: `kv_b_proj` turns each latent into every head's key (nope part, then the
    /// shared rotary key) and value. Queries and keys `[count, heads · (nope + rope)]`, values
    /// `[count, heads · valueDim]`, for the grouped-query attention kernel and cache.
    func latentProjections(
        _ x: [Float], count: Int, layer: Int, offset: Int, latent: LatentAttention
    ) -> (q: [Float], k: [Float], v: [Float]) {
        let heads = model.config.attentionHeads
        let nope = latent.nopeDim, ropeDim = latent.ropeDim, valueDim = latent.valueDim, rank = latent.latentRank
        let headWidth = nope + ropeDim
        let (q, latents, rows) = latentInputs(x, count: count, layer: layer, offset: offset, latent: latent)
        let expanded = Kernels.linear(latents, tokens: count, matrix: model.matrix(.keyValueB(layer: layer)))
        var k = [Float](repeating: 0, count: count * heads * headWidth)
        var v = [Float](repeating: 0, count: count * heads * valueDim)
        for t in 0..<count {
            for h in 0..<heads {
                let source = (t * heads + h) * (nope + valueDim)
                let key = (t * heads + h) * headWidth
                for i in 0..<nope { k[key + i] = expanded[source + i] }
                for i in 0..<ropeDim { k[key + nope + i] = rows[t * (rank + ropeDim) + rank + i] }
                for i in 0..<valueDim { v[(t * heads + h) * valueDim + i] = expanded[source + nope + i] }
            }
        }
        return (q, k, v)
    }

    /// Absorbed MLA over a latent cache (DeepSeek's inference form): each head's nope query is
    /// taken into latent space (`W_ukᵀ q`), so a score is one dot product with the cached row
    /// `[latent | rotary key]`, the same for every head; the attention-weighted latent is then
    /// taken to each head's value by `W_uv`. Appends the tokens' rows to the cache unless
    /// `counterfactual` (then each token sees the cache before `offset` and its own row).
    /// Returns the attention block's output `[count, hidden]`.
    func absorbedAttention(
        _ x: [Float], count: Int, layer: Int, offset: Int, latent: LatentAttention, counterfactual: Bool = false
    ) -> [Float] {
        let config = model.config
        let heads = config.attentionHeads
        let nope = latent.nopeDim, ropeDim = latent.ropeDim, valueDim = latent.valueDim, rank = latent.latentRank
        let width = rank + ropeDim
        let (q, _, rows) = latentInputs(x, count: count, layer: layer, offset: offset, latent: latent)
        if !counterfactual { keyCache[layer] += rows }
        let weights =
            absorbedWeights[layer]
            ?? AbsorbedWeights(model.matrix(.keyValueB(layer: layer)), heads: heads, latent: latent)
        if !model.lazy { absorbedWeights[layer] = weights }
        var absorbed = [Float](repeating: 0, count: count * heads * width)
        var part = [Float](repeating: 0, count: count * max(nope, rank))
        for h in 0..<heads {
            for t in 0..<count {
                for n in 0..<nope { part[t * nope + n] = q[(t * heads + h) * (nope + ropeDim) + n] }
            }
            let inLatent = Kernels.linear(
                Array(part[0..<(count * nope)]), tokens: count, weight: weights.keys[h], outFeatures: rank,
                inFeatures: nope)
            for t in 0..<count {
                let target = (t * heads + h) * width, source = (t * heads + h) * (nope + ropeDim) + nope
                for c in 0..<rank { absorbed[target + c] = inLatent[t * rank + c] }
                for i in 0..<ropeDim { absorbed[target + rank + i] = q[source + i] }
            }
        }
        let context = Attention.causal(
            q: absorbed, keys: keyCache[layer], values: keyCache[layer], count: count, position: offset, heads: heads,
            kvHeads: 1, dim: width, valueDim: width, scale: config.attentionScale,
            own: counterfactual ? (rows, rows) : nil)
        var output = [Float](repeating: 0, count: count * heads * valueDim)
        for h in 0..<heads {
            for t in 0..<count {
                for c in 0..<rank { part[t * rank + c] = context[(t * heads + h) * width + c] }
            }
            let values = Kernels.linear(
                Array(part[0..<(count * rank)]), tokens: count, weight: weights.values[h], outFeatures: valueDim,
                inFeatures: rank)
            for t in 0..<count {
                for j in 0..<valueDim { output[(t * heads + h) * valueDim + j] = values[t * valueDim + j] }
            }
        }
        return Kernels.linear(output, tokens: count, matrix: model.matrix(.output(layer: layer)))
    }
}
