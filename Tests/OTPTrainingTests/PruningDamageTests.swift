import Foundation
import Calibration
@testable import MoERuntime
@testable import OTPTraining
import TestSupport
import Testing

/// The measured damage of one expert drop equals a plain forward pass in which only that drop
/// happens: a token's own next-token prediction depends on nothing after it, so the per-token
/// counterfactual is exact for it.
@Suite struct PruningDamageTests {
    /// Drops slot `slot` of token `token` at `layer`, nothing else.
    final class SingleDrop: ExpertPruner {
        let layer: Int, token: Int, slot: Int
        var seen = 0
        init(layer: Int, token: Int, slot: Int) { (self.layer, self.token, self.slot) = (layer, token, slot) }
        func keep(
            layer: Int, hidden: UnsafeBufferPointer<Float>, probabilities: [Float], experts: [Int], weights: [Float]
        ) -> [Bool] {
            guard layer == self.layer else { return experts.map { _ in true } }
            defer { seen += 1 }
            return experts.indices.map { !(seen == token && $0 == slot) }
        }
    }

    static func logProbabilities(_ model: MoEModel, _ tokens: [Int], pruner: ExpertPruner?) throws -> [Float] {
        let session = ForwardPass(model: model)
        session.pruner = pruner
        return PruningDamage.logSoftmax(try session.logits(tokens), vocab: model.config.vocabSize)
    }

    @Test(arguments: ["mixtral", "qwen2_moe"])
    func damageEqualsAForwardPassWithThatOneDrop(architecture: String) throws {
        let model = try MoEModel(directory: TestFixtures.tiny.appendingPathComponent(architecture).path)
        let config = model.config
        let (n, windows, vocab, k) = (9, 3, config.vocabSize, config.routing.topK)
        let tokens = (0..<(n * windows + 1)).map { ($0 * 11 + 5) % vocab }
        let states = CalibrationWindows.embed(model: model, tokens: tokens, windows: windows, sequenceLength: n)
        let nll = try PruningDamage.measure(
            model: model, states: states, sequenceLength: n, measure: .nll(tokens: tokens)
        ) { _, _, _ in }
        let kl = try PruningDamage.measure(model: model, states: states, sequenceLength: n, measure: .kl) { _, _, _ in }
        let moeLayers = (0..<config.layerCount).filter { config.moeLayers[$0] }
        #expect(Set(nll.keys) == Set(moeLayers) && Set(kl.keys) == Set(moeLayers))
        // `expected`'s measure: the KL as damage and the ΔNLL as budget damage, from the same passes.
        let both = try PruningDamage.measure(
            model: model, states: states, sequenceLength: n, measure: .both(tokens: tokens)
        ) { _, _, _ in }
        for layer in moeLayers {
            #expect(both[layer]!.damage == kl[layer]!.damage && both[layer]!.budgetDamage == nll[layer]!.damage)
            #expect(kl[layer]!.budgetDamage == nil)
        }
        var nonzero = 0
        for window in 0..<windows {
            let ids = Array(tokens[(window * n)..<((window + 1) * n)])
            let full = try Self.logProbabilities(model, ids, pruner: nil)
            for layer in moeLayers {
                for t in [0, 4, n - 1] {
                    for slot in 1..<k {
                        let dropped = try Self.logProbabilities(
                            model, ids, pruner: SingleDrop(layer: layer, token: t, slot: slot))
                        let next = tokens[window * n + t + 1]
                        let expectedNLL = full[t * vocab + next] - dropped[t * vocab + next]
                        let expectedKL = PruningDamage.klDivergence(full, dropped, row: t, vocab: vocab)
                        let index = (window * n + t) * (k - 1) + slot - 1
                        #expect(
                            abs(nll[layer]!.damage![index] - expectedNLL) <= 1e-4,
                            "layer \(layer) window \(window) token \(t) slot \(slot)")
                        #expect(abs(kl[layer]!.damage![index] - expectedKL) <= 1e-4 * max(1, expectedKL))
                        if abs(expectedNLL) > 1e-4 { nonzero += 1 }
                    }
                }
            }
        }
        #expect(nonzero > 0, "some drop must change the likelihood")
    }

    /// A position whose next token is not in the file gets no damage.
    @Test func lastPositionWithoutANextTokenIsZero() throws {
        let model = try MoEModel(directory: TestFixtures.tiny.appendingPathComponent("mixtral").path)
        let n = 8
        let tokens = (0..<n).map { ($0 * 5 + 1) % model.config.vocabSize }
        let states = CalibrationWindows.embed(model: model, tokens: tokens, windows: 1, sequenceLength: n)
        let sets = try PruningDamage.measure(
            model: model, states: states, sequenceLength: n, measure: .nll(tokens: tokens)
        ) { _, _, _ in }
        for set in sets.values { #expect(set.damage!.last == 0 && set.damage!.count == n * (set.slots - 1)) }
    }
}

/// The probe at rate 1 is the model with every token's extra experts dropped in one layer.
@Suite struct RandomDropProbeTests {
    final class TopOneAt: ExpertPruner {
        let layer: Int
        init(layer: Int) { self.layer = layer }
        func keep(
            layer: Int, hidden: UnsafeBufferPointer<Float>, probabilities: [Float], experts: [Int], weights: [Float]
        ) -> [Bool] {
            experts.indices.map { $0 == 0 || layer != self.layer }
        }
    }

    @Test func rateOneEqualsDroppingEveryTokensExtraExperts() throws {
        let model = try MoEModel(directory: TestFixtures.tiny.appendingPathComponent("mixtral").path)
        let (n, vocab) = (10, model.config.vocabSize)
        let tokens = (0..<(2 * n)).map { ($0 * 13 + 2) % vocab }
        let probe = try RandomDropProbe.run(
            model: model, tokens: tokens, samples: 2, sequenceLength: n, rate: 1, seed: 3)
        #expect(probe.map(\.layer) == [0, 1])
        for result in probe {
            #expect(result.drops == 2 * n && result.positions == 2 * n)
            var kl = 0.0, nll = 0.0
            for window in 0..<2 {
                let ids = Array(tokens[(window * n)..<((window + 1) * n)])
                let full = try PruningDamageTests.logProbabilities(model, ids, pruner: nil)
                let dropped = try PruningDamageTests.logProbabilities(model, ids, pruner: TopOneAt(layer: result.layer))
                for t in 0..<n {
                    kl += Double(PruningDamage.klDivergence(full, dropped, row: t, vocab: vocab))
                    let next = window * n + t + 1
                    if next < tokens.count {
                        nll += Double(full[t * vocab + tokens[next]] - dropped[t * vocab + tokens[next]])
                    }
                }
            }
            #expect(abs(result.meanKL - kl / Double(2 * n)) <= 1e-5)
            #expect(abs(result.meanDeltaNLL - nll / Double(2 * n - 1)) <= 1e-5)
            #expect(result.meanKL > 0)
        }
    }
}
