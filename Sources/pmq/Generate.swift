import ArgumentParser
import Foundation
import Kernels
import ModelFormat
import MoERuntime

extension PMQ {
    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Generate text from a prompt (greedy by default) with the model's tokenizer.json."
        )

        @Option(help: ArgumentHelp("Hugging Face model directory.", valueName: "dir"))
        var model: String

        @Option(help: "Prompt text.")
        var prompt: String

        @Option(name: .customLong("max-new-tokens"), help: "Tokens to generate.")
        var maxNewTokens: Int = 64

        @Option(help: "Sampling temperature; 0 is greedy.")
        var temperature: Double = 0

        @Option(
            name: .customLong("top-p"),
            help: "Nucleus sampling: keep the smallest set of tokens with this much probability.")
        var topP: Double = 1

        @Option(help: "Random seed for sampling.")
        var seed: UInt64 = 0

        @OptionGroup var path: RuntimePathOptions

        func validate() throws {
            guard maxNewTokens >= 0 else { throw ValidationError("--max-new-tokens must be ≥ 0") }
            guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be ≥ 0") }
            guard topP > 0, topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
        }

        func run() throws {
            let loaded = try MoEModel(directory: model)
            if let bits = path.attentionWidth(for: loaded) {
                reportAttention(loaded.quantizeAttentionAndHead(bits: bits), bits)
            }
            let tokenizer = try BPETokenizer(path: (model as NSString).appendingPathComponent("tokenizer.json"))
            let ids = tokenizer.encode(prompt)
            guard !ids.isEmpty else { throw ValidationError("the prompt encodes to no tokens") }
            let output = try Kernels.$int8Activations.withValue(!path.exactActivations) {
                try Generation.run(
                    model: loaded, prompt: ids, maxNewTokens: maxNewTokens, temperature: temperature, topP: topP,
                    seed: seed)
            }
            print(prompt + tokenizer.decode(output.tokens))
            printError(
                String(
                    format: "prefill %d tokens %.0f tokens/s; decode %d tokens %.1f tokens/s",
                    ids.count, Double(ids.count) / max(output.prefillSeconds, 1e-9),
                    output.tokens.count, Double(output.tokens.count) / max(output.decodeSeconds, 1e-9)))
        }
    }
}
