import Foundation
import Calibration
import ModelFormat
import Kernels
import MoERuntime

/// How much the model's loss grows when one MoE layer's experts are quantized: the exchange rate
/// between a layer's output-space GPTQ errors and the end-to-end loss, which the layer-local
/// errors alone do not give (an error early in the network passes through every later layer).
///
/// For each profiled layer l and width w, its experts are replaced by their GPTQ-dequantized
/// weights at w (every other layer float) and the calibration windows run through the whole
/// model: `ΔNLL_l(w)` = mean next-token NLL minus the float model's. Layer-major, so a lazy model
/// loads each layer once for all variants.
enum LayerSensitivity {
    struct Variant {
        var layer: Int
        var width: Int
        /// The layer's expert linears at `width`, by tensor role.
        var linears: [TensorRole: PackedLinear]
    }

    struct Measurement {
        var layer: Int
        var width: Int
        var deltaNLL: Double
    }

    static func measure(
        model: MoEModel, tokens: [Int], windows: Int, sequenceLength: Int,
        variants targets: [Variant],
        progress: (String, Int, Int) -> Void
    ) throws -> [Measurement] {
        let config = model.config
        let session = ForwardPass(model: model)
        let windowTokens = (0..<windows).map { Array(tokens[($0 * sequenceLength)..<(($0 + 1) * sequenceLength)]) }
        let start = CalibrationWindows.embed(
            model: model, tokens: tokens, windows: windows, sequenceLength: sequenceLength)
        // Variant 0 is the float model; variant v ≥ 1 quantizes targets[v − 1]. Before its own layer
        // a variant's states are the float model's, so it starts from them there instead of
        // running the earlier layers again (same numbers, about half the passes on average).
        var states = [[[Float]]](repeating: [], count: targets.count + 1)
        states[0] = start
        for layer in 0..<config.layerCount {
            try model.pin(layer: layer)
            defer { model.unpin(layer: layer) }
            for variant in 1..<states.count where targets[variant - 1].layer == layer { states[variant] = states[0] }
            for variant in states.indices where variant == 0 || targets[variant - 1].layer <= layer {
                var originals: [(TensorRole, Matrix)] = []
                if variant > 0, targets[variant - 1].layer == layer {
                    for (role, linear) in targets[variant - 1].linears {
                        originals.append((role, model.matrix(role)))
                        model.replace(
                            role,
                            with: Matrix(
                                rows: linear.outFeatures, columns: linear.inFeatures, floats: linear.dequantized()))
                    }
                }
                CalibrationWindows.forward(
                    session, layer: layer, states: &states[variant], sequenceLength: sequenceLength)
                for (role, matrix) in originals { model.replace(role, with: matrix) }
            }
            progress("layer sensitivity: layers run", layer + 1, config.layerCount)
        }
        var losses = [Double](repeating: 0, count: states.count)
        for variant in states.indices {
            for window in 0..<windows {
                let logits = session.outputLogits(states[variant][window], count: sequenceLength)
                losses[variant] += Evaluation.negativeLogLikelihood(
                    logits: logits, tokens: windowTokens[window], vocab: config.vocabSize)
            }
            losses[variant] /= Double(windows * (sequenceLength - 1))
        }
        return targets.enumerated().map {
            Measurement(layer: $1.layer, width: $1.width, deltaNLL: losses[$0 + 1] - losses[0])
        }
    }
}
