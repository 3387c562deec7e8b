import Calibration
import Foundation
@testable import ModelFormat
@testable import MoERuntime
@testable import OTPTraining
import TestSupport
import Testing

/// OTP's `logits` target: squared distances of mapped expert outputs are the variance, under the
/// token's (top-m) next-token distribution, of the logit change the output change causes.
@Suite struct LogitFisherTests {
    @Test func mappedDistancesAreTheLogitChangeVariance() throws {
        let directory = TestFixtures.tiny.appendingPathComponent("mixtral").path
        let model = try MoEModel(directory: directory)
        let config = model.config
        let tokens = TestFixtures.calibrationTokens(vocab: config.vocabSize)
        let states = CalibrationWindows.embed(model: model, tokens: tokens, windows: 2, sequenceLength: 16)
        let fisher = try LogitFisher(model: model, states: states, sequenceLength: 16)
        let h = config.hiddenSize, k = 2, n = 32
        #expect(fisher.inverseRMS.count == n && fisher.top.count == n * h)
        var generator = SplitMix64(seed: 3)
        let outputs = (0..<(n * k * h)).map { _ in Float(generator.gaussian()) }
        let set = OTPTrainingSet(
            layer: 0, hiddenSize: h, slots: k, expertCount: config.expertCount,
            hidden: [Float](repeating: 0, count: n * h),
            probabilities: [Float](repeating: 0.5, count: n * k),
            experts: [Int32](repeating: 0, count: n * k).enumerated().map { Int32($0.offset % 2) },
            weights: [Float](repeating: 0.5, count: n * k), expertOutputs: outputs)
        let mapped = fisher.transform(set)
        let head = model.matrix(.lmHead).floats, g = model.weight(.finalNorm)
        for t in [0, 7, 31] {
            // δ = E_0 − 2·E_1 in hidden space, and its image.
            let delta = (0..<h).map { outputs[(t * k) * h + $0] - 2 * outputs[(t * k + 1) * h + $0] }
            let image = (0..<h).map {
                mapped.expertOutputs[(t * k) * h + $0] - 2 * mapped.expertOutputs[(t * k + 1) * h + $0]
            }
            let squared = image.reduce(0) { $0 + Double($1) * Double($1) }
            // Independent: logit change on the top-m entries, its variance under p.
            var mean = 0.0, second = 0.0
            for v in 0..<h {
                let p = Double(fisher.probabilities[t * h + v]), row = Int(fisher.top[t * h + v])
                var change = 0.0
                for i in 0..<h {
                    change += Double(head[row * h + i]) * Double(g[i]) * Double(fisher.inverseRMS[t]) * Double(delta[i])
                }
                mean += p * change
                second += p * change * change
            }
            let variance = second - mean * mean
            #expect(abs(squared - variance) <= 1e-4 * max(variance, 1e-6), "token \(t): \(squared) vs \(variance)")
        }
        #expect(abs(fisher.probabilities[0..<h].reduce(0, +) - 1) < 1e-5)
    }
}
