import Foundation
@testable import ModelFormat
@testable import Kernels
import Testing

/// The fused packed kernels (`Kernels.linear(_:tokens:packed:bias:)`) against the scalar reference
/// (`Kernels.referenceLinear(_:tokens:packed:bias:)`), and the reference's decoding of codes, zeros
/// and scales against independently packed values.
@Suite struct PackedKernelsTests {
    /// Max |fast − reference| relative to `Σ_i |x_i|·|scale|·(q + zero)` (the sizes of the terms the
    /// per-group algebra subtracts): float rounding of sums of a few thousand terms.
    static let relativeTolerance: Float = 2e-6
    static let widths = [1, 2, 3, 4, 8]

    /// A deterministic generator (SplitMix64), so failures reproduce.
    struct Generator: RandomNumberGenerator {
        var generator: SplitMix64
        init(state: UInt64) { generator = SplitMix64(seed: state) }
        mutating func next() -> UInt64 { generator.next() }
    }

    /// Random tensors of a valid layout: any words are valid codes (and v1 zeros); fp16 scales of
    /// either sign; `g_idx` natural or a random act-order assignment of inputs to groups.
    static func randomPacked(out: Int, inputs: Int, bits: Int, groupSize: Int, actOrder: Bool = false, seed: UInt64)
        -> PackedLinear
    {
        var random = Generator(state: seed)
        let layout = PackedLayout(outFeatures: out, inFeatures: inputs, bits: bits, groupSize: groupSize)
        let wordRows = (inputs * bits + 31) / 32
        let qweight = (0..<(wordRows * out)).map { _ in UInt32.random(in: 0...UInt32.max, using: &random) }
        let zeroWords = bits == 1 ? 0 : (out * bits + 31) / 32
        let qzeros = (0..<(layout.groups * zeroWords)).map { _ in UInt32.random(in: 0...UInt32.max, using: &random) }
        let scales = (0..<(layout.groups * out)).map { _ in
            Float16(Float.random(in: 0.002...0.05, using: &random) * (Bool.random(using: &random) ? 1 : -1)).bitPattern
        }
        var gIdx = (0..<inputs).map { Int32($0 / groupSize) }
        if actOrder { gIdx.shuffle(using: &random) }
        return PackedLinear(
            outFeatures: out, inFeatures: inputs, bits: bits, groupSize: groupSize,
            qweight: qweight, qzeros: qzeros, scales: scales, gIdx: gIdx)
    }

    static func randomX(_ count: Int, seed: UInt64) -> [Float] {
        var random = Generator(state: seed)
        return (0..<count).map { _ in Float.random(in: -2...2, using: &random) }
    }

    /// `Σ_i |x[t, i]| · |scale| · (q + zero)` per `[t, o]`: the scale of the rounding errors.
    static func magnitudes(_ x: [Float], tokens: Int, packed: PackedLinear) -> [Float] {
        let out = packed.outFeatures, inputs = packed.inFeatures
        var terms = [Float](repeating: 0, count: out * inputs)
        for o in 0..<out {
            for i in 0..<inputs {
                let g = Int(packed.gIdx[i])
                terms[o * inputs + i] =
                    abs(Kernels.referenceScale(packed, group: g, output: o))
                    * (Float(Kernels.referenceCode(packed, output: o, input: i))
                        + Kernels.referenceZero(packed, group: g, output: o))
            }
        }
        var result = [Float](repeating: 0, count: tokens * out)
        for t in 0..<tokens {
            for o in 0..<out {
                var sum: Float = 0
                for i in 0..<inputs { sum += abs(x[t * inputs + i]) * terms[o * inputs + i] }
                result[t * out + o] = sum
            }
        }
        return result
    }

    static func expectClose(
        _ packed: PackedLinear, tokens: Int, seed: UInt64, bias: Bool = false,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let x = randomX(tokens * packed.inFeatures, seed: seed)
        let b: [Float]? = bias ? randomX(packed.outFeatures, seed: seed + 1) : nil
        let fast = Kernels.linear(x, tokens: tokens, packed: packed, bias: b)
        let reference = Kernels.referenceLinear(x, tokens: tokens, packed: packed, bias: b)
        let scale = magnitudes(x, tokens: tokens, packed: packed)
        var worst: Float = 0, at = 0
        for k in fast.indices {
            let error = abs(fast[k] - reference[k]) / max(scale[k], 1e-30)
            if !(error <= worst) { worst = error; at = k }
        }
        #expect(
            worst <= relativeTolerance,
            Comment(
                rawValue: "\(packed.bits) bits [\(packed.outFeatures), \(packed.inFeatures)] g\(packed.groupSize) "
                    + "\(tokens) tokens: relative error \(worst) at [\(at / packed.outFeatures), "
                    + "\(at % packed.outFeatures)] (fast \(fast[at]), reference \(reference[at]))"),
            sourceLocation: sourceLocation)
    }

    // MARK: fast kernels against the reference

    /// Shapes: (out, in, group size, act-order). Outputs not a multiple of the 16-wide tile, inputs
    /// not a multiple of the group size or of 32 (3 bits: a partial last block), groups that split
    /// a word (group size 20), act-order `g_idx`.
    static let shapes: [(Int, Int, Int, Bool)] = [
        (16, 128, 128, false), (48, 96, 32, false), (37, 200, 64, false), (33, 100, 20, false),
        (24, 320, 128, false), (40, 256, 64, true), (9, 70, 32, true), (5, 40, 128, false),
    ]

    @Test(arguments: widths)
    func fastMatchesReference(bits: Int) {
        for (index, (out, inputs, groupSize, actOrder)) in Self.shapes.enumerated() {
            let packed = Self.randomPacked(
                out: out, inputs: inputs, bits: bits, groupSize: groupSize, actOrder: actOrder,
                seed: UInt64(100 * bits + index))
            for tokens in [1, 3, 5, 17] {
                Self.expectClose(packed, tokens: tokens, seed: UInt64(1000 * tokens + index), bias: tokens == 3)
            }
        }
    }

    /// Large enough to be split across cores (decode and prefill), with a decode remainder.
    @Test(arguments: [3, 4])
    func threadedMatchesReference(bits: Int) {
        let packed = Self.randomPacked(out: 1032, inputs: 1056, bits: bits, groupSize: 32, seed: 7)
        for tokens in [1, 6] { Self.expectClose(packed, tokens: tokens, seed: UInt64(tokens)) }
    }

    @Test func naturalOrderCheck() {
        let natural = Self.randomPacked(out: 8, inputs: 100, bits: 4, groupSize: 32, seed: 1)
        #expect(Kernels.hasNaturalGroupOrder(natural))
        var permuted = natural
        permuted.gIdx.swapAt(0, 99)
        #expect(!Kernels.hasNaturalGroupOrder(permuted))
        // Stating the wrong order for a permuted g_idx is the caller's bug; stating "not natural"
        // for a natural one only costs speed.
        let x = Self.randomX(100, seed: 2)
        let general = Kernels.linear(x, tokens: 1, packed: natural, naturalOrder: false)
        let reference = Kernels.referenceLinear(x, tokens: 1, packed: natural)
        for (a, b) in zip(general, reference) { #expect(abs(a - b) <= 1e-4 * max(1, abs(b))) }
    }

    // MARK: the reference's decoding

    /// Writes `values` as one little-endian bit stream of `bits`-bit fields over 32-bit words.
    static func bitStream(_ values: [UInt32], bits: Int) -> [UInt32] {
        var words = [UInt32](repeating: 0, count: (values.count * bits + 31) / 32)
        for (k, value) in values.enumerated() {
            for b in 0..<bits where value >> UInt32(b) & 1 == 1 {
                let bit = k * bits + b
                words[bit / 32] |= 1 << UInt32(bit % 32)
            }
        }
        return words
    }

    /// Dequantized weights equal `scale · (q − zero)` from codes, zeros and scales packed here bit
    /// by bit (zeros written as v1 `zero − 1`, GPTQModel's borrowing rule for widths 2, 4, 8).
    @Test(arguments: widths)
    func referenceDecodesIndependentlyPackedValues(bits: Int) {
        var random = Generator(state: UInt64(bits))
        let out = 13, inputs = 75, groupSize = 25, groups = 3
        let maxCode = UInt32((1 << bits) - 1)
        let codes = (0..<(out * inputs)).map { _ in UInt32.random(in: 0...maxCode, using: &random) }
        // Zeros include 0 (the borrow case) and the maximum.
        let zeros = (0..<(groups * out)).map { k in
            k % 5 == 0 ? 0 : k % 7 == 0 ? maxCode : UInt32.random(in: 0...maxCode, using: &random)
        }
        let scales = (0..<(groups * out)).map { _ in Float16(Float.random(in: -0.1...0.1, using: &random)) }
        var qweight = [UInt32](repeating: 0, count: ((inputs * bits + 31) / 32) * out)
        for o in 0..<out {
            let column = Self.bitStream((0..<inputs).map { codes[o * inputs + $0] }, bits: bits)
            for (r, word) in column.enumerated() { qweight[r * out + o] = word }
        }
        var qzeros: [UInt32] = []
        if bits != 1 {
            for g in 0..<groups {
                let row = (0..<out).map { zeros[g * out + $0] }
                if bits == 3 {
                    qzeros += Self.bitStream(row.map { ($0 &+ 7) & 7 }, bits: 3)
                } else {
                    // Per word: Σ zero_k·2^(bits·k) − Σ 2^(bits·k), modulo the word's bits.
                    let perWord = 32 / bits
                    for start in stride(from: 0, to: out, by: perWord) {
                        let fields = row[start..<min(start + perWord, out)]
                        var value: UInt64 = 0, ones: UInt64 = 0
                        for (k, zero) in fields.enumerated() {
                            value += UInt64(zero) << UInt64(bits * k)
                            ones += 1 << UInt64(bits * k)
                        }
                        qzeros.append(
                            UInt32(truncatingIfNeeded: (value &- ones) & ((1 << UInt64(bits * fields.count)) - 1)))
                    }
                }
            }
        }
        let gIdx = (0..<inputs).map { Int32($0 / groupSize) }
        let packed = PackedLinear(
            outFeatures: out, inFeatures: inputs, bits: bits, groupSize: groupSize, qweight: qweight,
            qzeros: qzeros, scales: scales.map(\.bitPattern), gIdx: gIdx)
        for o in 0..<out {
            for g in 0..<groups {
                let zero = bits == 1 ? 0.5 : Float(zeros[g * out + o])
                #expect(Kernels.referenceZero(packed, group: g, output: o) == zero)
                #expect(Kernels.referenceScale(packed, group: g, output: o) == Float(scales[g * out + o]))
            }
            for i in 0..<inputs { #expect(Kernels.referenceCode(packed, output: o, input: i) == codes[o * inputs + i]) }
        }
        // The linear layer of one-hot inputs reads back single weights: `scale · (q − zero)`.
        for i in [0, 10, 21, 31, 32, 74] {
            var x = [Float](repeating: 0, count: inputs)
            x[i] = 1
            let column = Kernels.referenceLinear(x, tokens: 1, packed: packed)
            let fast = Kernels.linear(x, tokens: 1, packed: packed)
            for o in 0..<out {
                let g = i / groupSize
                let zero = bits == 1 ? 0.5 : Float(zeros[g * out + o])
                let expected = Float(scales[g * out + o]) * (Float(codes[o * inputs + i]) - zero)
                #expect(column[o] == expected)
                #expect(abs(fast[o] - expected) <= 1e-6 * max(1, abs(expected)))
            }
        }
    }

    // MARK: against QuantEngine's unpacking (PackedLinear+Codes.swift)

    /// On random words (every word is a valid code, and a valid v1 zero), the reference decodes
    /// exactly what `code(row:column:)`, `zero(group:row:)` and `scale(group:row:)` decode, and its
    /// linear layer equals `dequantized()` followed by the plain float linear layer.
    @Test(arguments: widths)
    func referenceMatchesDequantized(bits: Int) {
        for (index, (out, inputs, groupSize, actOrder)) in [(37, 200, 64, false), (24, 96, 32, true)].enumerated() {
            let packed = Self.randomPacked(
                out: out, inputs: inputs, bits: bits, groupSize: groupSize, actOrder: actOrder,
                seed: UInt64(50 + 10 * bits + index))
            var mismatches = 0
            for o in 0..<out {
                for i in 0..<inputs
                where Int(Kernels.referenceCode(packed, output: o, input: i)) != packed.code(row: o, column: i) {
                    mismatches += 1
                }
                for g in 0..<packed.groups {
                    if Kernels.referenceZero(packed, group: g, output: o) != packed.zero(group: g, row: o) {
                        mismatches += 1
                    }
                    if Kernels.referenceScale(packed, group: g, output: o) != packed.scale(group: g, row: o) {
                        mismatches += 1
                    }
                }
            }
            #expect(mismatches == 0, "\(bits) bits: \(mismatches) codes, zeros or scales decoded differently")
            let tokens = 3
            let x = Self.randomX(tokens * inputs, seed: 9)
            let viaFloats = Kernels.referenceLinear(
                x, tokens: tokens, weight: packed.dequantized(), outFeatures: out, inFeatures: inputs)
            let reference = Kernels.referenceLinear(x, tokens: tokens, packed: packed)
            // Same products in the same order: equal up to the last bit.
            #expect(reference == viaFloats)
        }
    }

    /// Codes, zeros and scales packed by `PackedLinear(packingCodes:…)` come back through the fast
    /// kernel: one-hot inputs read single weights `scale · (q − zero)`.
    @Test(arguments: widths)
    func fastKernelReadsPackedWeights(bits: Int) {
        var random = Generator(state: UInt64(70 + bits))
        let out = 40, inputs = 96, groupSize = 32, groups = 3
        let maxCode = (1 << bits) - 1
        let codes = (0..<(out * inputs)).map { _ in Int.random(in: 0...maxCode, using: &random) }
        let zeros = (0..<(groups * out)).map { k in
            bits == 1 ? 0.5 : Float(k % 3 == 0 ? 0 : Int.random(in: 0...maxCode, using: &random))
        }
        let scales = (0..<(groups * out)).map { _ in Float(Float16(Float.random(in: -0.1...0.1, using: &random))) }
        let packed = PackedLinear(
            packingCodes: codes, zeros: zeros, scales: scales, groupIndex: (0..<inputs).map { Int32($0 / groupSize) },
            outFeatures: out, inFeatures: inputs, bits: bits, groupSize: groupSize)
        let dequantized = packed.dequantized()
        for i in [0, 1, 10, 11, 21, 31, 32, 63, 95] {
            var x = [Float](repeating: 0, count: inputs)
            x[i] = 1
            let column = Kernels.linear(x, tokens: 1, packed: packed)
            for o in 0..<out {
                let g = i / groupSize
                let expected = scales[g * out + o] * (Float(codes[o * inputs + i]) - zeros[g * out + o])
                #expect(dequantized[o * inputs + i] == expected)
                #expect(
                    abs(column[o] - expected) <= 1e-6 * max(1, abs(expected)),
                    "[\(o), \(i)]: \(column[o]) vs \(expected)")
            }
        }
    }

    /// An act-order layer reordered at load runs through the decode kernel on gathered inputs and
    /// gives the original layer's outputs.
    @Test(arguments: widths)
    func groupContiguousMatchesActOrder(bits: Int) {
        let packed = Self.randomPacked(
            out: 40, inputs: 200, bits: bits, groupSize: 32, actOrder: true, seed: UInt64(90 + bits))
        guard let (reordered, order) = Kernels.groupContiguous(packed) else {
            Issue.record("act-order g_idx not reordered")
            return
        }
        #expect(Kernels.hasNaturalGroupOrder(reordered))
        #expect(Set(order) == Set(0..<200))
        for tokens in [1, 5] {
            let x = Self.randomX(tokens * 200, seed: UInt64(tokens))
            let fast = Kernels.linear(x, tokens: tokens, packed: reordered, inputOrder: order)
            let reference = Kernels.referenceLinear(x, tokens: tokens, packed: packed)
            let scale = Self.magnitudes(x, tokens: tokens, packed: packed)
            let worst = fast.indices.map { abs(fast[$0] - reference[$0]) / scale[$0] }.max()!
            #expect(worst <= Self.relativeTolerance, "\(bits) bits, \(tokens) tokens: relative error \(worst)")
        }
        // Groups of unequal sizes cannot be made natural.
        var uneven = packed
        uneven.gIdx[0] = uneven.gIdx[0] == 0 ? 1 : 0
        #expect(Kernels.groupContiguous(uneven) == nil)
    }
}
