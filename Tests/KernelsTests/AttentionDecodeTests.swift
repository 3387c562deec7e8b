import Foundation
@testable import ModelFormat
@testable import Kernels
import Testing

/// The grouped decode attention (`Attention.decode`: the query heads of a kv head together, four
/// scores at a time, the context in registers) against the same arithmetic one query head at a time
/// (`Kernels.dot` per position, the softmax, `Kernels.addScaled` per position): equal bit for bit.
/// `AttentionTests` checks both against the scalar reference.
@Suite struct AttentionDecodeTests {
    /// The per-head loop the grouped kernel replaced, written with the public primitives.
    static func perHead(
        q: [Float], keys: [Float], values: [Float], count: Int, position: Int, heads: Int, kvHeads: Int, dim: Int,
        own: (keys: [Float], values: [Float])?
    ) -> [Float] {
        let group = heads / kvHeads, scale = 1 / Float(dim).squareRoot()
        var context = [Float](repeating: 0, count: count * heads * dim)
        for h in 0..<heads {
            let kv = h / group
            for t in 0..<count {
                let last = position + t
                func row(_ cache: [Float], _ ownRows: [Float]?, _ s: Int) -> [Float] {
                    if s == last, let ownRows { return Array(ownRows[((t * kvHeads + kv) * dim)...].prefix(dim)) }
                    return Array(cache[((s * kvHeads + kv) * dim)...].prefix(dim))
                }
                let query = Array(q[((t * heads + h) * dim)...].prefix(dim))
                var scores = (0...last).map { s in Kernels.dot(query, row(keys, own?.keys, s), dim) * scale }
                let peak = scores.max()!
                let total = scores.withUnsafeMutableBufferPointer {
                    Attention.exponentiate($0.baseAddress!, count: last + 1, peak: peak)
                }
                var out = [Float](repeating: 0, count: dim)
                for s in 0...last { Kernels.addScaled(&out, row(values, own?.values, s), scores[s] / total, dim) }
                context.replaceSubrange(((t * heads + h) * dim)..<((t * heads + h + 1) * dim), with: out)
            }
        }
        return context
    }

    /// Groups of 1–16 query heads (blocks of four, with and without a remainder), dimensions with
    /// 32-wide, 8-wide and scalar parts, cached and own rows, positions past the prefetch distance.
    @Test(arguments: [
        (1, 0, 4, 2, 8), (3, 5, 4, 4, 12), (1, 300, 16, 4, 64), (2, 40, 6, 3, 20), (1, 77, 16, 1, 64),
        (4, 100, 12, 1, 36), (1, 513, 32, 8, 128), (2, 9, 5, 5, 7), (1, 50, 8, 2, 44), (3, 20, 16, 2, 100),
        (1, 30, 20, 2, 24),
    ])
    func groupedEqualsPerHead(count: Int, position: Int, heads: Int, kvHeads: Int, dim: Int) {
        let (q, keys, values, ownKeys, ownValues) = AttentionTests.inputs(
            count: count, position: position, heads: heads, kvHeads: kvHeads, dim: dim,
            seed: UInt64(count * 131 + position))
        for own in [nil, (ownKeys, ownValues)] as [([Float], [Float])?] {
            let grouped = Attention.causal(
                q: q, keys: keys, values: values, count: count, position: position, heads: heads, kvHeads: kvHeads,
                dim: dim, own: own)
            let alone = Self.perHead(
                q: q, keys: keys, values: values, count: count, position: position, heads: heads, kvHeads: kvHeads,
                dim: dim, own: own)
            #expect(grouped == alone, "own rows: \(own != nil)")
        }
    }

    /// Every query head is in exactly one part, and a kv head's group is cut only to give each core
    /// two parts.
    @Test(arguments: [(16, 4), (16, 1), (32, 8), (6, 3), (5, 5), (20, 2), (64, 1)])
    func partsCoverEveryHeadOnce(heads: Int, kvHeads: Int) {
        let (blocks, size) = Attention.decodeBlocks(heads: heads, kvHeads: kvHeads)
        let group = heads / kvHeads
        #expect(blocks * size >= group && (blocks - 1) * size < group)
        #expect(blocks == 1 || kvHeads * (blocks - 1) < 2 * Parallel.cores)
    }
}
