import ArgumentParser
import Foundation
import Kernels
import MoERuntime
import ModelFormat

extension PMQ {
    struct Eval: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Perplexity, tokens/s, peak memory and expert routing of a model on a token file.",
            discussion:
                "Non-overlapping windows of --seq-len tokens; inside each, position t predicts token t+1 "
                + "(transformers' label shift)."
        )

        @Option(help: ArgumentHelp("Hugging Face model directory (config.json + safetensors).", valueName: "dir"))
        var model: String

        @Option(help: ArgumentHelp("Token file: little-endian u32 ids.", valueName: "file"))
        var tokens: String

        @Option(name: .customLong("seq-len"), help: "Window length.")
        var seqLen: Int = 512

        @Option(name: .customLong("max-tokens"), help: "Evaluate at most this many tokens.")
        var maxTokens: Int?

        @Option(
            help: ArgumentHelp(
                "Expert pruning: none, odp (MC-MoE's threshold rule), otp (learned gates; `pmq otp train`), "
                    + "oracle-mse (diagnostic: runs every top-k expert to decide; the best any gate can do on the "
                    + "output-MSE loss), or odp-matched (diagnostic: ODP at the per-layer fractions a globally "
                    + "budgeted OTP keeps).",
                valueName: "none|odp|otp|oracle-mse|odp-matched"))
        var prune: PruningPolicy = .none

        @Option(
            name: .customLong("odp-beta"),
            help: ArgumentHelp(
                "ODP threshold for every layer (default: the per-layer thresholds `pmq otp train` calibrated, else "
                    + "0.5).")
        )
        var odpBeta: Double?

        @Option(
            name: .customLong("decode-tokens"),
            help: "Also time one-token-at-a-time decoding over this many tokens (0: skip).")
        var decodeTokens: Int = 0

        @Flag(
            name: .customLong("one-token-at-a-time"),
            help: ArgumentHelp(
                "Score each window one token at a time through the KV cache (the decode path `pmq generate` "
                    + "takes) instead of in one prefill."))
        var oneTokenAtATime = false

        @Flag(
            name: .customLong("int8-activations"),
            help: ArgumentHelp(
                "Score with int8 activations (integer dot products, the default of `pmq generate` and `pmq bench "
                    + "runtime`) instead of float ones (exact kernels, the default here and in measured fronts)."))
        var int8Activations = false

        @Option(
            name: .customLong("attention-bits"),
            help: ArgumentHelp(
                "Hold attention projections and an untied head as packed linears of this width (8, 4 or 2; "
                    + "round to nearest, groups of 128) instead of as stored (the default).", valueName: "bits"))
        var attentionBits: Int?

        @Option(help: ArgumentHelp("Write the results as JSON.", valueName: "file"))
        var json: String?

        @Flag(help: "No progress on stderr.")
        var quiet = false

        func validate() throws {
            guard seqLen >= 2 else { throw ValidationError("--seq-len must be at least 2") }
            if let maxTokens, maxTokens < 2 { throw ValidationError("--max-tokens must be at least 2") }
            if let odpBeta, !(odpBeta >= 0 && odpBeta.isFinite) {
                throw ValidationError("--odp-beta must be a finite number ≥ 0")
            }
            guard decodeTokens >= 0 else { throw ValidationError("--decode-tokens must be ≥ 0") }
            if let attentionBits, ![2, 4, 8].contains(attentionBits) {
                throw ValidationError("--attention-bits must be 8, 4 or 2")
            }
        }

        func run() throws {
            let loaded = try MoEModel(directory: model)
            if let attentionBits {
                reportAttention(loaded.quantizeAttentionAndHead(bits: attentionBits), attentionBits)
            }
            let file = try TokenFile(path: tokens)
            try file.validate(vocabSize: loaded.config.vocabSize)
            guard seqLen <= loaded.config.maxPositions else {
                throw ValidationError(
                    "--seq-len \(seqLen) exceeds the model's max_position_embeddings \(loaded.config.maxPositions)")
            }
            let ids = maxTokens.map { Array(file.tokens.prefix($0)) } ?? file.tokens
            // Each window predicts all but its first token: with none to predict there is no perplexity.
            let predictions = stride(from: 0, to: ids.count, by: seqLen).reduce(0) {
                $0 + max(0, min(seqLen, ids.count - $1) - 1)
            }
            guard predictions > 0 else {
                throw ModelFormatError(
                    file: tokens, "\(ids.count) tokens in windows of ≤ \(seqLen) leave no token to predict")
            }
            let pruner: ExpertPruner?
            do { pruner = try prune.pruner(model: loaded, directory: model, odpBeta: odpBeta) } catch let error
                as PruningPolicy.Missing
            {
                throw ValidationError(error.message)
            }
            let progress = Progress("eval", quiet: quiet)
            var result = try Kernels.$int8Activations.withValue(int8Activations) {
                try Evaluation.run(
                    model: loaded, tokens: ids, sequenceLength: seqLen, pruner: pruner, pruning: prune.rawValue,
                    decodeTokens: decodeTokens, oneTokenAtATime: oneTokenAtATime
                ) { done, total in
                    progress.update(done: done, total: total, detail: "tokens")
                }
            }
            progress.finish()
            result.attentionBits = attentionBits
            if let json { try AtomicFile.writeJSON(result, to: json) }
            print(
                "\(model): \(loaded.config.architecture.rawValue), \(result.tokens) tokens in \(result.windows) "
                    + "windows of ≤ \(seqLen)"
            )
            print(
                String(
                    format: "perplexity %.3f  (mean NLL %.4f nats over %d predictions%@%@)", result.perplexity,
                    result.negativeLogLikelihood, result.predicted, oneTokenAtATime ? ", one token at a time" : "",
                    int8Activations ? ", int8 activations" : ""))
            print(
                String(
                    format: "%.0f tokens/s  (%.1f s)  peak RSS %.1f MB  expert weights %.3f MB", result.tokensPerSecond,
                    result.seconds,
                    Double(result.peakResidentBytes) / 1e6, Double(result.expertBytes) / 1e6))
            if decodeTokens > 0 {
                print(
                    String(
                        format: "decode %.1f tokens/s (%d tokens, one at a time, median of 3)",
                        result.decodeTokensPerSecond, decodeTokens))
            }
            print(
                String(
                    format: "experts per token %.3f (pruning: %@); per layer: %@", result.expertsPerToken,
                    prune.rawValue,
                    result.layerExpertsPerToken.map { String(format: "%.3f", $0) }.joined(separator: " ")))
            print("tokens routed per expert:")
            for (layer, counts) in result.expertTokens.enumerated() where loaded.config.moeLayers[layer] {
                print("  layer \(layer): " + counts.map(String.init).joined(separator: " "))
            }
        }
    }
}

extension PruningPolicy: ExpressibleByArgument {}
