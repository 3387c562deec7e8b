import Foundation
import Kernels

extension ForwardPass {
    /// One decoder layer over `count` tokens this session has already run through `layer` (their
    /// keys and values at positions `start…` are in the cache), as if each token *alone* had the
    /// residual `x`: token t attends to the cached keys and values of the positions before it —
    /// the unperturbed sequence — and to its own new key and value. Row t of the result is what
    /// token t's hidden state becomes when only its own input to this layer differs: `count`
    /// independent per-token counterfactuals in one batched pass. The cache, the observer and
    /// the expert counters are left as they were; the pruner applies as in `forwardLayer`.
    ///
    /// Pruning calibration uses it to measure what dropping one token's expert at one layer does
    /// to that token's next-token distribution (`PruningDamage`). Later tokens' views of the
    /// perturbed token are not perturbed: that is the approximation.
    public func counterfactualLayer(_ layer: Int, _ x: inout [Float], count: Int, start: Int = 0) {
        let config = model.config
        let absorbed = latentCache ? config.latentAttention : nil
        let rowWidth =
            absorbed.map { $0.latentRank + $0.ropeDim } ?? config.attentionKVHeads * config.keyHeadDim
        precondition(
            keyCache[layer].count >= (start + count) * rowWidth,
            "counterfactualLayer needs the tokens' keys and values in layer \(layer)'s cache (run forwardLayer first)")
        let savedObserver = observer, savedRouted = tokensRouted, savedRun = expertsRun
        observer = nil
        defer {
            observer = savedObserver
            restoreCounts(routed: savedRouted, run: savedRun)
        }
        decoderLayer(layer, &x, count: count) { normed in
            if let absorbed {
                return absorbedAttention(
                    normed, count: count, layer: layer, offset: start, latent: absorbed, counterfactual: true)
            }
            let (q, k, v) = projections(normed, count: count, layer: layer, offset: start)
            let context = Attention.causal(
                q: q, keys: keyCache[layer], values: valueCache[layer], count: count, position: start,
                heads: config.attentionHeads, kvHeads: config.attentionKVHeads, dim: config.keyHeadDim,
                valueDim: config.valueHeadDim, scale: config.attentionScale, own: (k, v))
            return Kernels.linear(context, tokens: count, matrix: model.matrix(.output(layer: layer)))
        }
    }
}
