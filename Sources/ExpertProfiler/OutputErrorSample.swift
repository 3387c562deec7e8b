import Foundation
import Calibration
import Kernels

/// An expert's real contribution error, measured on a sample of the tokens routed to it: the
/// layer's output gets `g_e(x) · E_e(x)`, so quantizing the expert adds `g · (Ê(x) − E(x))` to it.
/// `error` is the sample's mean of `g² ‖Ê(x) − E(x)‖²` scaled by the expert's share of the
/// layer's tokens: the expected squared error the expert adds to one token's MoE output. Summed
/// over a layer's experts it estimates the layer's output error (experts' errors are independent).
struct OutputErrorSample {
    let inputs: [Float]
    let weights: [Float]
    let count: Int
    /// Routed tokens / layer tokens: how often an expert's error lands on a token's output.
    let share: Double

    /// Nil when the profile has no sample for the expert (sampling off, or no token reached it).
    init?(_ statistics: ExpertStatistics, expert: Int) {
        let weights = statistics.sampleWeights[expert]
        guard statistics.sampleLimit > 0, !weights.isEmpty, statistics.tokensSeen > 0 else { return nil }
        self.inputs = statistics.sampleInputs[expert]
        self.weights = weights
        count = weights.count
        share = Double(statistics.frequency[expert]) / Double(statistics.tokensSeen)
    }

    /// `down(silu(gate(x)) ⊙ up(x))` for the sample, `linears` = [gate, up, down].
    func output(_ linears: [Matrix]) -> [Float] {
        Kernels.swiglu(inputs, tokens: count, gate: linears[0], up: linears[1], down: linears[2])
    }

    func error(_ output: [Float], reference: [Float]) -> Double {
        let hidden = output.count / count
        var total = 0.0
        for row in 0..<count {
            var squared = 0.0
            for column in 0..<hidden {
                let difference = Double(output[row * hidden + column] - reference[row * hidden + column])
                squared += difference * difference
            }
            total += Double(weights[row] * weights[row]) * squared
        }
        return share * total / Double(count)
    }
}
