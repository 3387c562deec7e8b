import ArgumentParser
import Foundation
import ModelFormat
import MoERuntime

extension PMQ {
    struct RuntimeBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "runtime",
            abstract: "Prefill and decode tokens/s, peak RSS and weight streaming rate of the float runtime, against the scalar kernels and the machine's memory bandwidth."
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

        func run() throws {
            let loaded = try FloatModel(directory: model)
            let config = loaded.config
            let tokens = (0..<prefill).map { ($0 * 7919 + 13) % config.vocabSize }
            // Weights one decode token reads: attention + router + top-k experts + head, f32.
            let attention = config.hiddenSize * (2 * config.attentionHeads + 2 * config.keyValueHeads) * config.headDim
            let experts = config.routing.topK * 3 * config.hiddenSize * config.expertIntermediateSize
            let router = config.expertCount * config.hiddenSize
            let bytesPerWeight = Double(loaded.matrix(.embeddings).byteCount) / Double(config.vocabSize * config.hiddenSize)
            let bytesPerToken = bytesPerWeight * Double(config.layerCount * (attention + experts + router) + config.vocabSize * config.hiddenSize)

            func measure() throws -> (prefill: Double, decode: Double) {
                var prefillRates: [Double] = [], decodeRates: [Double] = []
                for _ in 0..<max(1, repeats) {
                    let session = FloatForward(model: loaded)
                    var start = ContinuousClock.now
                    _ = try session.logits(tokens)
                    prefillRates.append(Double(prefill) / seconds(since: start))
                    start = ContinuousClock.now
                    for step in 0..<decode { _ = try session.logits([(step * 31) % config.vocabSize]) }
                    decodeRates.append(Double(decode) / seconds(since: start))
                }
                return (prefillRates.sorted()[prefillRates.count / 2], decodeRates.sorted()[decodeRates.count / 2])
            }
            let fast = try measure()
            let peakRSS = Evaluation.peakResidentBytes()   // before the bandwidth probe's 1 GB buffer
            let bandwidth = MemoryBandwidth.measure()
            emit("model \(model): \(config.architecture.rawValue), \(config.layerCount) layers, hidden \(config.hiddenSize), \(config.expertCount) experts of \(config.expertIntermediateSize), top-\(config.routing.topK)")
            emit(String(format: "memory read bandwidth (all cores): %.1f GB/s", bandwidth / 1e9))
            emit(String(format: "SIMD kernels:   prefill %8.1f tokens/s   decode %7.2f tokens/s   streaming %.2f GB/s = %.0f%% of bandwidth",
                        fast.prefill, fast.decode, fast.decode * bytesPerToken / 1e9, 100 * fast.decode * bytesPerToken / bandwidth))
            if !skipReference {
                Kernels.useReferenceKernels = true
                let reference = try measure()
                Kernels.useReferenceKernels = false
                emit(String(format: "scalar kernels: prefill %8.1f tokens/s   decode %7.2f tokens/s   (SIMD speed-up: prefill %.1f×, decode %.1f×)",
                            reference.prefill, reference.decode, fast.prefill / reference.prefill, fast.decode / reference.decode))
            }
            emit(String(format: "peak RSS %.1f MB (weights in memory: %.1f MB, %.0f bytes per matrix weight)", Double(peakRSS) / 1e6,
                        Double(loaded.weightBytes) / 1e6, bytesPerWeight))
        }
    }
}
