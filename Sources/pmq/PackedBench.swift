import ArgumentParser
import Benchmarks
import Foundation

extension PMQ {
    struct PackedBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "packed",
            abstract:
                "Time one linear layer: f32, bf16 and packed 1/2/3/4/8-bit weights, decode (one token) and prefill, "
                + "against the machine's memory bandwidth.",
            discussion: """
                Weights are random (any words are valid codes). Each format is timed on enough distinct \
                copies of the matrix (used in turn) that they do not fit in the last-level cache, so \
                decode streams its weights from memory. Medians of several runs; ratios are against f32 \
                and bf16 timed in the same process, and memory bandwidth is measured in the same run.
                """
        )

        @Option(help: "Output features (rows of W).")
        var rows: Int = 14336

        @Option(help: "Input features (columns of W).")
        var columns: Int = 4096

        @Option(name: .customLong("group-size"), help: "Inputs per quantization group.")
        var groupSize: Int = 128

        @Option(help: "Packed widths to time, comma separated.")
        var widths: String = "1,2,3,4,8"

        @Option(help: "Tokens for the prefill measurement.")
        var prefill: Int = 64

        @Option(help: "Decode runs per format (the median is reported).")
        var repeats: Int = 21

        @Option(name: .customLong("prefill-repeats"), help: "Prefill runs per format (the median is reported).")
        var prefillRepeats: Int = 5

        @Flag(
            name: .customLong("act-order"),
            help: ArgumentHelp(
                "Also time packed widths with an act-order g_idx: as stored (the general path) and reordered at load "
                    + "(`act-ord.seq`).")
        )
        var actOrder = false

        @Flag(
            name: .customLong("int8-activations"),
            help: "Also time every width's decode and prefill with int8 activations (`N-bit int8`).")
        var int8Activations = false

        @Option(name: .customLong("stream-bytes"), help: "Bytes of distinct copies per format, to defeat the caches.")
        var streamBytes: Int = 256 << 20

        func validate() throws {
            guard rows > 0, columns > 0, groupSize > 0, prefill > 0, repeats > 0, prefillRepeats > 0 else {
                throw ValidationError("sizes and repeats must be positive")
            }
            var parsed: [Int] = []
            try checkedOptions {
                var benchmark = PackedBenchmark()
                benchmark.widths = widths
                parsed = try benchmark.parsedWidths()
            }
            for width in parsed where ![1, 2, 3, 4, 8].contains(width) {
                throw ValidationError("unsupported width \(width) (expected 1, 2, 3, 4 or 8)")
            }
        }

        func run() throws {
            var benchmark = PackedBenchmark()
            benchmark.rows = rows
            benchmark.columns = columns
            benchmark.groupSize = groupSize
            benchmark.widths = widths
            benchmark.prefill = prefill
            benchmark.repeats = repeats
            benchmark.prefillRepeats = prefillRepeats
            benchmark.actOrder = actOrder
            benchmark.int8Activations = int8Activations
            benchmark.streamBytes = streamBytes
            try checkedOptions { try benchmark.run(emit: emit) }
        }
    }
}
