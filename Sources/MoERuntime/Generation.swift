import Foundation
import ModelFormat

/// Text generation from a prompt's token ids: one prefill, then one token at a time, greedy
/// (temperature 0) or sampled with temperature and nucleus (top-p) sampling from a seeded generator.
public enum Generation {
    public struct Output: Sendable {
        /// The generated token ids (the prompt not included).
        public var tokens: [Int]
        public var prefillSeconds: Double
        public var decodeSeconds: Double
    }

    /// Generates up to `maxNewTokens` tokens after `prompt` (stops early at the model's
    /// `max_position_embeddings`).
    public static func run(
        model: MoEModel, prompt: [Int], maxNewTokens: Int, temperature: Double, topP: Double,
        seed: UInt64
    ) throws -> Output {
        let session = ForwardPass(model: model)
        let vocab = model.config.vocabSize
        var random = Sampler(seed: seed)
        let start = ContinuousClock.now
        var logits = try session.logits(prompt)
        let prefillSeconds = seconds(since: start)
        var generated: [Int] = []
        let decodeStart = ContinuousClock.now
        for _ in 0..<maxNewTokens {
            guard session.position < model.config.maxPositions else { break }
            let last = Array(logits[(logits.count - vocab)...])
            let next =
                temperature == 0
                ? Routing.topK(last, k: 1)[0] : random.sample(last, temperature: temperature, topP: topP)
            generated.append(next)
            logits = try session.logits([next])
        }
        return Output(tokens: generated, prefillSeconds: prefillSeconds, decodeSeconds: seconds(since: decodeStart))
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
