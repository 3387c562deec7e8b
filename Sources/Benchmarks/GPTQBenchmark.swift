import Foundation
import Kernels
import ModelFormat
import Quantization

/// `pmq bench gptq`: GPTQ of one SwiGLU expert (gate, up, down) at several widths on random weights and
/// Hessians, against the machine's FMA peak and this build's SGEMM measured in the same run.
public struct GPTQBenchmark {
    public var hidden: Int = 1024
    public var intermediate: Int = 3584
    public var widths: [Int] = [2, 3, 4]
    public var tokens: Int = 2048
    public var repeats: Int = 1
    public var sgemm: Int = 2048
    public var dump: String?

    public init() {}

    public func run(emit: (String) -> Void) throws {
        // (a) FMA peak, (b) SGEMM on a square problem: the yardsticks, measured now. The host is
        // shared and noisy: the peak is the best of 5 short trials, SGEMM the median and best of 5.
        func best(_ threads: Int) -> Double {
            (0..<5).map { _ in SGEMM.measureFMAPeak(threads: threads, duration: 0.2) }.max()!
        }
        let peak1 = best(1), peak2 = best(2)
        let cores = Parallel.cores
        let peakCores = cores > 2 ? best(cores) : peak2
        // When the second vCPU gives little, two threads can measure below one: take the best.
        let peakAll = max(peak1, peak2, peakCores)
        emit(
            String(
                format:
                    "kernels: %@ (PMQ_KERNELS=avx2 for the AVX2 path). FMA peak (register-resident SIMD FMA "
                    + "chains, best of 5): 1 thread %.1f GFLOP/s, 2 threads %.1f%@; peak used below %.1f",
                CPUFeatures.sgemmPath, peak1, peak2,
                cores > 2 ? String(format: ", %d threads %.1f", cores, peakCores) : "", peakAll))
        let sgemmRuns = (0..<5).map { _ in squareSGEMM(sgemm) }
        let sgemmRate = median(sgemmRuns)
        emit(
            String(
                format: "SGEMM %d³: %.1f GFLOP/s (median of 5; best %.1f), %.0f%% of FMA peak", sgemm, sgemmRate,
                sgemmRuns.max()!, 100 * sgemmRate / peakAll))

        var generator = Generator(state: 42)
        var start = ContinuousClock.now
        let inputHessian = hessian(hidden, &generator), downHessian = hessian(intermediate, &generator)
        emit(String(format: "Hessians (%d rows): %.1f s", tokens, seconds(since: start)))
        let gateUp = (0..<(hidden * intermediate)).map { _ in generator.next() * 0.02 }
        let down = (0..<(hidden * intermediate)).map { _ in generator.next() * 0.02 }
        if let dump {
            start = ContinuousClock.now
            try FileManager.default.createDirectory(atPath: dump, withIntermediateDirectories: true)
            var writer = SafeTensorsWriter()
            try writer.add("gate", shape: [intermediate, hidden], floats: gateUp)
            try writer.add("down", shape: [hidden, intermediate], floats: down)
            // The Hessians are sums of float32 products (see `hessian`): float32 holds them exactly.
            try writer.add("h_in", shape: [hidden, hidden], floats: inputHessian.map { Float($0) })
            try writer.add("h_down", shape: [intermediate, intermediate], floats: downHessian.map { Float($0) })
            try writer.write(to: (dump as NSString).appendingPathComponent("gptq_bench.safetensors"))
            emit(String(format: "wrote %@/gptq_bench.safetensors (%.1f s)", dump, seconds(since: start)))
        }

        let gptq = GPTQ()
        var report: [[String: Double]] = []
        for bits in widths {
            var gateRuns: [Run] = [], downRuns: [Run] = []
            for _ in 0..<repeats {
                gateRuns.append(
                    try Run(gptq, gateUp, rows: intermediate, columns: hidden, hessian: inputHessian, bits: bits))
                downRuns.append(
                    try Run(gptq, down, rows: hidden, columns: intermediate, hessian: downHessian, bits: bits))
            }
            let g = Run.median(gateRuns), d = Run.median(downRuns)
            emit(
                String(
                    format:
                        "%d bits: gate/up %d×%d %.2f s each, down %d×%d %.2f s, expert %.2f s (errors %.4g, %.4g)",
                    bits, intermediate, hidden, g.seconds, hidden, intermediate, d.seconds,
                    2 * g.seconds + d.seconds,
                    g.error, d.error))
            for (name, run, n) in [("gate/up", g, hidden), ("down", d, intermediate)] {
                let rate = run.updateFlops / run.timing.updateSeconds / 1e9
                // Cholesky: n³/3 floating-point operations.
                let choleskyRate = pow(Double(n), 3) / 3 / run.timing.choleskySeconds / 1e9
                emit(
                    String(
                        format:
                            "  %@: Cholesky %.2f s (%.0f GFLOP/s, %.0f%% of SGEMM), quantize %.2f s, block update "
                            + "%.2f s = %.1f GFLOP/s (%.0f%% of FMA peak, %.0f%% of SGEMM), error %.2f s (folded "
                            + "into the pass; %.1e relative to tr(EHEᵀ) recomputed)",
                        name, run.timing.choleskySeconds, choleskyRate, 100 * choleskyRate / sgemmRate,
                        run.timing.quantizeSeconds, run.timing.updateSeconds, rate,
                        100 * rate / peakAll, 100 * rate / sgemmRate, run.timing.errorSeconds,
                        abs(run.error - run.exactError) / run.exactError))
            }
            report.append([
                "bits": Double(bits), "gate_seconds": g.seconds, "down_seconds": d.seconds,
                "expert_seconds": 2 * g.seconds + d.seconds, "gate_error": g.error, "down_error": d.error,
            ])
        }
        // The profiler's path: every width from one factor per Hessian, gate and up sharing theirs.
        var timing = GPTQ.Timing()
        let sharedStart = ContinuousClock.now
        _ = try gptq.quantize(
            weights: [gateUp, gateUp], rows: [intermediate, intermediate], columns: hidden, hessian: inputHessian,
            widths: widths, timing: &timing)
        let gateShared = seconds(since: sharedStart)
        let downStart = ContinuousClock.now
        _ = try gptq.quantize(
            weight: down, rows: hidden, columns: intermediate, hessian: downHessian, widths: widths, timing: &timing)
        let downShared = seconds(since: downStart)
        let separate = report.reduce(0) { $0 + $1["expert_seconds"]! }
        emit(
            String(
                format:
                    "all %d widths from one factor per Hessian (the profiler's path): gate and up together %.2f s, "
                    + "down %.2f s, expert %.2f s (%.2f s one width and one linear at a time)",
                widths.count, gateShared, downShared, gateShared + downShared, separate))
        emit(
            String(
                format:
                    "  of which: Cholesky %.2f s, quantize %.2f s, block update %.2f s (%.1f GFLOP/s), error %.2f s",
                timing.choleskySeconds, timing.quantizeSeconds, timing.updateSeconds,
                timing.updateFlops / timing.updateSeconds / 1e9, timing.errorSeconds))
        // The in-block pass in tiles of 16 rows against the row-by-row reference, same matrix, same run.
        let sample = min(hidden, 512)
        let downRows = Array(down[0..<(sample * intermediate)])
        func inBlockSeconds(rowByRow: Bool) throws -> Double {
            var timing = GPTQ.Timing()
            _ = try GPTQ.$rowByRow.withValue(rowByRow) {
                try gptq.quantize(
                    weight: downRows, rows: sample, columns: intermediate, hessian: downHessian, widths: [widths[0]],
                    timing: &timing)
            }
            return timing.quantizeSeconds
        }
        let rowByRow = try inBlockSeconds(rowByRow: true), tiles = try inBlockSeconds(rowByRow: false)
        emit(
            String(
                format:
                    "in-block pass, %d rows of down at %d bits: row by row %.2f s, tiles of 16 rows %.2f s (%.1f×)",
                sample, widths[0], rowByRow, tiles, rowByRow / tiles))
        if let dump {
            let json = try JSONSerialization.data(
                withJSONObject: [
                    "hidden": hidden, "intermediate": intermediate, "tokens": tokens, "widths": report,
                ] as [String: Any], options: [.prettyPrinted, .sortedKeys])
            try json.write(
                to: URL(fileURLWithPath: (dump as NSString).appendingPathComponent("swift_timings.json")))
            emit("compare: tools/.venv/bin/python tools/gptq_bench.py --load \(dump)")
        }
    }

    /// One GPTQ call, timed.
    struct Run {
        var seconds: Double, error: Double, timing: GPTQ.Timing
        var updateFlops: Double { timing.updateFlops }

        init(_ gptq: GPTQ, _ weight: [Float], rows: Int, columns: Int, hessian: [Double], bits: Int) throws {
            var timing = GPTQ.Timing()
            let start = ContinuousClock.now
            let result = try gptq.quantize(
                weight: weight, rows: rows, columns: columns, hessian: hessian, bits: bits, timing: &timing)
            seconds = ModelFormat.seconds(since: start)
            error = result.error
            self.timing = timing
            // Not timed: the error recomputed from the codes, against the one folded into GPTQ's pass.
            exactError = GPTQ.outputError(weight, result.dequantized, rows: rows, columns: columns, hessian: hessian)
        }

        var exactError: Double

        /// The run with the median total time.
        static func median(_ runs: [Run]) -> Run { runs.sorted { $0.seconds < $1.seconds }[runs.count / 2] }
    }

    struct Generator {
        var state: UInt64
        mutating func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int32(truncatingIfNeeded: state >> 32)) / Float(Int32.max)
        }
    }

    /// `XᵀX` of `tokens` random rows in [−1, 1), by SGEMM (lower triangle, mirrored).
    func hessian(_ n: Int, _ generator: inout Generator) -> [Double] {
        let x = (0..<(tokens * n)).map { _ in generator.next() }
        var product = [Float](repeating: 0, count: n * n)
        x.withUnsafeBufferPointer { x in
            product.withUnsafeMutableBufferPointer { c in
                let view = SGEMM.Matrix(x.baseAddress!, rowStride: n)
                SGEMM.multiply(
                    m: n, n: n, k: tokens, a: view.transposed, b: view, c: c.baseAddress!, ldc: n, lowerOnly: true)
            }
        }
        var h = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in 0...i {
                h[i * n + j] = Double(product[i * n + j])
                h[j * n + i] = h[i * n + j]
            }
        }
        return h
    }

    /// GFLOP/s of one `n³` SGEMM.
    func squareSGEMM(_ n: Int) -> Double {
        var generator = Generator(state: 7)
        let a = (0..<(n * n)).map { _ in generator.next() }, b = (0..<(n * n)).map { _ in generator.next() }
        var c = [Float](repeating: 0, count: n * n)
        let start = ContinuousClock.now
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                c.withUnsafeMutableBufferPointer {
                    SGEMM.multiply(
                        m: n, n: n, k: n, a: .init(a.baseAddress!, rowStride: n),
                        b: .init(b.baseAddress!, rowStride: n),
                        c: $0.baseAddress!, ldc: n)
                }
            }
        }
        return 2 * Double(n) * Double(n) * Double(n) / seconds(since: start) / 1e9
    }

    func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
}
