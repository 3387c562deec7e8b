import Foundation
import ModelFormat
import Kernels

/// The float forward pass, following transformers' modeling_mixtral / modeling_qwen2_moe /
/// modeling_qwen3_moe / modeling_olmoe. Stateful: keys and values of earlier positions stay in a
/// cache, so a sequence can be fed whole (prefill) or a token at a time (decode) with the same
/// result. Straightforward scalar code: the reference for the fast paths.
public final class FloatForward {
    public let model: FloatModel
    public weak var observer: RouterObserver?
    /// Which of the router's top-k experts run (ODP, OTP); nil runs them all.
    public var pruner: ExpertPruner?
    /// Per layer, since the last `resetCounts`: tokens through the MoE block and experts run for
    /// them (token × expert evaluations, after pruning).
    public private(set) var tokensRouted: [Int]
    public private(set) var expertsRun: [Int]
    /// Position of the next token.
    public private(set) var position = 0
    /// Per layer: keys and values after RoPE, `[position, kvHeads · headDim]`.
    private(set) var keyCache: [[Float]]
    private(set) var valueCache: [[Float]]

    public init(model: FloatModel, observer: RouterObserver? = nil) {
        self.model = model
        self.observer = observer
        keyCache = Array(repeating: [], count: model.config.layerCount)
        valueCache = Array(repeating: [], count: model.config.layerCount)
        tokensRouted = Array(repeating: 0, count: model.config.layerCount)
        expertsRun = Array(repeating: 0, count: model.config.layerCount)
    }

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
            throw ModelFormatError(file: model.directory, "sequence of \(position + count) tokens exceeds max_position_embeddings \(config.maxPositions)")
        }
        for token in tokens where !(0..<config.vocabSize).contains(token) {
            throw ModelFormatError(file: model.directory, "token id \(token) is outside the vocabulary (size \(config.vocabSize))")
        }
        var x = embed(tokens)
        for layer in 0..<config.layerCount { forwardLayer(layer, &x, count: count) }
        position += count
        return outputLogits(x, count: count)
    }

    /// The final norm and LM head over the last layer's hidden states `[count, hidden]`.
    public func outputLogits(_ x: [Float], count: Int) -> [Float] {
        let config = model.config
        let final = Kernels.rmsNorm(x, width: config.hiddenSize, weight: model.weight(.finalNorm), eps: Float(config.rmsNormEps))
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
        let mlp = config.moeLayers[layer] ? moe(normed2, count: count, layer: layer)
            : swiglu(normed2, count: count, gate: .denseGate(layer: layer), up: .denseUp(layer: layer),
                     down: .denseDown(layer: layer), width: config.denseIntermediateSize)
        for i in x.indices { x[i] += mlp[i] }
    }

    /// Causal self-attention with RoPE and grouped-query heads.
    func attend(_ x: [Float], count: Int, layer: Int) -> [Float] {
        let config = model.config
        let (q, k, v) = projections(x, count: count, layer: layer, offset: position)
        keyCache[layer] += k
        valueCache[layer] += v
        let keys = keyCache[layer], values = valueCache[layer]
        let context = Self.attention(q: q, keys: keys, values: values, count: count, position: position, heads: config.attentionHeads,
                                     kvHeads: config.keyValueHeads, dim: config.headDim)
        return Kernels.linear(context, tokens: count, matrix: model.matrix(.output(layer: layer)))
    }

    /// Queries, keys and values of `count` tokens at positions `offset…`, after any QK norm, clipping and RoPE.
    func projections(_ x: [Float], count: Int, layer: Int, offset: Int) -> (q: [Float], k: [Float], v: [Float]) {
        let config = model.config
        let heads = config.attentionHeads, kvHeads = config.keyValueHeads, dim = config.headDim
        let eps = Float(config.rmsNormEps)
        var q = Kernels.linear(x, tokens: count, matrix: model.matrix(.query(layer: layer)), bias: model.optionalWeight(.queryBias(layer: layer)))
        var k = Kernels.linear(x, tokens: count, matrix: model.matrix(.key(layer: layer)), bias: model.optionalWeight(.keyBias(layer: layer)))
        var v = Kernels.linear(x, tokens: count, matrix: model.matrix(.value(layer: layer)), bias: model.optionalWeight(.valueBias(layer: layer)))
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
        Rope.apply(&q, count: count, heads: heads, dim: dim, theta: config.ropeTheta, offset: offset)
        Rope.apply(&k, count: count, heads: kvHeads, dim: dim, theta: config.ropeTheta, offset: offset)
        return (q, k, v)
    }

    /// Causal scaled dot-product attention of `count` queries at positions `position…` over the
    /// cached keys and values `[position + count, kvHeads · dim]`; returns `[count, heads · dim]`.
    /// SIMD dot products and updates, heads split across cores when the work is large; the scalar
    /// loop stays as the reference (`Kernels.useReferenceKernels`).
    /// With `own` (`[count, kvHeads · dim]` each), query t's own position `position + t` uses its
    /// row of `own` instead of the cache: a per-token counterfactual (`counterfactualLayer`).
    static func attention(q: [Float], keys: [Float], values: [Float], count: Int, position: Int, heads: Int, kvHeads: Int,
                          dim: Int, own: (keys: [Float], values: [Float])? = nil) -> [Float] {
        let group = heads / kvHeads
        let scale = 1 / Float(dim).squareRoot()
        var context = [Float](repeating: 0, count: count * heads * dim)
        if Kernels.useReferenceKernels {
            return referenceAttention(q: q, keys: keys, values: values, count: count, position: position, heads: heads,
                                      kvHeads: kvHeads, dim: dim, own: own)
        }
        let ownKeys = own?.keys ?? [], ownValues = own?.values ?? []
        q.withUnsafeBufferPointer { q in
            keys.withUnsafeBufferPointer { keys in
                values.withUnsafeBufferPointer { values in
                    ownKeys.withUnsafeBufferPointer { ownKeys in
                        ownValues.withUnsafeBufferPointer { ownValues in
                            context.withUnsafeMutableBufferPointer { context in
                                let buffers = AttentionBuffers(q: q.baseAddress!, keys: keys.baseAddress!, values: values.baseAddress!,
                                                               context: context.baseAddress!,
                                                               // An empty array's buffer may still have an address.
                                                               ownKeys: own == nil ? nil : ownKeys.baseAddress,
                                                               ownValues: own == nil ? nil : ownValues.baseAddress)
                                let body: @Sendable (Int) -> Void = { h in
                                    let kv = h / group
                                    var scores = [Float](repeating: 0, count: position + count)
                                    scores.withUnsafeMutableBufferPointer { scores in
                                        for t in 0..<count {
                                            let last = position + t
                                            let query = buffers.q + (t * heads + h) * dim
                                            let lastKey = buffers.ownKeys.map { $0 + (t * kvHeads + kv) * dim } ?? buffers.keys + (last * kvHeads + kv) * dim
                                            let lastValue = buffers.ownValues.map { $0 + (t * kvHeads + kv) * dim } ?? buffers.values + (last * kvHeads + kv) * dim
                                            var peak = -Float.infinity
                                            for s in 0...last {
                                                let key = s == last ? lastKey : buffers.keys + (s * kvHeads + kv) * dim
                                                let score = Kernels.dot(query, key, dim) * scale
                                                scores[s] = score
                                                peak = max(peak, score)
                                            }
                                            var total: Float = 0
                                            for s in 0...last {
                                                scores[s] = Foundation.exp(scores[s] - peak)
                                                total += scores[s]
                                            }
                                            let out = buffers.context + (t * heads + h) * dim
                                            for s in 0...last {
                                                let value = s == last ? lastValue : buffers.values + (s * kvHeads + kv) * dim
                                                Kernels.addScaled(out, value, scores[s] / total, dim)
                                            }
                                        }
                                    }
                                }
                                if count * (position + count) * dim * heads >= 1 << 18 {
                                    Parallel.perform(iterations: heads, body)
                                } else {
                                    for h in 0..<heads { body(h) }
                                }
                            }
                        }
                    }
                }
            }
        }
        return context
    }

    /// The plain scalar attention loop: the reference for `attention`.
    static func referenceAttention(q: [Float], keys: [Float], values: [Float], count: Int, position: Int, heads: Int, kvHeads: Int,
                                   dim: Int, own: (keys: [Float], values: [Float])? = nil) -> [Float] {
        let group = heads / kvHeads
        let scale = 1 / Float(dim).squareRoot()
        var context = [Float](repeating: 0, count: count * heads * dim)
        var scores = [Float]()
        for h in 0..<heads {
            let kv = h / group
            for t in 0..<count {
                scores.removeAll(keepingCapacity: true)
                let last = position + t   // causal: attend to every cached position up to this one
                // With `own`, the query's own position reads its own row.
                func key(_ s: Int, _ i: Int) -> Float { s == last && own != nil ? own!.keys[(t * kvHeads + kv) * dim + i] : keys[(s * kvHeads + kv) * dim + i] }
                func value(_ s: Int, _ i: Int) -> Float { s == last && own != nil ? own!.values[(t * kvHeads + kv) * dim + i] : values[(s * kvHeads + kv) * dim + i] }
                for s in 0...last {
                    var dot: Float = 0
                    for i in 0..<dim { dot += q[(t * heads + h) * dim + i] * key(s, i) }
                    scores.append(dot * scale)
                }
                Kernels.softmax(&scores)
                for s in 0...last {
                    let p = scores[s]
                    for i in 0..<dim { context[(t * heads + h) * dim + i] += p * value(s, i) }
                }
            }
        }
        return context
    }

    /// The MoE block: softmax router → top-k → optional renormalisation → weighted SwiGLU experts,
    /// plus Qwen2-MoE's sigmoid-gated shared expert. Tokens are grouped by expert so that each
    /// expert runs once over all of its tokens (a matrix product in prefill, not a matvec each).
    func moe(_ x: [Float], count: Int, layer: Int) -> [Float] {
        let config = model.config
        let hidden = config.hiddenSize, experts = config.expertCount
        observer?.moeInput(layer: layer, hidden: x, count: count)
        let logits = Kernels.linear(x, tokens: count, matrix: model.matrix(.router(layer: layer)))
        var assigned = [[(token: Int, weight: Float)]](repeating: [], count: experts)
        for t in 0..<count {
            var probabilities = Array(logits[(t * experts)..<((t + 1) * experts)])
            Kernels.softmax(&probabilities)
            let chosen = Routing.topK(probabilities, k: config.routing.topK)
            var weights = chosen.map { probabilities[$0] }
            if config.routing.normalizeTopK {
                let sum = weights.reduce(0, +)
                weights = weights.map { $0 / sum }
            }
            observer?.routed(layer: layer, token: t, probabilities: probabilities, experts: chosen, weights: weights)
            var kept = chosen
            if let pruner {
                let flags = x.withUnsafeBufferPointer {
                    pruner.keep(layer: layer, hidden: UnsafeBufferPointer(rebasing: $0[(t * hidden)..<((t + 1) * hidden)]),
                                probabilities: probabilities, experts: chosen, weights: weights)
                }
                precondition(flags.count == chosen.count && flags.contains(true), "a pruner must keep at least one expert")
                if flags.contains(false) {
                    // The kept experts' weights are rescaled to the full top-k's sum.
                    let total = weights.reduce(0, +)
                    kept = zip(chosen, flags).filter(\.1).map(\.0)
                    let keptWeights = zip(weights, flags).filter(\.1).map(\.0)
                    let keptTotal = keptWeights.reduce(0, +)
                    weights = keptWeights.map { keptTotal > 0 ? $0 * total / keptTotal : $0 }
                }
            }
            expertsRun[layer] += kept.count
            for (expert, weight) in zip(kept, weights) { assigned[expert].append((t, weight)) }
        }
        tokensRouted[layer] += count
        var output = [Float](repeating: 0, count: count * hidden)
        for expert in 0..<experts where !assigned[expert].isEmpty {
            let tokens = assigned[expert]
            var rows = [Float](repeating: 0, count: tokens.count * hidden)
            for (row, entry) in tokens.enumerated() {
                for i in 0..<hidden { rows[row * hidden + i] = x[entry.token * hidden + i] }
            }
            let y = swiglu(rows, count: tokens.count, gate: .expertGate(layer: layer, expert: expert), up: .expertUp(layer: layer, expert: expert),
                           down: .expertDown(layer: layer, expert: expert), width: config.expertIntermediateSize) { activations in
                observer?.expertActivations(layer: layer, expert: expert, tokens: tokens.map(\.token), activations: activations)
            }
            observer?.expertOutputs(layer: layer, expert: expert, tokens: tokens.map(\.token), outputs: y)
            for (row, entry) in tokens.enumerated() {
                for i in 0..<hidden { output[entry.token * hidden + i] += entry.weight * y[row * hidden + i] }
            }
        }
        if config.sharedExpertIntermediateSize > 0 {
            let shared = swiglu(x, count: count, gate: .sharedExpertGate(layer: layer), up: .sharedExpertUp(layer: layer),
                                down: .sharedExpertDown(layer: layer), width: config.sharedExpertIntermediateSize)
            let gates = Kernels.linear(x, tokens: count, matrix: model.matrix(.sharedExpertScale(layer: layer)))
            for t in 0..<count {
                let gate = Kernels.sigmoid(gates[t])
                for i in 0..<hidden { output[t * hidden + i] += gate * shared[t * hidden + i] }
            }
        }
        return output
    }

    /// `down(silu(gate(x)) ⊙ up(x))`.
    func swiglu(_ x: [Float], count: Int, gate: TensorRole, up: TensorRole, down: TensorRole, width: Int,
                activations: ([Float]) -> Void = { _ in }) -> [Float] {
        let g = Kernels.linear(x, tokens: count, matrix: model.matrix(gate))
        let u = Kernels.linear(x, tokens: count, matrix: model.matrix(up))
        var h = [Float](repeating: 0, count: g.count)
        for i in h.indices { h[i] = Kernels.silu(g[i]) * u[i] }
        activations(h)
        return Kernels.linear(h, tokens: count, matrix: model.matrix(down))
    }
}

/// Rotary position embedding, HF convention: pairs (i, i + d/2), `x·cos + rotate_half(x)·sin`.
enum Rope {
    static func apply(_ x: inout [Float], count: Int, heads: Int, dim: Int, theta: Double, offset: Int = 0) {
        let half = dim / 2
        for t in 0..<count {
            let position = Double(t + offset)
            for i in 0..<half {
                let frequency = 1 / pow(theta, Double(2 * i) / Double(dim))
                let angle = position * frequency
                let c = Float(cos(angle)), s = Float(sin(angle))
                for h in 0..<heads {
                    let base = (t * heads + h) * dim
                    let a = x[base + i], b = x[base + i + half]
                    x[base + i] = a * c - b * s
                    x[base + i + half] = b * c + a * s
                }
            }
        }
    }
}

public enum Routing {
    /// Indices of the k largest values, largest first (ties: lower index first, as torch.topk).
    public static func topK(_ values: [Float], k: Int) -> [Int] {
        Array(values.indices.sorted { values[$0] != values[$1] ? values[$0] > values[$1] : $0 < $1 }.prefix(k))
    }
}

/// Raw pointers of one attention call; heads write disjoint rows of `context`.
struct AttentionBuffers: @unchecked Sendable {
    let q: UnsafePointer<Float>
    let keys: UnsafePointer<Float>
    let values: UnsafePointer<Float>
    let context: UnsafeMutablePointer<Float>
    /// Per query, its own position's key and value (`counterfactualLayer`); nil: the cache's.
    var ownKeys: UnsafePointer<Float>? = nil
    var ownValues: UnsafePointer<Float>? = nil
}
