import Foundation

extension Attention {
    /// Whole windows from position 0 (`pmq eval`, calibration): per head, the scores `Q·Kᵀ` of the
    /// lower triangle and then `P·V` as two SGEMM calls (docs/KERNELS.md), heads split across
    /// cores, instead of one short dot product per query and key. Same result as `causal`'s loop
    /// up to float summation order.
    static func prefill(
        q: UnsafeBufferPointer<Float>, keys: UnsafeBufferPointer<Float>, values: UnsafeBufferPointer<Float>,
        context: UnsafeMutableBufferPointer<Float>, count: Int, heads: Int, kvHeads: Int, dim: Int, valueDim: Int,
        scale: Float
    ) {
        let group = heads / kvHeads
        let buffers = AttentionBuffers(
            q: q.baseAddress!, keys: keys.baseAddress!, values: values.baseAddress!, context: context.baseAddress!)
        let body: @Sendable (Int) -> Void = { h in
            let kv = h / group
            let scores = UnsafeMutablePointer<Float>.allocate(capacity: count * count)
            defer { scores.deallocate() }
            scores.initialize(repeating: 0, count: count * count)
            // S = scale · Q_h · K_kvᵀ, lower triangle.
            SGEMM.multiply(
                m: count, n: count, k: dim, alpha: scale,
                a: .init(buffers.q + h * dim, rowStride: heads * dim),
                b: .init(buffers.keys + kv * dim, rowStride: 1, columnStride: kvHeads * dim),
                c: scores, ldc: count, lowerOnly: true, threaded: false)
            for t in 0..<count {
                let row = scores + t * count
                var peak = -Float.infinity
                for s in 0...t { peak = max(peak, row[s]) }
                let inverse = 1 / exponentiate(row, count: t + 1, peak: peak)
                for s in 0...t { row[s] *= inverse }
                for s in (t + 1)..<count { row[s] = 0 }
            }
            // context_h = P · V_kv.
            SGEMM.multiply(
                m: count, n: valueDim, k: count,
                a: .init(UnsafePointer(scores), rowStride: count),
                b: .init(buffers.values + kv * valueDim, rowStride: kvHeads * valueDim),
                c: buffers.context + h * valueDim, ldc: heads * valueDim, threaded: false)
        }
        Parallel.perform(iterations: heads, work: count * count * dim * heads, body)
    }
}
