import ArgumentParser
import Benchmarks
import Foundation

extension PMQ {
    struct RuntimeBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "runtime",
            abstract:
                "Prefill and decode tokens/s, peak RSS and weight streaming rate of the float runtime, against the "
                + "scalar kernels and the machine's memory bandwidth."
        )

        @Option(help: ArgumentHelp("Hugging Face model directory.", valueName: "dir"))
        var model: String

        @Option(help: "Prompt tokens for the prefill measurement.")
        var prefill: Int = 128

        @Option(help: "Tokens to decode one at a time.")
        var decode: Int = 32

        @Option(help: "Runs (the median is reported).")
        var repeats: Int = 3

        @Flag(name: .customLong("skip-reference"), help: "Do not time the scalar reference kernels.")
        var skipReference = false

        @OptionGroup var path: RuntimePathOptions

        @Flag(
            name: .customLong("fp8-dequantize"),
            help: "Hold an FP8 checkpoint's linears as f32 (dequantized at load) instead of FP8 widened on the fly.")
        var fp8Dequantize = false

        @Flag(
            name: .customLong("expanded-kv-cache"),
            help: "MLA models: cache every head's expanded key and value instead of the latent.")
        var expandedKVCache = false

        func run() throws {
            var benchmark = RuntimeBenchmark(model: model)
            benchmark.prefill = prefill
            benchmark.decode = decode
            benchmark.repeats = repeats
            benchmark.skipReference = skipReference
            benchmark.int8Activations = !path.exactActivations
            benchmark.attentionBits = path.attentionBits
            benchmark.dequantizeFP8 = fp8Dequantize
            benchmark.latentCache = !expandedKVCache
            try checkedOptions { try benchmark.run(emit: emit) }
        }
    }
}
