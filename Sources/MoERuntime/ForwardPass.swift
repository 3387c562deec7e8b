import Foundation
import ModelFormat
import Kernels

/// The forward pass of every architecture pmq reads (float, bf16 or GPTQ-packed weights),
/// following transformers' modeling_mixtral / modeling_qwen2_moe / modeling_qwen3_moe /
/// modeling_olmoe: embeddings, decoder layers of attention (`ForwardPass+Attention`) and an MLP
/// or MoE block (`MoEBlock`), each residual, then the final norm and the LM head. What differs
/// per architecture is read from its config (`ModelFormat/Architectures`). Stateful: keys and
/// values of earlier positions stay in a cache, so a sequence can be fed whole (prefill) or a
/// token at a time (decode) with the same result.
public final class ForwardPass {
    public let model: MoEModel
    public weak var observer: RouterObserver?
    /// Which of the router's top-k experts run (ODP, OTP); nil runs them all.
    public var pruner: ExpertPruner?
    /// Per layer, since the last `resetCounts`: tokens through the MoE block and experts run for
    /// them (token × expert evaluations, after pruning).
    public internal(set) var tokensRouted: [Int]
    public internal(set) var expertsRun: [Int]
    /// Position of the next token.
    public private(set) var position = 0
    /// Per layer: keys and values after RoPE, `[position, kvHeads · headDim]`. Under MLA with
    /// `latentCache`, `keyCache` holds each position's normed latent and rotary key
    /// `[position, latentRank + ropeDim]` and `valueCache` stays empty.
    var keyCache: [[Float]]
    var valueCache: [[Float]]
    /// MLA models: cache the latent and absorb `kv_b_proj` into queries and outputs (true), or
    /// cache every head's expanded key and value (docs/ARCHITECTURES.md measures both).
    public var latentCache: Bool
    /// Eager MLA models with `latentCache`: each layer's `kv_b_proj` split per head, as the
    /// absorbed attention uses it (`ForwardPass+LatentAttention`).
    var absorbedWeights: [Int: AbsorbedWeights] = [:]

    public init(model: MoEModel, observer: RouterObserver? = nil, latentCache: Bool = ForwardPass.latentCacheDefault) {
        self.model = model
        self.observer = observer
        self.latentCache = latentCache
        keyCache = Array(repeating: [], count: model.config.layerCount)
        valueCache = Array(repeating: [], count: model.config.layerCount)
        tokensRouted = Array(repeating: 0, count: model.config.layerCount)
        expertsRun = Array(repeating: 0, count: model.config.layerCount)
    }

    /// Bytes the KV cache holds now (all layers).
    public var cacheBytes: Int { 4 * (keyCache.reduce(0) { $0 + $1.count } + valueCache.reduce(0) { $0 + $1.count }) }

    /// Zeroes `tokensRouted` and `expertsRun`.
    public func resetCounts() {
        for layer in tokensRouted.indices {
            tokensRouted[layer] = 0
            expertsRun[layer] = 0
        }
    }

    func restoreCounts(routed: [Int], run: [Int]) {
        tokensRouted = routed
        expertsRun = run
    }

    /// Forget the sequence (keeps the model).
    public func reset() {
        position = 0
        for layer in keyCache.indices {
            keyCache[layer].removeAll(keepingCapacity: true)
            valueCache[layer].removeAll(keepingCapacity: true)
        }
    }

    /// Feeds `tokens` after what came before; returns their logits `[tokens.count, vocab]`, row-major.
    public func logits(_ tokens: [Int]) throws -> [Float] {
        let config = model.config
        let count = tokens.count
        guard position + count <= config.maxPositions else {
            throw ModelFormatError(
                file: model.directory,
                "sequence of \(position + count) tokens exceeds max_position_embeddings \(config.maxPositions)")
        }
        for token in tokens where !(0..<config.vocabSize).contains(token) {
            throw ModelFormatError(
                file: model.directory, "token id \(token) is outside the vocabulary (size \(config.vocabSize))")
        }
        var x = embed(tokens)
        for layer in 0..<config.layerCount { forwardLayer(layer, &x, count: count) }
        position += count
        return outputLogits(x, count: count)
    }

    /// The final norm and LM head over the last layer's hidden states `[count, hidden]`.
    public func outputLogits(_ x: [Float], count: Int) -> [Float] {
        let config = model.config
        let final = Kernels.rmsNorm(
            x, width: config.hiddenSize, weight: model.weight(.finalNorm), eps: Float(config.rmsNormEps))
        let head = config.tieWordEmbeddings ? model.matrix(.embeddings) : model.matrix(.lmHead)
        return Kernels.linear(final, tokens: count, matrix: head)
    }

    /// Token embeddings `[tokens.count, hidden]` (ids must be in the vocabulary).
    public func embed(_ tokens: [Int]) -> [Float] {
        let embeddings = model.matrix(.embeddings)
        var x = [Float]()
        x.reserveCapacity(tokens.count * model.config.hiddenSize)
        for token in tokens { x += embeddings.row(token) }
        return x
    }

    /// One decoder layer over `count` tokens at positions `position…`: attention (appending to this
    /// layer's KV cache) and the MLP or MoE block, both residual. Does not advance `position`:
    /// `logits` does that after the last layer; the layer-by-layer profiler resets per window.
    public func forwardLayer(_ layer: Int, _ x: inout [Float], count: Int) {
        decoderLayer(layer, &x, count: count) { attend($0, count: count, layer: layer) }
    }

    /// The decoder layer's two residual blocks, attention given.
    func decoderLayer(_ layer: Int, _ x: inout [Float], count: Int, attention attend: ([Float]) -> [Float]) {
        let config = model.config
        let hidden = config.hiddenSize
        let eps = Float(config.rmsNormEps)
        let normed = Kernels.rmsNorm(x, width: hidden, weight: model.weight(.attentionNorm(layer: layer)), eps: eps)
        let attention = attend(normed)
        for i in x.indices { x[i] += attention[i] }
        let normed2 = Kernels.rmsNorm(x, width: hidden, weight: model.weight(.mlpNorm(layer: layer)), eps: eps)
        let mlp =
            config.moeLayers[layer]
            ? moe(normed2, count: count, layer: layer)
            : swiglu(
                normed2, count: count, gate: .denseGate(layer: layer), up: .denseUp(layer: layer),
                down: .denseDown(layer: layer), width: config.denseIntermediateSize)
        for i in x.indices { x[i] += mlp[i] }
    }
}
