import Foundation
import ModelFormat

/// Rotary position embedding. Pairs are `(i, i + d/2)` (HF's `rotate_half`) or, `interleaved`,
/// adjacent `(2i, 2i + 1)` (DeepSeek-V2's complex rotation, V3's `rope_interleave`: V3 writes
/// the rotated pairs de-interleaved, a permutation applied to queries and keys alike, which no
/// attention score can see). Frequencies and the attention factor come from `RopeParameters`
/// (YaRN included); cos and sin are multiplied by the attention factor, as transformers does.
enum Rope {
    /// Rotates, in each of the `heads` rows of width `stride` per token of `x`, the `dim` values
    /// starting at `start` of the row, for tokens at positions `offset…`.
    static func apply(
        _ x: inout [Float], count: Int, heads: Int, stride: Int, start: Int = 0, dim: Int,
        rope: RopeParameters, offset: Int = 0, interleaved: Bool = false
    ) {
        let half = dim / 2
        let frequencies = rope.inverseFrequencies(dim: dim)
        let factor = rope.attentionFactor
        for t in 0..<count {
            let position = Double(t + offset)
            for i in 0..<half {
                let angle = position * frequencies[i]
                let c = Float(cos(angle) * factor), s = Float(sin(angle) * factor)
                let (first, second) = interleaved ? (2 * i, 2 * i + 1) : (i, i + half)
                for h in 0..<heads {
                    let base = (t * heads + h) * stride + start
                    let a = x[base + first], b = x[base + second]
                    x[base + first] = a * c - b * s
                    x[base + second] = b * c + a * s
                }
            }
        }
    }
}
