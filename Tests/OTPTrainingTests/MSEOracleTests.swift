import Foundation
@testable import MoERuntime
@testable import OTPTraining
import TestSupport
import Testing

@Suite struct MSEOracleTests {
    static let fixtures = TestFixtures.tiny

    @Test func mseOracleDropsWhatCostsLeast() throws {
        // Two tokens, top-2, H = 2: dropping slot 1 moves token 0's output by a lot, token 1's by little.
        let set = OTPTrainingSet(
            layer: 0, hiddenSize: 2, slots: 2, expertCount: 3, hidden: [0, 0, 0, 0],
            probabilities: [0.5, 0.4, 0.5, 0.4], experts: [0, 1, 0, 2], weights: [0.5, 0.5, 0.5, 0.5],
            expertOutputs: [1, 0, -1, 0, /* token 1 */ 1, 0, 0.9, 0])
        let errors = MSEOraclePruner.dropErrors(set: set)
        // Token 0: y_full = 0, without slot 1: E_0 (rescaled weight 1) = (1, 0) → 1. Token 1: (0.95,0) vs (1,0) →
        // 0.0025.
        #expect(abs(errors[0] - 1) < 1e-6 && abs(errors[1] - 0.0025) < 1e-6)
        let threshold = MSEOraclePruner.calibrateThreshold(set: set, keep: 0.75)
        #expect(threshold > 0.0025 && threshold < 1)
        #expect(MSEOraclePruner.calibrateThreshold(set: set, keep: 1) == 0)
        #expect(MSEOraclePruner.calibrateThreshold(set: set, keep: 0.5) == .infinity)
        // In the forward pass: an infinite threshold is top-1 routing, zero keeps every expert.
        let model = try MoEModel(directory: Self.fixtures.appendingPathComponent("mixtral").path)
        let ids = Array(0..<12).map { ($0 * 7 + 3) % model.config.vocabSize }
        let session = ForwardPass(model: model)
        session.pruner = MSEOraclePruner(model: model, thresholds: [0: .infinity, 1: 0])
        _ = try session.logits(ids)
        #expect(session.expertsRun == [ids.count, 2 * ids.count])
    }
}
