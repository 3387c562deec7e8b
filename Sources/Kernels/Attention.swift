import Foundation

/// Causal scaled dot-product attention with grouped-query heads over a KV cache: decode with a kv
/// head's query heads together (`Attention+Decode`), whole windows from position 0 as GEMMs
/// (`Attention+Prefill`), split across cores when the work is large, beside the plain scalar loop
/// they are tested against.
public enum Attention {
    /// Windows of at least this many tokens from position 0 take `prefill` (two GEMMs per head).
    public static let prefillMinimum = 32

    /// Causal scaled dot-product attention of `count` queries at positions `position…` over the
    /// cached keys `[position + count, kvHeads · dim]` and values `[position + count, kvHeads ·
    /// valueDim]` (`valueDim` defaults to `dim`; MLA's differ); returns `[count, heads · valueDim]`.
    /// Scores are scaled by `scale`, `1/√dim` unless given.
    /// Windows of `prefillMinimum` tokens or more from position 0 take `prefill`, the rest `decode`
    /// (parts split across cores when the work is large); the scalar loop (`reference`) runs instead
    /// under `Kernels.useReferenceKernels`.
    /// With `own` (`[count, kvHeads · dim]` each), query t's own position `position + t` uses its
    /// row of `own` instead of the cache: a per-token counterfactual (`ForwardPass.counterfactualLayer`).
    public static func causal(
        q: [Float], keys: [Float], values: [Float], count: Int, position: Int, heads: Int, kvHeads: Int,
        dim: Int, valueDim: Int? = nil, scale: Float? = nil, own: (keys: [Float], values: [Float])? = nil
    ) -> [Float] {
        let vDim = valueDim ?? dim
        let scale = scale ?? 1 / Float(dim).squareRoot()
        var context = [Float](repeating: 0, count: count * heads * vDim)
        if Kernels.useReferenceKernels {
            return reference(
                q: q, keys: keys, values: values, count: count, position: position, heads: heads,
                kvHeads: kvHeads, dim: dim, valueDim: vDim, scale: scale, own: own)
        }
        if position == 0, own == nil, count >= prefillMinimum {
            q.withUnsafeBufferPointer { q in
                keys.withUnsafeBufferPointer { keys in
                    values.withUnsafeBufferPointer { values in
                        context.withUnsafeMutableBufferPointer { context in
                            prefill(
                                q: q, keys: keys, values: values, context: context, count: count, heads: heads,
                                kvHeads: kvHeads, dim: dim, valueDim: vDim, scale: scale)
                        }
                    }
                }
            }
            return context
        }
        let ownKeys = own?.keys ?? [], ownValues = own?.values ?? []
        q.withUnsafeBufferPointer { q in
            keys.withUnsafeBufferPointer { keys in
                values.withUnsafeBufferPointer { values in
                    ownKeys.withUnsafeBufferPointer { ownKeys in
                        ownValues.withUnsafeBufferPointer { ownValues in
                            context.withUnsafeMutableBufferPointer { context in
                                let buffers = AttentionBuffers(
                                    q: q.baseAddress!, keys: keys.baseAddress!, values: values.baseAddress!,
                                    context: context.baseAddress!,
                                    // An empty array's buffer may still have an address.
                                    ownKeys: own == nil ? nil : ownKeys.baseAddress,
                                    ownValues: own == nil ? nil : ownValues.baseAddress)
                                decode(
                                    buffers, count: count, position: position, heads: heads, kvHeads: kvHeads,
                                    dim: dim, valueDim: vDim, scale: scale)
                            }
                        }
                    }
                }
            }
        }
        return context
    }

    /// `scores[s] = exp(scores[s] − peak)` for `s < count` with the eight-lane `Kernels.exp`;
    /// returns their sum (eight partial sums, then the tail). Decode and prefill softmax share it.
    @inline(__always)
    static func exponentiate(_ scores: UnsafeMutablePointer<Float>, count: Int, peak: Float) -> Float {
        var sums = SIMD8<Float>(), s = 0
        while s + 8 <= count {
            let weights = Kernels.exp(Kernels.load8(scores + s) - peak)
            UnsafeMutableRawPointer(scores + s).storeBytes(of: weights, as: SIMD8<Float>.self)
            sums += weights
            s += 8
        }
        var total = sums.sum()
        while s < count {
            scores[s] = Kernels.exp(scores[s] - peak)
            total += scores[s]
            s += 1
        }
        return total
    }

    /// The plain scalar attention loop: the reference for `attention`.
    public static func reference(
        q: [Float], keys: [Float], values: [Float], count: Int, position: Int, heads: Int, kvHeads: Int,
        dim: Int, valueDim: Int? = nil, scale: Float? = nil, own: (keys: [Float], values: [Float])? = nil
    ) -> [Float] {
        let group = heads / kvHeads
        let vDim = valueDim ?? dim
        let scale = scale ?? 1 / Float(dim).squareRoot()
        var context = [Float](repeating: 0, count: count * heads * vDim)
        var scores = [Float]()
        for h in 0..<heads {
            let kv = h / group
            for t in 0..<count {
                scores.removeAll(keepingCapacity: true)
                let last = position + t // causal: attend to every cached position up to this one
                // With `own`, the query's own position reads its own row.
                func key(_ s: Int, _ i: Int) -> Float {
                    s == last && own != nil
                        ? own!.keys[(t * kvHeads + kv) * dim + i] : keys[(s * kvHeads + kv) * dim + i]
                }
                func value(_ s: Int, _ i: Int) -> Float {
                    s == last && own != nil
                        ? own!.values[(t * kvHeads + kv) * vDim + i] : values[(s * kvHeads + kv) * vDim + i]
                }
                for s in 0...last {
                    var dot: Float = 0
                    for i in 0..<dim { dot += q[(t * heads + h) * dim + i] * key(s, i) }
                    scores.append(dot * scale)
                }
                Kernels.softmax(&scores)
                for s in 0...last {
                    let p = scores[s]
                    for i in 0..<vDim { context[(t * heads + h) * vDim + i] += p * value(s, i) }
                }
            }
        }
        return context
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
