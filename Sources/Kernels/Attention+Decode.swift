import CPrefetch

/// Attention over a KV cache for queries after it (decode, and windows that do not start at 0):
/// the query heads that share a kv head are taken together, so each cached key and value is read
/// from memory once per group instead of once per query head.
extension Attention {
    /// The parts `decode` splits the heads into: per kv head, `blocks` blocks of at most `size` of
    /// its query heads. One block per kv head when that gives every core two parts; else the group
    /// is cut (an MQA model's one kv head into 2 × cores blocks). The result does not depend on it.
    static func decodeBlocks(heads: Int, kvHeads: Int) -> (blocks: Int, size: Int) {
        let group = heads / kvHeads
        let wanted = (2 * Parallel.cores + kvHeads - 1) / kvHeads
        let blocks = min(group, max(1, wanted))
        let size = (group + blocks - 1) / blocks
        return ((group + size - 1) / size, size)
    }

    /// `causal` for windows after a cache (and short ones from 0). Per part (a kv head and a block of
    /// its query heads), per query: the scores of all the block's heads position by position (one key,
    /// read once, dotted with four heads' queries at a time by `dots4`), the softmax per head, then the
    /// context of up to four heads sixteen lanes at a time in registers (`weightedValues`), each value
    /// row read once for the four; cached rows are prefetched `prefetchDistance` rows ahead. Per head
    /// this is the arithmetic of a loop over heads (`Kernels.dot` per position; the context the same
    /// chain of multiply-adds over positions from zero), so the grouping changes no bit of the result.
    /// At 1,024 cached positions a layer's keys and values of the 4-kv-head synthetic Mixtral are
    /// 2 MiB, beyond the L2: a loop over query heads read them four times.
    static func decode(
        _ buffers: AttentionBuffers, count: Int, position: Int, heads: Int, kvHeads: Int, dim: Int, valueDim vDim: Int,
        scale: Float
    ) {
        let group = heads / kvHeads
        let (blocks, size) = decodeBlocks(heads: heads, kvHeads: kvHeads)
        let stride = position + count
        let body: @Sendable (Int) -> Void = { part in
            let kv = part / blocks
            let first = kv * group + (part % blocks) * size
            let n = min(size, (kv + 1) * group - first)
            // Per head of the block, `stride` scores, then (in place) the softmax's weights.
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: n * stride)
            defer { scores.deallocate() }
            for t in 0..<count {
                let last = position + t
                let lastKey =
                    buffers.ownKeys.map { $0 + (t * kvHeads + kv) * dim } ?? buffers.keys + (last * kvHeads + kv) * dim
                let lastValue =
                    buffers.ownValues.map { $0 + (t * kvHeads + kv) * vDim }
                    ?? buffers.values + (last * kvHeads + kv) * vDim
                let query = buffers.q + (t * heads + first) * dim
                for s in 0...last {
                    let key = s == last ? lastKey : buffers.keys + (s * kvHeads + kv) * dim
                    if s + prefetchDistance < last { prefetch(key + prefetchDistance * kvHeads * dim, count: dim) }
                    var h = 0
                    while h + 4 <= n {
                        let four = dots4(query + h * dim, key, dim) * scale
                        for r in 0..<4 { scores[(h + r) * stride + s] = four[r] }
                        h += 4
                    }
                    while h < n {
                        scores[h * stride + s] = Kernels.dot(query + h * dim, key, dim) * scale
                        h += 1
                    }
                }
                for h in 0..<n {
                    let row = scores + h * stride
                    var peak = -Float.infinity
                    for s in 0...last { peak = max(peak, row[s]) }
                    let total = exponentiate(row, count: last + 1, peak: peak)
                    for s in 0...last { row[s] /= total }
                }
                var h = 0
                while h < n {
                    let m = min(4, n - h)
                    weightedValues(
                        scores + h * stride, stride: stride, heads: m, positions: last,
                        values: buffers.values + kv * vDim, rowStride: kvHeads * vDim, lastValue: lastValue,
                        valueDim: vDim, into: buffers.context + (t * heads + first + h) * vDim)
                    h += m
                }
            }
        }
        Parallel.perform(
            iterations: kvHeads * blocks, work: count * (position + count) * (dim + vDim) * heads, body)
    }

    /// `Kernels.dot(q + h · dim, key, dim)` for the four heads `h` whose queries follow each other at
    /// `q`, bit for bit: each head's lanes from `Kernels.dotLanes` (as `dot` has them), and their
    /// added in `SIMD8.sum()`'s order (lane 0 to 7, one after the other) for the four heads at once,
    /// lane i of the four in one `SIMD4`, instead of four horizontal sums.
    @inline(__always)
    static func dots4(_ q: UnsafePointer<Float>, _ key: UnsafePointer<Float>, _ dim: Int) -> SIMD4<Float> {
        let v0 = Kernels.dotLanes(q, key, dim), v1 = Kernels.dotLanes(q + dim, key, dim)
        let v2 = Kernels.dotLanes(q + 2 * dim, key, dim), v3 = Kernels.dotLanes(q + 3 * dim, key, dim)
        var sums = SIMD4(v0[0], v1[0], v2[0], v3[0])
        for i in 1..<8 { sums += SIMD4(v0[i], v1[i], v2[i], v3[i]) }
        var i = dim - dim % 8
        while i < dim {
            for h in 0..<4 { sums[h] += q[h * dim + i] * key[i] }
            i += 1
        }
        return sums
    }

    /// `out[h] = Σ_s p[h][s] · value(s)` for `heads` (1–4) heads whose outputs follow each other
    /// (`valueDim` apart), over the cached rows `0..<positions` (`values + s · rowStride`) and then
    /// `lastValue`; `p[h]` starts at `p + h · stride`. Sixteen lanes a pass, then eight, then one;
    /// each multiply-add in position order from zero (as `Kernels.addScaled` into a zeroed row).
    @inline(__always)
    static func weightedValues(
        _ p: UnsafePointer<Float>, stride: Int, heads: Int, positions: Int, values: UnsafePointer<Float>,
        rowStride: Int, lastValue: UnsafePointer<Float>, valueDim: Int, into out: UnsafeMutablePointer<Float>
    ) {
        // Heads past `heads` repeat the last one's weights; their sums are not stored.
        let weights = (
            p, p + min(1, heads - 1) * stride, p + min(2, heads - 1) * stride, p + min(3, heads - 1) * stride
        )
        var d = 0
        while d + 16 <= valueDim {
            weightedLanes(
                SIMD16<Float>.self, weights, heads: heads, positions: positions, values: values + d,
                rowStride: rowStride, lastValue: lastValue + d, valueDim: valueDim, into: out + d,
                prefetch: d == 0)
            d += 16
        }
        if d + 8 <= valueDim {
            weightedLanes(
                SIMD8<Float>.self, weights, heads: heads, positions: positions, values: values + d,
                rowStride: rowStride, lastValue: lastValue + d, valueDim: valueDim, into: out + d,
                prefetch: d == 0)
            d += 8
        }
        while d < valueDim {
            for h in 0..<heads {
                var sum: Float = 0
                for s in 0...positions {
                    sum = sum.addingProduct(p[h * stride + s], (s == positions ? lastValue : values + s * rowStride)[d])
                }
                out[h * valueDim + d] = sum
            }
            d += 1
        }
    }

    /// One pass of `weightedValues` over the lanes of `V` starting at `values`, `lastValue` and `out`:
    /// one accumulator per head in registers, each value row's lanes loaded once for the heads.
    /// `prefetch`: the pass also prefetches whole value rows (`valueDim` floats) `prefetchDistance` ahead.
    @inline(__always)
    static func weightedLanes<V: SIMD>(
        _: V.Type, _ p: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>),
        heads: Int, positions: Int, values: UnsafePointer<Float>,
        rowStride: Int, lastValue: UnsafePointer<Float>, valueDim: Int, into out: UnsafeMutablePointer<Float>,
        prefetch prefetching: Bool
    ) where V.Scalar == Float {
        let (p0, p1, p2, p3) = p
        var a0 = V(), a1 = V(), a2 = V(), a3 = V()
        @inline(__always) func add(_ row: UnsafePointer<Float>, _ s: Int) {
            let v = UnsafeRawPointer(row).loadUnaligned(as: V.self)
            a0 = a0.addingProduct(V(repeating: p0[s]), v)
            if heads > 1 { a1 = a1.addingProduct(V(repeating: p1[s]), v) }
            if heads > 2 { a2 = a2.addingProduct(V(repeating: p2[s]), v) }
            if heads > 3 { a3 = a3.addingProduct(V(repeating: p3[s]), v) }
        }
        var row = values
        for s in 0..<positions {
            if prefetching, s + prefetchDistance < positions {
                prefetch(row + prefetchDistance * rowStride, count: valueDim)
            }
            add(row, s)
            row += rowStride
        }
        add(lastValue, positions)
        @inline(__always) func put(_ sum: V, _ h: Int) {
            UnsafeMutableRawPointer(out + h * valueDim).storeBytes(of: sum, as: V.self)
        }
        put(a0, 0)
        if heads > 1 { put(a1, 1) }
        if heads > 2 { put(a2, 2) }
        if heads > 3 { put(a3, 3) }
    }

    /// Cached rows ahead that `decode` prefetches: a kv head's rows are `kvHeads · dim` floats apart,
    /// a stride the hardware prefetcher followed too late (the scores' first multiply-add waited on
    /// the key in 72% of the samples at 1,024 positions).
    static let prefetchDistance = 8

    /// Every 64-byte line of `count` floats at `pointer`.
    @inline(__always)
    static func prefetch(_ pointer: UnsafePointer<Float>, count: Int) {
        var offset = 0
        while offset < count {
            pmq_prefetch(pointer + offset)
            offset += 16
        }
    }
}
