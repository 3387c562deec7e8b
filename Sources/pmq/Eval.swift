import ArgumentParser
import Foundation
import ModelFormat
import MoERuntime

extension PMQ {
    struct Eval: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Perplexity, tokens/s, peak memory and expert routing of a model on a token file.",
            discussion: "Non-overlapping windows of --seq-len tokens; inside each, position t predicts token t+1 (transformers' label shift)."
        )

        @Option(help: ArgumentHelp("Hugging Face model directory (config.json + safetensors).", valueName: "dir"))
        var model: String

        @Option(help: ArgumentHelp("Token file: little-endian u32 ids.", valueName: "file"))
        var tokens: String

        @Option(name: .customLong("seq-len"), help: "Window length.")
        var seqLen: Int = 512

        @Option(name: .customLong("max-tokens"), help: "Evaluate at most this many tokens.")
        var maxTokens: Int?

        @Option(help: ArgumentHelp("Write the results as JSON.", valueName: "file"))
        var json: String?

        @Flag(help: "No progress on stderr.")
        var quiet = false

        func validate() throws {
            guard seqLen >= 2 else { throw ValidationError("--seq-len must be at least 2") }
            if let maxTokens, maxTokens < 2 { throw ValidationError("--max-tokens must be at least 2") }
        }

        func run() throws {
            let loaded = try FloatModel(directory: model)
            let file = try TokenFile(path: tokens)
            try file.validate(vocabSize: loaded.config.vocabSize)
            guard seqLen <= loaded.config.maxPositions else {
                throw ValidationError("--seq-len \(seqLen) exceeds the model's max_position_embeddings \(loaded.config.maxPositions)")
            }
            let ids = maxTokens.map { Array(file.tokens.prefix($0)) } ?? file.tokens
            let progress = Progress("eval", quiet: quiet)
            let result = try Evaluation.run(model: loaded, tokens: ids, sequenceLength: seqLen) { done, total in
                progress.update(done: done, total: total, detail: "tokens")
            }
            progress.finish()
            if let json { try AtomicFile.writeJSON(result, to: json) }
            print("\(model): \(loaded.config.architecture.rawValue), \(result.tokens) tokens in \(result.windows) windows of ≤ \(seqLen)")
            print(String(format: "perplexity %.3f  (mean NLL %.4f nats over %d predictions)", result.perplexity, result.negativeLogLikelihood, result.predicted))
            print(String(format: "%.0f tokens/s  (%.1f s)  peak RSS %.1f MB", result.tokensPerSecond, result.seconds, Double(result.peakResidentBytes) / 1e6))
            print("tokens routed per expert:")
            for (layer, counts) in result.expertTokens.enumerated() {
                print("  layer \(layer): " + counts.map(String.init).joined(separator: " "))
            }
        }
    }
}
