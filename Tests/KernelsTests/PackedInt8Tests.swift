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

    /// Whether a call has an int8 kernel on this machine: decode (1–3 tokens) and prefill at 1, 2,
    /// 3 (whole 32-code blocks), 4 and 8 bits.
    static func hasInt8Kernel(bits: Int, inputs: Int, tokens: Int = 1) -> Bool {
        if bits == 3 { return inputs % 32 == 0 }
        return [1, 2, 4, 8].contains(bits)
    }

    /// The kernels this CPU takes, then the AVX2 ones (forced; the same where the CPU has no AVX-512).
    @Test(arguments: [1, 2, 3, 4, 8], [false, true])
    func int8DecodeWithinQuantizationBound(bits: Int, avx2: Bool) {
        CPUFeatures.$forceAVX2.withValue(avx2) { checkInt8WithinQuantizationBound(bits: bits) }
    }

    func checkInt8WithinQuantizationBound(bits: Int) {
        for (index, (out, inputs, groupSize)) in Self.shapes.enumerated() {
            if bits == 3 && groupSize % 32 != 0 { continue }
            let packed = PackedKernelsTests.randomPacked(
                out: out, inputs: inputs, bits: bits, groupSize: groupSize,
                seed: UInt64(500 * bits + index))
            let weights = packed.dequantized()
            for tokens in [1, 3, 6, 29] { // 29: blocks of 16, 8 and 4 tokens and one left over
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
                if Self.hasInt8Kernel(bits: bits, inputs: inputs, tokens: tokens) {
                    #expect(differs, "the int8 kernel did not run")
                } else {
                    #expect(fast == exact, "\(bits) bits [\(out), \(inputs)]: no int8 kernel, yet the result changed")
                }
            }
        }
    }

    /// Calls without an int8 kernel (3 bits with a partial block) keep the float kernels, bit for bit.
    @Test(arguments: [false, true])
    func callsWithoutInt8KernelUnchanged(avx2: Bool) {
        CPUFeatures.$forceAVX2.withValue(avx2) { checkCallsWithoutInt8KernelUnchanged() }
    }

    func checkCallsWithoutInt8KernelUnchanged() {
        for (bits, inputs) in [(1, 256), (2, 256), (3, 256), (3, 240), (4, 256), (8, 256)] {
            let packed = PackedKernelsTests.randomPacked(
                out: 48, inputs: inputs, bits: bits, groupSize: 32, seed: UInt64(bits))
            for tokens in [1, 5] where !Self.hasInt8Kernel(bits: bits, inputs: inputs, tokens: tokens) {
                let x = PackedKernelsTests.randomX(tokens * inputs, seed: 3)
                #expect(
                    Kernels.linear(x, tokens: tokens, packed: packed, int8Activations: true)
                        == Kernels.linear(x, tokens: tokens, packed: packed, int8Activations: false))
            }
        }
    }

    /// The VNNI kernel's integer sums are the AVX2 kernel's, added in the same sweeps: the same
    /// floats at 1, 2 and 4 bits, on every shape (only where the CPU has VNNI; skipped elsewhere).
    @Test(
        .enabled(if: CPUFeatures.vnni, "this CPU has no AVX-512 VNNI + VBMI; nothing to compare"),
        arguments: [1, 2, 4])
    func vnniEqualsAVX2BitForBit(bits: Int) throws {
        for (index, (out, inputs, groupSize)) in Self.shapes.enumerated() {
            let packed = PackedKernelsTests.randomPacked(
                out: out, inputs: inputs, bits: bits, groupSize: groupSize, seed: UInt64(900 * bits + index))
            let x = PackedKernelsTests.randomX(inputs, seed: UInt64(index))
            let vnni = Kernels.linear(x, tokens: 1, packed: packed, int8Activations: true)
            let avx2 = CPUFeatures.$forceAVX2.withValue(true) {
                Kernels.linear(x, tokens: 1, packed: packed, int8Activations: true)
            }
            #expect(vnni == avx2, "\(bits) bits [\(out), \(inputs)] g\(groupSize)")
        }
    }

    /// `CPUFeatures.hasVNNI` needs the AVX-512 base subsets, VNNI and VBMI.
    @Test func vnniNeedsEveryFlag() {
        let base = "flags\t\t: fpu avx2 avx512f avx512cd avx512bw avx512dq avx512vl"
        #expect(CPUFeatures.hasVNNI(cpuinfo: base + " avx512_vnni avx512vbmi\n"))
        #expect(!CPUFeatures.hasVNNI(cpuinfo: base + " avx512_vnni\n"))
        #expect(!CPUFeatures.hasVNNI(cpuinfo: base + " avx512vbmi\n"))
        #expect(!CPUFeatures.hasVNNI(cpuinfo: "flags\t\t: fpu avx2 avx512_vnni avx512vbmi\n"))
    }
}
