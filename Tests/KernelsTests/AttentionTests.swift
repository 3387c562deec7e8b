import Foundation
@testable import ModelFormat
@testable import Kernels
import Testing

/// The SIMD, head-parallel attention against the scalar reference loop.
@Suite struct AttentionTests {
    @Test(arguments: [(1, 0, 4, 2, 8), (3, 5, 4, 4, 12), (17, 0, 8, 2, 64), (2, 40, 6, 3, 20), (64, 64, 8, 2, 64)])
    func fastMatchesReference(count: Int, position: Int, heads: Int, kvHeads: Int, dim: Int) {
        var generator = SplitMix64(seed: UInt64(count * 131 + position))
        let q = (0..<(count * heads * dim)).map { _ in Float(generator.gaussian()) }
        let cached = (position + count) * kvHeads * dim
        let keys = (0..<cached).map { _ in Float(generator.gaussian()) }
        let values = (0..<cached).map { _ in Float(generator.gaussian()) }
        let fast = Attention.causal(
            q: q, keys: keys, values: values, count: count, position: position, heads: heads, kvHeads: kvHeads, dim: dim
        )
        let reference = Attention.reference(
            q: q, keys: keys, values: values, count: count, position: position, heads: heads, kvHeads: kvHeads, dim: dim
        )
        let worst = zip(fast, reference).map { abs($0 - $1) }.max()!
        #expect(worst <= 1e-5, "max |Δ| = \(worst)")
    }

    /// Whole windows from position 0 take the two-GEMM prefill; MLA's value width differs from the key's.
    @Test(arguments: [(32, 4, 2, 40, 40), (300, 4, 2, 40, 40), (97, 6, 3, 20, 12), (64, 16, 16, 24, 16)])
    func prefillMatchesReference(count: Int, heads: Int, kvHeads: Int, dim: Int, valueDim: Int) {
        #expect(count >= Attention.prefillMinimum)
        var generator = SplitMix64(seed: UInt64(count * 7 + dim))
        let q = (0..<(count * heads * dim)).map { _ in Float(generator.gaussian()) }
        let keys = (0..<(count * kvHeads * dim)).map { _ in Float(generator.gaussian()) }
        let values = (0..<(count * kvHeads * valueDim)).map { _ in Float(generator.gaussian()) }
        let fast = Attention.causal(
            q: q, keys: keys, values: values, count: count, position: 0, heads: heads, kvHeads: kvHeads, dim: dim,
            valueDim: valueDim, scale: 0.3)
        let reference = Attention.reference(
            q: q, keys: keys, values: values, count: count, position: 0, heads: heads, kvHeads: kvHeads, dim: dim,
            valueDim: valueDim, scale: 0.3)
        let worst = zip(fast, reference).map { abs($0 - $1) }.max()!
        #expect(worst <= 1e-5, "max |Δ| = \(worst)")
    }

    /// Gaussian queries `[count, heads · dim]`, a cache of keys and values `[position + count, kvHeads ·
    /// dim]` and own rows `[count, kvHeads · dim]`, drawn in that order from `seed`.
    static func inputs(count: Int, position: Int, heads: Int, kvHeads: Int, dim: Int, seed: UInt64) -> (
        q: [Float], keys: [Float], values: [Float], ownKeys: [Float], ownValues: [Float]
    ) {
        var generator = SplitMix64(seed: seed)
        func draw(_ n: Int) -> [Float] { (0..<n).map { _ in Float(generator.gaussian()) } }
        let q = draw(count * heads * dim), cached = (position + count) * kvHeads * dim
        let keys = draw(cached), values = draw(cached)
        return (q, keys, values, draw(count * kvHeads * dim), draw(count * kvHeads * dim))
    }

    /// With `own` rows, each query's own position reads them instead of the cache; positions
    /// before it still read the cache.
    @Test(arguments: [(1, 0, 4, 2, 8), (5, 3, 4, 4, 12), (33, 0, 8, 2, 64)])
    func ownRowsReplaceTheQuerysOwnPosition(count: Int, position: Int, heads: Int, kvHeads: Int, dim: Int) {
        let (q, keys, values, ownKeys, ownValues) = Self.inputs(
            count: count, position: position, heads: heads, kvHeads: kvHeads, dim: dim,
            seed: UInt64(count * 17 + position))
        let fast = Attention.causal(
            q: q, keys: keys, values: values, count: count, position: position, heads: heads,
            kvHeads: kvHeads, dim: dim, own: (ownKeys, ownValues))
        let row = kvHeads * dim, rowQ = heads * dim
        for t in 0..<count {
            // Query t alone, over the cache up to its position with its own row last.
            var k = Array(keys[0..<((position + t) * row)]), v = Array(values[0..<((position + t) * row)])
            k += ownKeys[(t * row)..<((t + 1) * row)]
            v += ownValues[(t * row)..<((t + 1) * row)]
            let expected = Attention.reference(
                q: Array(q[(t * rowQ)..<((t + 1) * rowQ)]), keys: k, values: v, count: 1,
                position: position + t, heads: heads, kvHeads: kvHeads, dim: dim)
            let worst = zip(expected, fast[(t * rowQ)..<((t + 1) * rowQ)]).map { abs($0 - $1) }.max()!
            #expect(worst <= 1e-5, "query \(t): max |Δ| = \(worst)")
        }
        let reference = Attention.reference(
            q: q, keys: keys, values: values, count: count, position: position, heads: heads,
            kvHeads: kvHeads, dim: dim, own: (ownKeys, ownValues))
        #expect(zip(fast, reference).map { abs($0 - $1) }.max()! <= 1e-5)
    }
}
