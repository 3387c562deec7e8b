import Foundation
import Kernels
import ModelFormat

/// `pmq bench packed`: one linear layer in f32, bf16 and packed 1/2/3/4/8-bit weights, decode (one
/// token) and prefill, on enough distinct copies that decode streams from memory; medians, with ratios
/// against f32 and bf16 and the memory bandwidth measured in the same run.
public struct PackedBenchmark {
    public var rows: Int = 14336
    public var columns: Int = 4096
    public var groupSize: Int = 128
    public var widths: String = "1,2,3,4,8"
    public var prefill: Int = 64
    public var repeats: Int = 21
    public var prefillRepeats: Int = 5
    public var actOrder = false
    public var int8Activations = false
    public var streamBytes: Int = 256 << 20

    public init() {}

    public func parsedWidths() throws -> [Int] {
        try widths.split(separator: ",").map {
            guard let width = Int($0.trimmingCharacters(in: .whitespaces)) else {
                throw BenchmarkError("bad width '\($0)'")
            }
            return width
        }
    }

    /// Fast deterministic filler for large random matrices (SplitMix64).
    struct Filler: RandomNumberGenerator {
        var generator: SplitMix64
        init(state: UInt64) { generator = SplitMix64(seed: state) }
        mutating func next() -> UInt64 { generator.next() }
        mutating func word() -> UInt32 { UInt32(truncatingIfNeeded: next() >> 32) }
        /// Uniform in [−1, 1).
        mutating func float() -> Float { Float(Int32(bitPattern: word())) * 0x1p-31 }
    }

    func packed(bits: Int, actOrder: Bool, seed: UInt64) -> PackedLinear {
        var filler = Filler(state: seed)
        let layout = PackedLayout(outFeatures: rows, inFeatures: columns, bits: bits, groupSize: groupSize)
        let wordRows = (columns * bits + 31) / 32
        let qweight = (0..<(wordRows * rows)).map { _ in filler.word() }
        let qzeros = (0..<(layout.groups * (bits == 1 ? 0 : (rows * bits + 31) / 32))).map { _ in filler.word() }
        let scales = (0..<(layout.groups * rows)).map { _ in Float16(0.01 + 0.005 * filler.float()).bitPattern }
        var gIdx = (0..<columns).map { Int32($0 / groupSize) }
        if actOrder { gIdx.shuffle(using: &filler) }
        return PackedLinear(
            outFeatures: rows, inFeatures: columns, bits: bits, groupSize: groupSize,
            qweight: qweight, qzeros: qzeros, scales: scales, gIdx: gIdx)
    }

    struct Format {
        var name: String
        var bytes: Int
        /// Runs `tokens` rows of x through copy `copy`.
        var run: (_ x: [Float], _ tokens: Int, _ copy: Int) -> [Float]
        var copies: Int
    }

    struct Timing {
        var decode: Double
        var bestDecode: Double
        var prefill: Double
    }

    func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

    func time(_ format: Format, decodeX: [Float], prefillX: [Float], emit: (String) -> Void) -> Timing {
        var copy = 0
        var sink: Float = 0
        func next() -> Int { copy = (copy + 1) % format.copies; return copy }
        // Warm up: touch every copy once (page faults, first-use costs).
        for _ in 0..<format.copies { sink += format.run(decodeX, 1, next())[0] }
        var decode: [Double] = []
        for _ in 0..<repeats {
            let c = next()
            let start = ContinuousClock.now
            sink += format.run(decodeX, 1, c)[0]
            decode.append(seconds(since: start))
        }
        var prefillTimes: [Double] = []
        for _ in 0..<prefillRepeats {
            let c = next()
            let start = ContinuousClock.now
            sink += format.run(prefillX, prefill, c)[0]
            prefillTimes.append(seconds(since: start))
        }
        if sink.isNaN { emit("") } // keep the results alive
        return Timing(decode: median(decode), bestDecode: decode.min()!, prefill: median(prefillTimes))
    }

    public func run(emit: (String) -> Void) throws {
        let weights = rows * columns
        var filler = Filler(state: 1)
        let decodeX = (0..<columns).map { _ in filler.float() }
        let prefillX = (0..<(prefill * columns)).map { _ in filler.float() }
        func copies(_ bytes: Int) -> Int { max(1, min(64, (streamBytes + bytes - 1) / bytes)) }

        var formats: [Format] = []
        do {
            let count = copies(4 * weights)
            let matrices = (0..<count).map { c -> Matrix in
                var f = Filler(state: 100 + UInt64(c))
                return Matrix(rows: rows, columns: columns, floats: (0..<weights).map { _ in f.float() })
            }
            formats.append(
                Format(
                    name: "f32", bytes: 4 * weights, run: { Kernels.linear($0, tokens: $1, matrix: matrices[$2]) },
                    copies: count))
        }
        do {
            let count = copies(2 * weights)
            let matrices = (0..<count).map { c -> Matrix in
                var f = Filler(state: 200 + UInt64(c))
                return Matrix(
                    rows: rows, columns: columns,
                    storage: .bf16(
                        (0..<weights).map { _ in UInt16(truncatingIfNeeded: f.float().bitPattern >> 16) }))
            }
            formats.append(
                Format(
                    name: "bf16", bytes: 2 * weights, run: { Kernels.linear($0, tokens: $1, matrix: matrices[$2]) },
                    copies: count))
        }
        for actOrder in actOrder ? [false, true] : [false] {
            for bits in try parsedWidths() {
                let bytes = Int(
                    PackedLayout(outFeatures: rows, inFeatures: columns, bits: bits, groupSize: groupSize)
                        .totalBytes)
                let count = copies(bytes)
                let layers = (0..<count).map {
                    packed(bits: bits, actOrder: actOrder, seed: UInt64(1000 * bits + $0))
                }
                let natural = !actOrder
                formats.append(
                    Format(
                        name: "\(bits)-bit" + (actOrder ? " act-order" : ""), bytes: bytes,
                        run: { Kernels.linear($0, tokens: $1, packed: layers[$2], naturalOrder: natural) },
                        copies: count))
                let int8Widths = [1, 2, 3, 4, 8]
                if int8Activations && !actOrder && int8Widths.contains(bits) {
                    formats.append(
                        Format(
                            name: "\(bits)-bit int8 \(CPUFeatures.int8Path)", bytes: bytes,
                            run: {
                                Kernels.linear(
                                    $0, tokens: $1, packed: layers[$2], naturalOrder: natural, int8Activations: true
                                )
                            }, copies: count))
                }
                if int8Activations && !actOrder && CPUFeatures.vnni && int8Widths.contains(bits) {
                    // The AVX2 int8 kernel beside the VNNI one, in the same run.
                    formats.append(
                        Format(
                            name: "\(bits)-bit int8 AVX2", bytes: bytes,
                            run: { x, tokens, copy in
                                CPUFeatures.$forceAVX2.withValue(true) {
                                    Kernels.linear(
                                        x, tokens: tokens, packed: layers[copy], naturalOrder: natural,
                                        int8Activations: true)
                                }
                            }, copies: count))
                }
                if actOrder {
                    // The same layers rewritten at load so that groups are contiguous.
                    let reordered = layers.map { Kernels.groupContiguous($0)! }
                    formats.append(
                        Format(
                            name: "\(bits)-bit act-ord.seq", bytes: bytes,
                            run: {
                                Kernels.linear(
                                    $0, tokens: $1, packed: reordered[$2].reordered,
                                    inputOrder: reordered[$2].inputOrder)
                            },
                            copies: count))
                }
            }
        }

        let bandwidth = MemoryBandwidth.measure()
        emit(
            String(
                format: "linear [%d, %d], group size %d; memory read bandwidth (all %d cores): %.1f GB/s",
                rows, columns, groupSize, Parallel.cores, bandwidth / 1e9))
        emit(
            "decode: median of \(repeats) matvecs; prefill: \(prefill) tokens, median of \(prefillRepeats); each "
                + "format cycles through distinct copies (≥ \(streamBytes >> 20) MB)"
        )
        emit(
            "format            weights MB  decode ms   GB/s  %bw   ×f32   ×bf16  (best ms) | prefill ms  GFLOP/s "
                + "  ×f32   ×bf16"
        )
        var timings: [String: Timing] = [:]
        for format in formats {
            let timing = time(format, decodeX: decodeX, prefillX: prefillX, emit: emit)
            timings[format.name] = timing
            let f32 = timings["f32"] ?? timing, bf16 = timings["bf16"] ?? timing
            let rate = Double(format.bytes) / timing.decode
            emit(
                String(
                    format: "%@ %10.1f %10.4f %6.1f %4.0f%% %6.2f %7.2f  (%7.4f) | %10.3f %8.1f %6.2f %7.2f",
                    format.name.padding(toLength: 17, withPad: " ", startingAt: 0), Double(format.bytes) / 1e6,
                    timing.decode * 1e3, rate / 1e9, 100 * rate / bandwidth,
                    f32.decode / timing.decode, bf16.decode / timing.decode, timing.bestDecode * 1e3,
                    timing.prefill * 1e3, 2 * Double(weights) * Double(prefill) / timing.prefill / 1e9,
                    f32.prefill / timing.prefill, bf16.prefill / timing.prefill))
        }
    }
}
