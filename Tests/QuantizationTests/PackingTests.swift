import Foundation
@testable import ModelFormat
@testable import Quantization
import TestSupport
import Testing

/// Bit packing of GPTQ tensors (docs/PACKED_FORMAT.md): hand-checked words, round trips through
/// GPTQ, and byte equality with the Python reference packer (tools/fixtures/make_packed_fixtures.py).
@Suite struct PackingTests {
    static func pack(
        codes: [Int], zeros: [Float], scales: [Float]? = nil, out: Int, inputs: Int, bits: Int, groupSize: Int,
        gIdx: [Int32]? = nil
    ) -> PackedLinear {
        let groups = (inputs + groupSize - 1) / groupSize
        return PackedLinear(
            packingCodes: codes, zeros: zeros, scales: scales ?? [Float](repeating: 1, count: groups * out),
            groupIndex: gIdx ?? (0..<inputs).map { Int32($0 / groupSize) },
            outFeatures: out, inFeatures: inputs, bits: bits, groupSize: groupSize)
    }

    @Test func fourBitWordsHoldEightValuesFirstInLowestBits() throws {
        let out = 2, inputs = 8
        let codes = (0..<(out * inputs)).map { $0 % 16 } // row 0: 0…7, row 1: 8…15
        let packed = Self.pack(codes: codes, zeros: [3, 5], out: out, inputs: inputs, bits: 4, groupSize: 8)
        #expect(packed.qweight == [0x7654_3210, 0xFEDC_BA98])
        // Zeros 3 and 5 stored as 2 and 4 in one word, first in the lowest bits.
        #expect(packed.qzeros == [0x42])
        try packed.validate()
        #expect(packed.unpackedCodes() == codes)
        #expect(packed.unpackedZeros() == [3, 5])
    }

    @Test func threeBitValuesTenAndTwentyOneStraddleWords() {
        let inputs = 32
        var codes = [Int](repeating: 0, count: inputs)
        codes[10] = 0b101
        codes[21] = 0b011
        codes[31] = 0b111
        let packed = Self.pack(codes: codes, zeros: [1], out: 1, inputs: inputs, bits: 3, groupSize: 32)
        // Value 10: low two bits at 30–31 of word 0, high bit at bit 0 of word 1.
        // Value 21: low bit at 31 of word 1, high two bits at 0–1 of word 2. Value 31 at 29–31 of word 2.
        #expect(packed.qweight == [0x4000_0000, 0x8000_0001, 0xE000_0001])
        #expect(packed.unpackedCodes() == codes)
    }

    /// A zero of 0 at widths 2/4/8 borrows from the next value of the word (GPTQModel's word-wise
    /// v2 → v1 subtraction); reading adds the constant back, so every zero survives.
    @Test func zeroOfZeroBorrowsWithinTheWord() {
        let zeros: [Float] = [0, 5, 0, 0, 15, 1, 0, 2]
        let packed = Self.pack(
            codes: [Int](repeating: 0, count: 8), zeros: zeros, out: 8, inputs: 1, bits: 4, groupSize: 1)
        let v2 = zeros.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << UInt32(4 * $1.offset) }
        #expect(packed.qzeros == [v2 &- 0x1111_1111])
        #expect(packed.unpackedZeros() == zeros)
        // Width 3 stores (zero − 1) mod 8 per value: no borrow.
        let three = Self.pack(
            codes: [Int](repeating: 0, count: 8), zeros: [0, 7, 1, 0, 0, 0, 0, 3], out: 8, inputs: 1, bits: 3,
            groupSize: 1)
        #expect(three.qzeros == [0o2777_7067])
        #expect(three.unpackedZeros() == [0, 7, 1, 0, 0, 0, 0, 3])
    }

    @Test func partialWordsKeepPaddingBitsZero() {
        // 5 zeros at 4 bits: one word of 20 bits; a zero of 0 in the last value borrows nothing beyond them.
        let zeros: [Float] = [2, 2, 2, 2, 0]
        let packed = Self.pack(
            codes: [Int](repeating: 1, count: 5 * 3), zeros: zeros, out: 5, inputs: 3, bits: 4, groupSize: 3)
        #expect(packed.qzeros == [0xF_1111])
        #expect(packed.qweight == [0x111, 0x111, 0x111, 0x111, 0x111])
        #expect(packed.unpackedZeros() == zeros)
    }

    @Test func oneBitHasNoZerosAndDequantizesToPlusMinusHalfScale() throws {
        let codes = [1, 0, 0, 1, 1, 1, 0, 0]
        let packed = Self.pack(
            codes: codes, zeros: [0.5, 0.5], scales: [0.5, 0.25], out: 1, inputs: 8, bits: 1, groupSize: 4)
        #expect(packed.qzeros.isEmpty)
        #expect(packed.qweight == [0b0011_1001])
        try packed.validate()
        #expect(packed.dequantized() == [0.25, -0.25, -0.25, 0.25, 0.125, 0.125, -0.125, -0.125])
    }

    @Test func validateNamesTheInconsistentTensor() {
        var packed = Self.pack(
            codes: [Int](repeating: 0, count: 64), zeros: [1, 1], out: 2, inputs: 32, bits: 4, groupSize: 32)
        packed.qweight.removeLast()
        #expect(throws: PackedFormatError.self) { try packed.validate() }
        do { try packed.validate() } catch let error as PackedFormatError { #expect(error.tensor == "qweight") } catch {
        }
        var bad = Self.pack(
            codes: [Int](repeating: 0, count: 64), zeros: [1, 1], out: 2, inputs: 32, bits: 4, groupSize: 32)
        bad.gIdx[3] = 1
        do { try bad.validate(); Issue.record("accepted g_idx 1 with one group") } catch let error as PackedFormatError
        {
            #expect(error.tensor == "g_idx")
        } catch {}
    }

    @Test func halfFloatRoundsToNearestEven() {
        #expect(Float(1).float16Bits == 0x3C00)
        #expect(Float(-2).float16Bits == 0xC000)
        #expect(Float(65504).float16Bits == 0x7BFF)
        #expect(Float(1e6).float16Bits == 0x7C00)
        #expect(Float(bitPattern: 0x3F80_1000).float16Bits == 0x3C00) // halfway, even stays
        #expect(Float(bitPattern: 0x3F80_3000).float16Bits == 0x3C02) // halfway, odd rounds up
        #expect(Float(5.960_464_5e-8).float16Bits == 0x0001) // smallest subnormal
        #expect(Float(2.9e-8).float16Bits == 0x0000)
        for bits in stride(from: UInt16(0), to: 0x7C00, by: 7) {
            #expect(Float(float16Bits: bits).float16Bits == bits)
        }
    }

    /// Tolerance of the GPTQ round trip: the packed scale is GPTQ's Float scale rounded to fp16, off
    /// by at most half an fp16 step (2⁻¹¹ relative for normal values, 2⁻²⁵ absolute below 2⁻¹⁴), so
    /// each weight may move by that times `|q − zero|`, plus one Float rounding of the product.
    static func scaleRoundingBound(scale: Float, code: Int, zero: Float) -> Float {
        let halfStep = max(abs(scale) * 0x1p-11, 0x1p-25)
        return halfStep * abs(Float(code) - zero) + abs(scale * (Float(code) - zero)) * 0x1p-23
            + Float.leastNonzeroMagnitude
    }

    @Test(arguments: [(1, false), (2, false), (3, true), (4, false), (4, true), (8, false)])
    func gptqResultRoundTripsThroughPacking(bits: Int, actOrder: Bool) throws {
        let rows = 12, columns = 40, groupSize = 16
        var generator = TestGenerator(state: UInt64(bits * 31 + (actOrder ? 7 : 0)))
        let weight = (0..<(rows * columns)).map { _ in generator.float() * 0.05 }
        var inputs = [Float](repeating: 0, count: 64 * columns)
        for index in inputs.indices { inputs[index] = generator.float() * Float(1 + index % columns % 5) }
        var hessian = [Double](repeating: 0, count: columns * columns)
        for t in 0..<64 {
            for a in 0..<columns {
                for b in 0..<columns {
                    hessian[a * columns + b] += Double(inputs[t * columns + a] * inputs[t * columns + b])
                }
            }
        }
        let gptq = GPTQ(options: .init(groupSize: groupSize, blockSize: 16, actOrder: actOrder))
        let result = try gptq.quantize(weight: weight, rows: rows, columns: columns, hessian: hessian, bits: bits)
        let packed = PackedLinear(packing: result, rows: rows, columns: columns, bits: bits, groupSize: groupSize)
        try packed.validate()
        #expect(packed.unpackedCodes() == result.codes.map { Int($0) })
        #expect(packed.gIdx.map(Int.init) == result.groupIndex)
        let groups = packed.groups
        for r in 0..<rows {
            for g in 0..<groups {
                #expect(packed.zero(group: g, row: r) == result.zeros[r * groups + g])
                #expect(packed.scale(group: g, row: r) == Float(float16Bits: result.scales[r * groups + g].float16Bits))
            }
        }
        let dequantized = packed.dequantized()
        for r in 0..<rows {
            for c in 0..<columns {
                let g = result.groupIndex[c]
                let bound = Self.scaleRoundingBound(
                    scale: result.scales[r * groups + g], code: Int(result.codes[r * columns + c]),
                    zero: result.zeros[r * groups + g])
                #expect(abs(dequantized[r * columns + c] - result.dequantized[r * columns + c]) <= bound)
            }
        }
    }

    // MARK: fixtures from tools/fixtures/make_packed_fixtures.py

    struct FixtureCase: Decodable, CustomTestStringConvertible, Sendable {
        var name: String
        var bits: Int
        var outFeatures: Int
        var inFeatures: Int
        var groupSize: Int
        var testDescription: String { name }

        enum CodingKeys: String, CodingKey {
            case name, bits
            case outFeatures = "out_features", inFeatures = "in_features", groupSize = "group_size"
        }
    }

    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/packed")

    static func fixtureCases() throws -> [FixtureCase] {
        struct Index: Decodable { var cases: [FixtureCase] }
        let data = try Data(contentsOf: fixtures.appendingPathComponent("cases.json"))
        return try JSONDecoder().decode(Index.self, from: data).cases
    }

    /// Raw little-endian elements of a tensor, checked against the expected dtype.
    static func elements<T: FixedWidthInteger>(
        _ file: SafeTensorsFile, _ name: String, _ dtype: TensorDType, as: T.Type
    ) throws -> [T] {
        let info = try file.info(name)
        #expect(info.dtype == dtype, "\(name) is \(info.dtype)")
        let raw = try file.bytes(name)
        return (0..<(raw.count / MemoryLayout<T>.size)).map {
            T(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self))
        }
    }

    struct Fixture {
        var python: PackedLinear
        var codes: [Int]
        var zeros: [Float]
        var scalesF32: [Float]
        var dequantized: [Float]
    }

    static func load(_ c: FixtureCase) throws -> Fixture {
        let file = try SafeTensorsFile(path: fixtures.appendingPathComponent("\(c.name).safetensors").path)
        let qzeros: [UInt32] = c.bits == 1 ? [] : try elements(file, "qzeros", .i32, as: UInt32.self)
        #expect(c.bits != 1 || file.tensors["qzeros"] == nil)
        let python = PackedLinear(
            outFeatures: c.outFeatures, inFeatures: c.inFeatures, bits: c.bits, groupSize: c.groupSize,
            qweight: try elements(file, "qweight", .i32, as: UInt32.self), qzeros: qzeros,
            scales: try elements(file, "scales", .f16, as: UInt16.self),
            gIdx: try elements(file, "g_idx", .i32, as: Int32.self))
        return Fixture(
            python: python, codes: try elements(file, "codes", .u8, as: UInt8.self).map(Int.init),
            zeros: try file.floats("zeros"), scalesF32: try file.floats("scales_f32"),
            dequantized: try file.floats("dequantized"))
    }

    @Test(arguments: try fixtureCases())
    func swiftPackingIsByteIdenticalToThePythonReference(_ c: FixtureCase) throws {
        let fixture = try Self.load(c)
        let swift = PackedLinear(
            packingCodes: fixture.codes, zeros: fixture.zeros, scales: fixture.scalesF32,
            groupIndex: fixture.python.gIdx, outFeatures: c.outFeatures, inFeatures: c.inFeatures,
            bits: c.bits, groupSize: c.groupSize)
        #expect(swift.qweight == fixture.python.qweight)
        #expect(swift.qzeros == fixture.python.qzeros)
        #expect(swift.scales == fixture.python.scales)
        #expect(swift.gIdx == fixture.python.gIdx)
        #expect(swift == fixture.python)
    }

    @Test(arguments: try fixtureCases())
    func swiftUnpackingOfPythonTensorsGivesTheReferenceValues(_ c: FixtureCase) throws {
        let fixture = try Self.load(c)
        try fixture.python.validate()
        #expect(fixture.python.byteCount == Int(fixture.python.layout.totalBytes))
        #expect(fixture.python.unpackedCodes() == fixture.codes)
        #expect(fixture.python.unpackedZeros() == fixture.zeros)
        // Same formula in Float on the same fp16 scales: exactly equal.
        #expect(fixture.python.dequantized() == fixture.dequantized)
        #expect(fixture.python.code(row: c.outFeatures - 1, column: c.inFeatures - 1) == fixture.codes.last)
    }
}
