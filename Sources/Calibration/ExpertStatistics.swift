import Foundation
import ModelFormat
import MoERuntime
import Quantization

/// One MoE layer's routing statistics and per-expert Hessians, filled by the forward pass as it
/// watches the layer route calibration tokens (`CalibrationWindows.layerByLayer`): what the
/// profiler measures errors with and what the packer quantizes with.
public final class ExpertStatistics: RouterObserver {
    public let layer: Int
    public var frequency: [Int]
    public var mass: [Double]
    public var inputHessians: [HessianAccumulator]
    public var downHessians: [HessianAccumulator]
    private var pendingInput: [Float] = []

    public init(layer: Int, config: MoEModelConfig) {
        self.layer = layer
        frequency = Array(repeating: 0, count: config.expertCount)
        mass = Array(repeating: 0, count: config.expertCount)
        inputHessians = Array(repeating: HessianAccumulator(dimension: config.hiddenSize), count: config.expertCount)
        downHessians = Array(
            repeating: HessianAccumulator(dimension: config.expertIntermediateSize), count: config.expertCount)
    }

    public func moeInput(layer: Int, hidden: [Float], count: Int) {
        if layer == self.layer { pendingInput = hidden }
    }

    public func routed(layer: Int, token: Int, probabilities: [Float], experts chosen: [Int], weights: [Float]) {
        guard layer == self.layer else { return }
        for expert in chosen {
            frequency[expert] += 1
            mass[expert] += Double(probabilities[expert])
        }
    }

    /// The expert's Hessians (gate/up input, down input) in Double; an expert no token reached
    /// gets `H = I` (its error is then measured in weight space).
    public func hessians(expert: Int) -> (input: [Double], down: [Double]) {
        guard frequency[expert] > 0 else {
            return (Self.identity(inputHessians[expert].dimension), Self.identity(downHessians[expert].dimension))
        }
        return (inputHessians[expert].matrix, downHessians[expert].matrix)
    }

    public func expertActivations(layer: Int, expert: Int, tokens: [Int], activations: [Float]) {
        guard layer == self.layer else { return }
        inputHessians[expert].add(pendingInput, rows: tokens)
        downHessians[expert].add(activations)
    }

    static func identity(_ n: Int) -> [Double] {
        var h = [Double](repeating: 0, count: n * n)
        for i in 0..<n { h[i * n + i] = 1 }
        return h
    }
}
