import Foundation
import Kernels
import ModelFormat
import MoERuntime
import Testing
import TestSupport

@testable import FrontEvaluation

/// The held-out scorer against a slow, obviously right reference: both models' logits in full,
/// KL(p ‖ q) summed in Double over the whole vocabulary.
@Suite struct HeldOutScorerTests {
    static func reference(_ float: MoEModel, _ other: MoEModel, tokens: [Int], sequenceLength: Int) throws
        -> (nll: Double, kl: Double)
    {
        let vocab = float.config.vocabSize
        var nll = 0.0, kl = 0.0, count = 0
        var offset = 0
        while offset + 1 < tokens.count {
            let window = Array(tokens[offset..<min(offset + sequenceLength, tokens.count)])
            offset += window.count
            let p = try ForwardPass(model: float).logits(window), q = try ForwardPass(model: other).logits(window)
            for t in 0..<(window.count - 1) {
                func logSoftmax(_ logits: [Float]) -> [Double] {
                    let row = logits[(t * vocab)..<((t + 1) * vocab)].map(Double.init)
                    let peak = row.max()!
                    let logZ = peak + Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - peak) })
                    return row.map { $0 - logZ }
                }
                let lp = logSoftmax(p), lq = logSoftmax(q)
                nll -= lq[window[t + 1]]
                kl += zip(lp, lq).reduce(0) { $0 + Foundation.exp($1.0) * ($1.0 - $1.1) }
                count += 1
            }
        }
        return (nll / Double(count), kl / Double(count))
    }

    @Test func perplexityAndKLMatchTheFullPrecisionReference() throws {
        let path = TestFixtures.tiny.appendingPathComponent("mixtral").path
        let float = try MoEModel(directory: path), other = try MoEModel(directory: path)
        // A damaged copy: one layer's experts scaled, so that the distributions differ visibly.
        for expert in 0..<other.config.expertCount {
            let role = TensorRole.expertDown(layer: 0, expert: expert)
            let matrix = other.matrix(role)
            other.replace(
                role, with: Matrix(rows: matrix.rows, columns: matrix.columns, floats: matrix.floats.map { $0 * 2.5 }))
        }
        let tokens = (0..<150).map { ($0 * 29 + 7) % float.config.vocabSize }
        let scorer = HeldOutScorer(tokens: tokens, sequenceLength: 32, vocab: float.config.vocabSize)
        try scorer.recordFloat(model: float)
        #expect(scorer.predicted == 145)
        let same = try scorer.score(model: float)
        #expect(same.meanKL < 1e-6, "KL of the float model to itself: \(same.meanKL)")
        #expect(abs(same.negativeLogLikelihood - scorer.floatNegativeLogLikelihood) < 1e-12)
        let scored = try scorer.score(model: other)
        let expected = try Self.reference(float, other, tokens: tokens, sequenceLength: 32)
        #expect(expected.kl > 1e-3, "the damage must show: \(expected.kl)")
        #expect(abs(scored.negativeLogLikelihood - expected.nll) < 1e-5 * expected.nll)
        #expect(abs(scored.meanKL - expected.kl) < 2e-3 * expected.kl + 1e-6, "\(scored.meanKL) vs \(expected.kl)")
    }
}
