import Foundation
import ModelFormat
import Testing
@testable import MoERuntime

/// The SIMD, head-parallel attention against the scalar reference loop.
@Suite struct AttentionTests {
    @Test(arguments: [(1, 0, 4, 2, 8), (3, 5, 4, 4, 12), (17, 0, 8, 2, 64), (2, 40, 6, 3, 20), (64, 64, 8, 2, 64)])
    func fastMatchesReference(count: Int, position: Int, heads: Int, kvHeads: Int, dim: Int) {
        var generator = SplitMix64(seed: UInt64(count * 131 + position))
        let q = (0..<(count * heads * dim)).map { _ in Float(generator.gaussian()) }
        let cached = (position + count) * kvHeads * dim
        let keys = (0..<cached).map { _ in Float(generator.gaussian()) }
        let values = (0..<cached).map { _ in Float(generator.gaussian()) }
        let fast = FloatForward.attention(q: q, keys: keys, values: values, count: count, position: position, heads: heads, kvHeads: kvHeads, dim: dim)
        let reference = FloatForward.referenceAttention(q: q, keys: keys, values: values, count: count, position: position, heads: heads, kvHeads: kvHeads, dim: dim)
        let worst = zip(fast, reference).map { abs($0 - $1) }.max()!
        #expect(worst <= 1e-5, "max |Δ| = \(worst)")
    }
}
