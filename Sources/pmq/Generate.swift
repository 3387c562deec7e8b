import ArgumentParser
import Foundation
import MoERuntime
import ModelFormat

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

        func validate() throws {
            guard maxNewTokens >= 0 else { throw ValidationError("--max-new-tokens must be ≥ 0") }
            guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be ≥ 0") }
            guard topP > 0, topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
        }

        func run() throws {
            let loaded = try MoEModel(directory: model)
            let tokenizer = try BPETokenizer(path: (model as NSString).appendingPathComponent("tokenizer.json"))
            var ids = tokenizer.encode(prompt)
            guard !ids.isEmpty else { throw ValidationError("the prompt encodes to no tokens") }
            let session = ForwardPass(model: loaded)
            let vocab = loaded.config.vocabSize
            var random = Sampler(seed: seed)
            let start = ContinuousClock.now
            var logits = try session.logits(ids)
            let prefillSeconds = seconds(since: start)
            var generated: [Int] = []
            let decodeStart = ContinuousClock.now
            for _ in 0..<maxNewTokens {
                guard session.position < loaded.config.maxPositions else { break }
                let last = Array(logits[(logits.count - vocab)...])
                let next =
                    temperature == 0
                    ? Routing.topK(last, k: 1)[0] : random.sample(last, temperature: temperature, topP: topP)
                generated.append(next)
                ids.append(next)
                logits = try session.logits([next])
            }
            let decodeSeconds = seconds(since: decodeStart)
            print(prompt + tokenizer.decode(generated))
            printError(
                String(
                    format: "prefill %d tokens %.0f tokens/s; decode %d tokens %.1f tokens/s",
                    ids.count - generated.count, Double(ids.count - generated.count) / max(prefillSeconds, 1e-9),
                    generated.count, Double(generated.count) / max(decodeSeconds, 1e-9)))
        }
    }
}

/// Temperature and nucleus sampling with a seeded generator.
struct Sampler {
    var random: SplitMix64
    init(seed: UInt64) { random = SplitMix64(seed: seed) }

    mutating func sample(_ logits: [Float], temperature: Double, topP: Double) -> Int {
        let peak = Double(logits.max()!)
        var probabilities = logits.map { exp((Double($0) - peak) / temperature) }
        let total = probabilities.reduce(0, +)
        probabilities = probabilities.map { $0 / total }
        let order = probabilities.indices.sorted { probabilities[$0] > probabilities[$1] }
        var kept: [Int] = []
        var mass = 0.0
        for index in order {
            kept.append(index)
            mass += probabilities[index]
            if mass >= topP { break }
        }
        var target = random.uniform() * mass
        for index in kept {
            target -= probabilities[index]
            if target <= 0 { return index }
        }
        return kept.last!
    }
}
