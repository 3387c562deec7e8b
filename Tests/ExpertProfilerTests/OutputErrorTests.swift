import Foundation
import Calibration
@testable import ModelFormat
@testable import MoERuntime
@testable import ExpertProfiler
import TestSupport
import Testing

/// `outputError`: each expert's routing-weighted output error, against a brute-force sum over every
/// routed token with plain loops (no kernels), and the reservoir sample it is measured on.
@Suite struct OutputErrorTests {
    /// Layer 0's MoE inputs and routing, as the forward pass produces them.
    final class Recorder: RouterObserver {
        var inputs: [[Float]] = []
        var routes: [(token: Int, experts: [Int], weights: [Float])] = []
        let hidden: Int
        init(hidden: Int) { self.hidden = hidden }
        func moeInput(layer: Int, hidden x: [Float], count: Int) {
            guard layer == 0 else { return }
            for t in 0..<count { inputs.append(Array(x[(t * hidden)..<((t + 1) * hidden)])) }
        }
        func routed(layer: Int, token: Int, probabilities: [Float], experts: [Int], weights: [Float]) {
            if layer == 0 { routes.append((token, experts, weights)) }
        }
    }

    static func expertOutput(_ x: [Float], gate: [Float], up: [Float], down: [Float], width: Int) -> [Double] {
        let hidden = x.count
        var activations = [Double](repeating: 0, count: width)
        for j in 0..<width {
            var g = 0.0, u = 0.0
            for i in 0..<hidden {
                g += Double(gate[j * hidden + i]) * Double(x[i])
                u += Double(up[j * hidden + i]) * Double(x[i])
            }
            activations[j] = g / (1 + exp(-g)) * u
        }
        return (0..<hidden).map { i in (0..<width).reduce(0.0) { $0 + Double(down[i * width + $1]) * activations[$1] } }
    }

    @Test func matchesABruteForceSumOverEveryRoutedToken() throws {
        let directory = TestFixtures.tiny.appendingPathComponent("mixtral").path
        let model = try MoEModel(directory: directory)
        let config = model.config
        let ids = TestFixtures.calibrationTokens(vocab: config.vocabSize)
        var quantized: [TensorRole: [Int: [Float]]] = [:]
        let profile = try Profiler(
            model: model,
            options: .init(
                widths: [2, 4], groupSize: 16, sequenceLength: ids.count, samples: 1, sensitivityWindows: 0,
                outputSamples: 10_000)
        )
        .run(tokens: ids, description: "fixture", quantized: { quantized[$0, default: [:]][$1] = $2 })
        let recorder = Recorder(hidden: config.hiddenSize)
        _ = try ForwardPass(model: model, observer: recorder).logits(ids)
        let width = config.expertIntermediateSize
        for expert in 0..<config.expertCount {
            let roles = TensorRole.expertLinears(layer: 0, expert: expert)
            let float = roles.map { model.matrix($0).floats }
            for bits in [2, 4] {
                let q = roles.map { quantized[$0]![bits]! }
                var total = 0.0
                for route in recorder.routes {
                    guard let slot = route.experts.firstIndex(of: expert) else { continue }
                    let x = recorder.inputs[route.token]
                    let exact = Self.expertOutput(x, gate: float[0], up: float[1], down: float[2], width: width)
                    let approx = Self.expertOutput(x, gate: q[0], up: q[1], down: q[2], width: width)
                    let g = Double(route.weights[slot])
                    total += g * g * zip(exact, approx).reduce(0.0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
                }
                let expected = total / Double(ids.count)
                let measured = profile.layers[0].experts[expert].outputError?[bits]
                #expect(measured != nil)
                #expect(
                    abs((measured ?? 0) - expected) <= 1e-3 * expected + 1e-12,
                    "expert \(expert), \(bits) bits: \(measured ?? -1) vs \(expected)")
            }
        }
    }

    /// The reservoir holds min(limit, routed) of the expert's own routed tokens, with their weights.
    @Test func reservoirHoldsRoutedTokensWithTheirWeights() throws {
        let directory = TestFixtures.tiny.appendingPathComponent("mixtral").path
        let model = try MoEModel(directory: directory)
        let config = model.config
        let ids = TestFixtures.calibrationTokens(vocab: config.vocabSize)
        let statistics = ExpertStatistics(layer: 0, config: config, sampleLimit: 5)
        _ = try ForwardPass(model: model, observer: statistics).logits(ids)
        let recorder = Recorder(hidden: config.hiddenSize)
        _ = try ForwardPass(model: model, observer: recorder).logits(ids)
        #expect(statistics.tokensSeen == ids.count)
        let hidden = config.hiddenSize
        for expert in 0..<config.expertCount {
            let routed = recorder.routes.compactMap { route -> ([Float], Float)? in
                guard let slot = route.experts.firstIndex(of: expert) else { return nil }
                return (recorder.inputs[route.token], route.weights[slot])
            }
            let weights = statistics.sampleWeights[expert]
            #expect(weights.count == min(5, routed.count))
            #expect(statistics.frequency[expert] == routed.count)
            for (row, weight) in weights.enumerated() {
                let input = Array(statistics.sampleInputs[expert][(row * hidden)..<((row + 1) * hidden)])
                #expect(routed.contains { $0.0 == input && $0.1 == weight }, "expert \(expert) sample \(row)")
            }
        }
    }
}
