import Foundation
@testable import ModelFormat
@testable import MoERuntime
@testable import ExpertProfiler
import TestSupport
import Testing

/// Width 0 (removal): the profiler's removal error against the MoE block run with and without
/// the expert over every token of the layer, and the routing rule against plain top-k over the
/// remaining experts.
@Suite struct RemovalTests {
    final class Inputs: RouterObserver {
        var rows: [Int: [Float]] = [:]
        func moeInput(layer: Int, hidden x: [Float], count: Int) { rows[layer, default: []] += x }
        func routed(layer: Int, token: Int, probabilities: [Float], experts: [Int], weights: [Float]) {}
    }

    /// `share · mean over routed tokens of ‖Δ‖²` is `Σ over all tokens ‖Δ‖² / tokens`: the brute
    /// force runs the whole MoE block on every token with the expert removed and without.
    @Test(arguments: ["mixtral", "qwen2_moe", "deepseek_v3", "deepseek_v2"])
    func removalErrorIsTheMoEOutputChangeOverEveryToken(fixture: String) throws {
        let model = try MoEModel(directory: TestFixtures.tiny.appendingPathComponent(fixture).path)
        let config = model.config
        let ids = TestFixtures.calibrationTokens(vocab: config.vocabSize)
        let profile = try Profiler(
            model: model,
            options: .init(
                widths: [0, 2], groupSize: 16, sequenceLength: ids.count, samples: 1, sensitivityWindows: 0,
                outputSamples: 10_000)
        )
        .run(tokens: ids, description: "fixture")
        #expect(profile.model.topK == config.routing.topK && profile.widths == [0, 2])
        let inputs = Inputs()
        let session = ForwardPass(model: model, observer: inputs)
        _ = try session.logits(ids)
        for layer in profile.layers {
            let x = inputs.rows[layer.index]!
            let before = session.moe(x, count: ids.count, layer: layer.index)
            for expert in layer.experts {
                model.removedExperts = [layer.index: [expert.index]]
                let after = session.moe(x, count: ids.count, layer: layer.index)
                model.removedExperts = [:]
                let expected =
                    zip(before, after).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
                    / Double(ids.count)
                // An expert no calibration token reached has no sample: removing it changes nothing.
                let measured = expert.outputError?[0] ?? 0
                #expect(
                    abs(measured - expected) <= 1e-4 * expected + 1e-9,
                    "layer \(layer.index) expert \(expert.index): \(measured) vs \(expected)")
                #expect(expert.bytes[0] == 0 && (expert.error[0] ?? 0) >= (expert.error[2] ?? .infinity))
            }
        }
    }

    /// A removed expert is never chosen; the choice is the top-k of the remaining scores, which
    /// stay what the router computed; the weights follow the architecture.
    @Test func routingSkipsRemovedExpertsAndKeepsTheScores() {
        var generator = TestGenerator(state: 3)
        for normalize in [false, true] {
            let rule = RoutingRule(topK: 3, normalizeTopK: normalize)
            for _ in 0..<50 {
                let logits = (0..<8).map { _ in generator.float() * 3 }
                let removed = (0..<8).map { _ in generator.int(3) == 0 }
                guard removed.filter({ !$0 }).count >= 3 else { continue }
                let plain = Routing.route(logits[...], rule: rule)
                let masked = Routing.route(logits[...], rule: rule, removed: removed)
                #expect(masked.scores == plain.scores)
                let remaining = (0..<8).filter { !removed[$0] }.sorted { plain.scores[$0] > plain.scores[$1] }
                #expect(masked.experts == Array(remaining.prefix(3)))
                let raw = masked.experts.map { plain.scores[$0] }
                let total = raw.reduce(0, +)
                #expect(masked.weights == (normalize ? raw.map { $0 / total } : raw))
            }
        }
    }
}
