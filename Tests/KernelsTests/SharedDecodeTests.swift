@testable import Kernels
import Testing

/// `Kernels.linears` (several matrices over one `x`, one int8 quantization and one parallel region
/// in a decode step) against `Kernels.linear` on each matrix: equal bit for bit, since the shared
/// step cuts every matrix into the same parts and sums them in the same order. `linear` itself is
/// tested against the scalar reference (`PackedInt8Tests`, `PackedKernelsTests`).
@Suite struct SharedDecodeTests {
    static func matrix(out: Int, inputs: Int, bits: Int, groupSize: Int = 32, seed: UInt64) -> Matrix {
        let packed = PackedKernelsTests.randomPacked(
            out: out, inputs: inputs, bits: bits, groupSize: groupSize, seed: seed)
        return Matrix(rows: out, columns: inputs, storage: .packed(PackedWeights(packed)))
    }

    /// One matrix large enough to be split across cores, one small (a single part, straight into
    /// its output), one with a partial last tile; with and without biases; 1–3 tokens (decode,
    /// shared) and 5 (prefill, one by one).
    @Test(arguments: [1, 2, 3, 4, 8], [false, true])
    func sharedEqualsOneByOne(bits: Int, avx2: Bool) {
        let inputs = 1056
        let matrices = [
            Self.matrix(out: 1032, inputs: inputs, bits: bits, seed: UInt64(bits)),
            Self.matrix(out: 32, inputs: inputs, bits: bits, seed: UInt64(10 + bits)),
            Self.matrix(out: 37, inputs: inputs, bits: bits, seed: UInt64(20 + bits)),
        ]
        let biases: [[Float]?] = [
            nil, PackedKernelsTests.randomX(32, seed: 5), PackedKernelsTests.randomX(37, seed: 6),
        ]
        CPUFeatures.$forceAVX2.withValue(avx2) {
            Kernels.$int8Activations.withValue(true) {
                #expect(Kernels.sharedDecodeLinears(matrices, tokens: 1)?.count == 3, "the shared step must apply")
                for tokens in [1, 2, 3, 5] {
                    let x = PackedKernelsTests.randomX(tokens * inputs, seed: UInt64(tokens))
                    let shared = Kernels.linears(x, tokens: tokens, matrices: matrices, biases: biases)
                    let alone = zip(matrices, biases).map { Kernels.linear(x, tokens: tokens, matrix: $0, bias: $1) }
                    #expect(shared == alone, "\(bits) bits, \(tokens) tokens")
                    let serial = Parallel.$serial.withValue(true) {
                        Kernels.linears(x, tokens: tokens, matrices: matrices, biases: biases)
                    }
                    #expect(serial == alone, "\(bits) bits, \(tokens) tokens, one thread")
                }
            }
        }
    }

    /// Matrices of two widths and two group sizes, over two inputs (one of them shared), share a
    /// step; a float matrix or float activations make the calls go one by one. The same results.
    @Test(arguments: [false, true])
    func mixedCalls(avx2: Bool) {
        let inputs = 256
        let four = Self.matrix(out: 48, inputs: inputs, bits: 4, seed: 1)
        let two = Self.matrix(out: 1024, inputs: inputs, bits: 2, seed: 2)
        let wide = Self.matrix(out: 40, inputs: inputs, bits: 4, groupSize: 64, seed: 3)
        let narrow = Self.matrix(out: 4096, inputs: 512, bits: 3, groupSize: 64, seed: 7)
        let float = Matrix(rows: 16, columns: inputs, floats: PackedKernelsTests.randomX(16 * inputs, seed: 4))
        let x = PackedKernelsTests.randomX(inputs, seed: 9), other = PackedKernelsTests.randomX(512, seed: 10)
        CPUFeatures.$forceAVX2.withValue(avx2) {
            Kernels.$int8Activations.withValue(true) {
                let matrices = [four, two, narrow, wide]
                #expect(Kernels.sharedDecodeLinears(matrices, tokens: 1)?.count == 4)
                let shared = Kernels.linears([x, x, other, x], tokens: 1, matrices: matrices)
                let alone = zip([x, x, other, x], matrices).map { Kernels.linear($0, tokens: 1, matrix: $1) }
                #expect(shared == alone)
                #expect(Kernels.sharedDecodeLinears([four, float], tokens: 1) == nil)
                #expect(
                    Kernels.linears(x, tokens: 1, matrices: [four, float])
                        == [four, float].map { Kernels.linear(x, tokens: 1, matrix: $0) })
            }
        }
        let matrices = [four, two]
        Kernels.$int8Activations.withValue(false) {
            #expect(Kernels.sharedDecodeLinears(matrices, tokens: 1) == nil)
            #expect(
                Kernels.linears(x, tokens: 1, matrices: matrices)
                    == matrices.map { Kernels.linear(x, tokens: 1, matrix: $0) })
        }
    }

    /// `swiglus` of two experts equals `swiglu` of each, outputs and activations.
    @Test func expertsTogetherEqualAlone() {
        let inputs = 512, width = 1024
        var experts: [(gate: Matrix, up: Matrix, down: Matrix)] = []
        for e in 0..<2 {
            let seed = UInt64(30 + 10 * e)
            let gate = Self.matrix(out: width, inputs: inputs, bits: 4, seed: seed)
            let up = Self.matrix(out: width, inputs: inputs, bits: 4, seed: seed + 1)
            let down = Self.matrix(out: inputs, inputs: width, bits: 4, seed: seed + 2)
            experts.append((gate, up, down))
        }
        let x = PackedKernelsTests.randomX(inputs, seed: 11)
        Kernels.$int8Activations.withValue(true) {
            let together = Kernels.swiglus(x, tokens: 1, experts: experts)
            for (e, expert) in experts.enumerated() {
                var seen: [Float] = []
                let alone = Kernels.swiglu(x, tokens: 1, gate: expert.gate, up: expert.up, down: expert.down) {
                    seen = $0
                }
                #expect(together[e].output == alone && together[e].activations == seen, "expert \(e)")
            }
        }
    }
}
