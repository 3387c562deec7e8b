import Foundation
@testable import ModelFormat
@testable import Kernels
@testable import Quantization
import Testing

/// GPTQ against the published algorithm (tools/fixtures/make_gptq_fixtures.py), and against
/// round-to-nearest and its own error definition.
@Suite struct GPTQTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/gptq")
    /// Relative tolerance on the output error (float64 reference; float32 GPTQ here, as torch's).
    static let errorTolerance = 1e-4
    /// Relative difference allowed between the error folded into GPTQ's pass and `outputError`.
    static let foldedTolerance = 1e-4

    struct Case: Decodable, CustomTestStringConvertible {
        var name: String, rows: Int, columns: Int, bits: Int, groupSize: Int, blockSize: Int, actOrder: Bool,
            error: Double
        var testDescription: String {
            "\(name): \(rows)×\(columns), \(bits) bits, group \(groupSize), block "
                + "\(blockSize)\(actOrder ? ", act-order" : "")"
        }
    }

    static let cases: [Case] = {
        (try? JSONDecoder().decode([Case].self, from: Data(contentsOf: fixtures.appendingPathComponent("cases.json"))))
            ?? []
    }()

    @Test func fixturesArePresent() { #expect(Self.cases.count == 7 && Self.cases.filter(\.actOrder).count == 2) }

    static func doubles(_ file: SafeTensorsFile, _ name: String) throws -> [Double] {
        let raw = try file.bytes(name)
        return (0..<(raw.count / 8)).map {
            Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self)))
        }
    }

    @Test(arguments: cases)
    func matchesThePublishedAlgorithm(_ example: Case) throws {
        let file = try SafeTensorsFile(path: Self.fixtures.appendingPathComponent("\(example.name).safetensors").path)
        let weight = try file.floats("weight")
        let hessian = try Self.doubles(file, "hessian")
        let expectedCodes = try file.bytes("codes").bindMemory(to: Int32.self).map { Int($0) }
        let expectedScales = try Self.doubles(file, "scales")
        let gptq = GPTQ(
            options: .init(groupSize: example.groupSize, blockSize: example.blockSize, actOrder: example.actOrder))
        let result = try gptq.quantize(
            weight: weight, rows: example.rows, columns: example.columns, hessian: hessian, bits: example.bits)
        let mismatches = zip(result.codes, expectedCodes).filter { Int($0) != $1 }.count
        // Identical codes except rounding ties (float32 grid here, float64 in the reference).
        #expect(mismatches <= max(1, result.codes.count / 200), "\(mismatches) of \(result.codes.count) codes differ")
        #expect(zip(result.scales, expectedScales).allSatisfy { abs(Double($0) - $1) <= 1e-5 * max(abs($1), 1e-6) })
        #expect(
            abs(result.error - example.error) <= Self.errorTolerance * example.error,
            "error \(result.error) vs \(example.error)")
        #expect(result.groupIndex == (try file.bytes("g_idx").bindMemory(to: Int32.self).map { Int($0) }))
        // The reported error (folded into the quantization pass) is tr((W−Q)H(W−Q)ᵀ) of the returned codes.
        let recomputed = GPTQ.outputError(
            weight, result.dequantized, rows: example.rows, columns: example.columns, hessian: hessian)
        #expect(
            abs(recomputed - result.error) <= Self.foldedTolerance * result.error, "\(result.error) vs \(recomputed)")
    }

    @Test(arguments: [2, 3, 4, 8])
    func identityHessianIsRoundToNearest(bits: Int) throws {
        let rows = 8, columns = 64
        var state: UInt32 = 3
        let weight = (0..<(rows * columns)).map { _ -> Float in
            state = state &* 1_664_525 &+ 1_013_904_223
            return Float(Int32(bitPattern: state) >> 8) / Float(1 << 23)
        }
        var identity = [Double](repeating: 0, count: columns * columns)
        for j in 0..<columns { identity[j * columns + j] = 1 }
        let gptq = GPTQ(options: .init(groupSize: 32, blockSize: 32, dampening: 0))
        let full = try gptq.quantize(weight: weight, rows: rows, columns: columns, hessian: identity, bits: bits)
        let rtn = gptq.roundToNearest(weight: weight, rows: rows, columns: columns, hessian: identity, bits: bits)
        #expect(full.codes == rtn.codes)
        #expect(full.scales == rtn.scales)
        #expect(abs(full.error - rtn.error) <= 1e-6 * max(rtn.error, 1))
    }

    @Test func errorFallsWithWidthAndSignBinarisationIsMeanAbs() throws {
        let rows = 4, columns = 32
        let weight = (0..<(rows * columns)).map { Float(sin(Double($0) * 0.37)) }
        var hessian = [Double](repeating: 0, count: columns * columns)
        for i in 0..<columns { for j in 0..<columns { hessian[i * columns + j] = i == j ? 2 : 0.3 } }
        let gptq = GPTQ(options: .init(groupSize: 16, blockSize: 16))
        let errors = try [1, 2, 3, 4, 8].map {
            try gptq.quantize(weight: weight, rows: rows, columns: columns, hessian: hessian, bits: $0).error
        }
        #expect(zip(errors, errors.dropFirst()).allSatisfy { $0 > $1 }, "\(errors)")
        let sign = gptq.roundToNearest(weight: weight, rows: rows, columns: columns, hessian: nil, bits: 1)
        let mean = weight[0..<16].map { abs($0) }.reduce(0, +) / 16
        #expect(abs(sign.dequantized[0] - (weight[0] >= 0 ? mean : -mean)) < 1e-6)
        #expect(Set(sign.codes).isSubset(of: [0, 1]))
    }
}

extension GPTQTests {
    static func random(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return scale * Float(Int32(truncatingIfNeeded: state >> 32)) / Float(Int32.max)
        }
    }

    /// `XᵀX` of `samples` random rows, with one dead input column.
    static func hessian(_ n: Int, samples: Int, seed: UInt64) -> [Double] {
        var x = random(samples * n, seed: seed).map(Double.init)
        for t in 0..<samples where n > 2 { x[t * n + 2] = 0 }
        var h = [Double](repeating: 0, count: n * n)
        for t in 0..<samples { for i in 0..<n { for j in 0..<n { h[i * n + j] += x[t * n + i] * x[t * n + j] } } }
        return h
    }

    /// Threads split rows and GEMM row blocks on fixed boundaries: one thread or many, same bits.
    @Test func resultsDoNotDependOnTheThreadCount() throws {
        let rows = 203, columns = 300
        let weight = Self.random(rows * columns, seed: 11, scale: 0.1)
        let hessian = Self.hessian(columns, samples: 400, seed: 12)
        let gptq = GPTQ(options: .init(groupSize: 64, blockSize: 128))
        let threaded = try gptq.quantize(weight: weight, rows: rows, columns: columns, hessian: hessian, bits: 3)
        let serial = try Parallel.$serial.withValue(true) {
            try gptq.quantize(weight: weight, rows: rows, columns: columns, hessian: hessian, bits: 3)
        }
        #expect(threaded.codes == serial.codes)
        #expect(threaded.dequantized == serial.dequantized)
        #expect(threaded.error == serial.error)
    }

    /// The blocked Float `outputError` against `Σ_r e_r H e_rᵀ` in Double, element by element.
    @Test(arguments: [(1, 1), (5, 37), (40, 300)])
    func outputErrorMatchesThePlainSum(rows: Int, columns: Int) {
        let weight = Self.random(rows * columns, seed: 21), quantized = Self.random(rows * columns, seed: 22)
        let hessian = Self.hessian(columns, samples: 2 * columns, seed: 23)
        var expected = 0.0
        for r in 0..<rows {
            for i in 0..<columns {
                let ei = Double(weight[r * columns + i] - quantized[r * columns + i])
                for j in 0..<columns {
                    expected +=
                        ei * hessian[i * columns + j] * Double(weight[r * columns + j] - quantized[r * columns + j])
                }
            }
        }
        let fast = GPTQ.outputError(weight, quantized, rows: rows, columns: columns, hessian: hessian)
        #expect(abs(fast - expected) <= 1e-5 * abs(expected), "\(fast) vs \(expected)")
    }
}

extension GPTQTests {
    @Test(arguments: [2, 3, 4, 8])
    func clippingSearchNeverLosesAndHelpsOutliers(bits: Int) {
        // A group with one outlier: shrinking the range trades the outlier for the rest.
        var values = (0..<128).map { Float(sin(Double($0) * 1.3)) * 0.1 }
        values[17] = 2.5
        let plain = GroupQuantizer(bits: bits), searched = GroupQuantizer(bits: bits, clipSearch: true)
        values.withUnsafeBufferPointer { group in
            let plainError = plain.squaredError(group, plain.parameters(group))
            let searchedError = searched.squaredError(group, searched.parameters(group))
            #expect(searchedError <= plainError)
            if bits <= 3 { #expect(searchedError < plainError) }
        }
    }
}

extension GPTQTests {
    /// The folded error against `outputError` of the returned weights: rank-deficient Hessians
    /// (fewer samples than inputs, as with 2,048 calibration tokens for a 14,336-wide down projection),
    /// a dead input, every width, act-order, and no damping.
    @Test(arguments: [1, 2, 3, 4, 8])
    func theFoldedErrorIsTheOutputError(bits: Int) throws {
        let rows = 24, columns = 200
        let weight = Self.random(rows * columns, seed: 31, scale: 0.05)
        for (samples, dampening, actOrder) in [
            (40, 0.01, false), (400, 0.01, true), (400, 0.0, false), (60, 0.1, true),
        ] {
            let hessian = Self.hessian(columns, samples: samples, seed: UInt64(samples))
            let gptq = GPTQ(options: .init(groupSize: 32, blockSize: 64, dampening: dampening, actOrder: actOrder))
            guard
                let result = try? gptq.quantize(
                    weight: weight, rows: rows, columns: columns, hessian: hessian, bits: bits)
            else {
                #expect(dampening == 0, "no factor with damping \(dampening)")
                continue
            }
            let exact = GPTQ.outputError(weight, result.dequantized, rows: rows, columns: columns, hessian: hessian)
            #expect(
                abs(result.error - exact) <= Self.foldedTolerance * exact,
                "\(samples) samples, damping \(dampening): \(result.error) vs \(exact)")
        }
    }

    /// Gate and up quantized from one shared factor give what each gives alone, bit for bit, at every width.
    @Test func matricesSharingAFactorEqualEachAlone() throws {
        let columns = 150
        let hessian = Self.hessian(columns, samples: 300, seed: 41)
        let first = Self.random(37 * columns, seed: 42, scale: 0.1), second = Self.random(50 * columns, seed: 43)
        for actOrder in [false, true] {
            let gptq = GPTQ(options: .init(groupSize: 64, blockSize: 32, actOrder: actOrder))
            var timing = GPTQ.Timing()
            let stacked = try gptq.quantize(
                weights: [first, second], rows: [37, 50], columns: columns, hessian: hessian, widths: [2, 4],
                timing: &timing)
            for (w, bits) in [2, 4].enumerated() {
                for (m, (weight, rows)) in [(first, 37), (second, 50)].enumerated() {
                    let alone = try gptq.quantize(
                        weight: weight, rows: rows, columns: columns, hessian: hessian, bits: bits)
                    let together = stacked[w][m]
                    #expect(together.codes == alone.codes && together.dequantized == alone.dequantized)
                    #expect(together.scales == alone.scales && together.zeros == alone.zeros)
                    #expect(together.groupIndex == alone.groupIndex)
                    #expect(abs(together.error - alone.error) <= 1e-12 * alone.error)
                }
            }
        }
    }
}

extension GPTQTests {
    /// The in-block pass over tiles of 16 rows against the row-by-row reference: every output equal,
    /// bit for bit, at every width, with groups longer and shorter than blocks, act-order, dead inputs,
    /// clipping search and a row count that leaves a partial tile.
    @Test(arguments: [1, 2, 3, 4, 8])
    func tilesEqualTheRowByRowPass(bits: Int) throws {
        let rows = 37, columns = 160
        let weight = Self.random(rows * columns, seed: 51, scale: 0.2)
        let hessian = Self.hessian(columns, samples: 120, seed: 52)
        for (group, block, actOrder, clip) in [
            (32, 64, false, false), (64, 32, true, false), (48, 32, false, false), (48, 32, false, true),
        ] {
            let gptq = GPTQ(
                options: .init(groupSize: group, blockSize: block, actOrder: actOrder, clipSearch: clip))
            let tiles = try gptq.quantize(weight: weight, rows: rows, columns: columns, hessian: hessian, bits: bits)
            let reference = try GPTQ.$rowByRow.withValue(true) {
                try gptq.quantize(weight: weight, rows: rows, columns: columns, hessian: hessian, bits: bits)
            }
            #expect(tiles.codes == reference.codes, "group \(group), block \(block)")
            #expect(tiles.dequantized == reference.dequantized)
            #expect(tiles.scales == reference.scales && tiles.zeros == reference.zeros)
            #expect(tiles.error == reference.error)
        }
    }
}
