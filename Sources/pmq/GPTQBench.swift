import ArgumentParser
import Benchmarks
import Foundation
import Kernels
import Quantization

extension PMQ {
    struct GPTQBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "gptq",
            abstract:
                "Time GPTQ of one SwiGLU expert (gate, up, down) at several widths on random weights and Hessians.",
            discussion: """
                Prints the machine's FMA peak and this build's SGEMM, measured in the same run, then per width \
                the seconds of gate/up and down (Cholesky, in-block quantization, block update, output error) and \
                the block update's GFLOP/s against both. `--hidden 4096 --intermediate 14336` is Mixtral-8x7B's \
                expert. With `--dump DIR` the matrices and these timings are written for tools/gptq_bench.py, \
                which runs the published torch algorithm on the same matrices and prints the ratio.
                """
        )

        @Option(help: "Hidden size (gate/up input, down output).")
        var hidden: Int = 1024

        @Option(help: "Expert width (gate/up output, down input).")
        var intermediate: Int = 3584

        @Option(help: ArgumentHelp("Widths.", valueName: "w,w,…"), transform: parseWidths)
        var widths: [Int] = [2, 3, 4]

        @Option(help: "Calibration rows used to build the Hessians.")
        var tokens: Int = 2048

        @Option(help: "Runs per width; medians are printed.")
        var repeats: Int = 1

        @Option(help: "Size of the square SGEMM measured for reference.")
        var sgemm: Int = 2048

        @Option(
            help: ArgumentHelp(
                "Write gate, down and both Hessians (safetensors) and the timings (JSON) here.",
                valueName: "dir"))
        var dump: String?

        func validate() throws {
            guard hidden > 0, intermediate > 0, tokens > 0, repeats > 0, sgemm > 0 else {
                throw ValidationError("sizes and repeats must be positive")
            }
        }

        func run() throws {
            var benchmark = GPTQBenchmark()
            benchmark.hidden = hidden
            benchmark.intermediate = intermediate
            for width in widths where ![1, 2, 3, 4, 8].contains(width) {
                throw ValidationError("--widths: \(width) is not one of 1, 2, 3, 4, 8")
            }
            benchmark.widths = widths
            benchmark.tokens = tokens
            benchmark.repeats = repeats
            benchmark.sgemm = sgemm
            benchmark.dump = dump
            try checkedOptions { try benchmark.run(emit: emit) }
        }
    }
}
