@testable import Kernels
import Testing

/// The int8-activation decode kernel (`PackedKernel.Int8Decode`) against the scalar reference
/// (`Kernels.referenceLinear(_:tokens:packed:bias:)`). Its only approximation is x → x̂ = d_g·round(x/d_g)
/// (`d_g = max_{i∈g}|x_i|/127`, `|x − x̂| ≤ d_g/2`); the integer sums are exact, so
/// `|fast − reference| ≤ Σ_i (d_g/2)·|ŵ_i|` plus float rounding (the float kernels' tolerance).
@Suite struct PackedInt8Tests {
    /// Natural-order shapes the decode kernels take (out ≥ 16, groups of whole words): a partial
    /// last tile, a partial last group, groups of 32 and 128, and one large enough to be split
    /// across cores.
    static let shapes: [(Int, Int, Int)] = [
        (16, 128, 128), (48, 96, 32), (37, 200, 64), (24, 320, 128), (1032, 1056, 32),
    ]

    @Test(arguments: [1, 2, 4])
    func int8DecodeWithinQuantizationBound(bits: Int) {
        for (index, (out, inputs, groupSize)) in Self.shapes.enumerated() {
            let packed = PackedKernelsTests.randomPacked(
                out: out, inputs: inputs, bits: bits, groupSize: groupSize,
                seed: UInt64(500 * bits + index))
            let weights = packed.dequantized()
            for tokens in [1, 3] {
                var x = PackedKernelsTests.randomX(tokens * inputs, seed: UInt64(77 * tokens + index))
                if index == 1 { for i in 0..<min(32, inputs) { x[i] = 0 } } // an all-zero group
                let fast = Kernels.linear(x, tokens: tokens, packed: packed, int8Activations: true)
                let exact = Kernels.linear(x, tokens: tokens, packed: packed, int8Activations: false)
                let reference = Kernels.referenceLinear(x, tokens: tokens, packed: packed)
                let magnitude = PackedKernelsTests.magnitudes(x, tokens: tokens, packed: packed)
                var worst: Float = 0, differs = false
                for t in 0..<tokens {
                    for o in 0..<out {
                        var bound: Float = 0
                        for g in stride(from: 0, to: inputs, by: groupSize) {
                            var peak: Float = 0
                            for i in g..<min(g + groupSize, inputs) { peak = max(peak, abs(x[t * inputs + i])) }
                            var row: Float = 0
                            for i in g..<min(g + groupSize, inputs) { row += abs(weights[o * inputs + i]) }
                            bound += peak / 254 * row
                        }
                        let k = t * out + o
                        let allowed = 1.001 * bound + PackedKernelsTests.relativeTolerance * magnitude[k]
                        worst = max(worst, abs(fast[k] - reference[k]) / allowed)
                        differs = differs || fast[k] != exact[k]
                    }
                }
                #expect(
                    worst <= 1,
                    "\(bits) bits [\(out), \(inputs)] g\(groupSize), \(tokens) tokens: error \(worst) of the bound")
                #expect(differs, "the int8 kernel did not run")
            }
        }
    }

    /// Widths without an int8 kernel (3, 8) and prefill keep the float kernels, bit for bit.
    @Test func otherWidthsAndPrefillUnchanged() {
        for bits in [3, 4, 8] {
            let packed = PackedKernelsTests.randomPacked(
                out: 48, inputs: 256, bits: bits, groupSize: 64, seed: UInt64(bits))
            for tokens in bits == 4 ? [5] : [1, 5] {
                let x = PackedKernelsTests.randomX(tokens * 256, seed: 3)
                #expect(
                    Kernels.linear(x, tokens: tokens, packed: packed, int8Activations: true)
                        == Kernels.linear(x, tokens: tokens, packed: packed, int8Activations: false))
            }
        }
    }
}
