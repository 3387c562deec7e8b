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
    /// `[token * experts + expert]`: the current chunk's routing weights (0 where not chosen).
    private var pendingWeights: [Float] = []
    private let expertCount: Int
    private let hiddenSize: Int
    /// Tokens this layer routed (each counted once, whatever its top-k).
    public private(set) var tokensSeen = 0
    /// A uniform sample (reservoir) of each expert's routed tokens, at most `sampleLimit` of them:
    /// `sampleInputs[e]` holds their MoE inputs `[n, hidden]`, `sampleWeights[e]` the weights their
    /// outputs were summed with. The profiler measures each expert's real output error on them.
    public let sampleLimit: Int
    public private(set) var sampleInputs: [[Float]]
    public private(set) var sampleWeights: [[Float]]
    private var random: SplitMix64

    public init(layer: Int, config: MoEModelConfig, sampleLimit: Int = 0) {
        self.layer = layer
        expertCount = config.expertCount
        hiddenSize = config.hiddenSize
        self.sampleLimit = sampleLimit
        sampleInputs = Array(repeating: [], count: config.expertCount)
        sampleWeights = Array(repeating: [], count: config.expertCount)
        random = SplitMix64(seed: 0x5EED_0000 &+ UInt64(layer))
        frequency = Array(repeating: 0, count: config.expertCount)
        mass = Array(repeating: 0, count: config.expertCount)
        inputHessians = Array(repeating: HessianAccumulator(dimension: config.hiddenSize), count: config.expertCount)
        downHessians = Array(
            repeating: HessianAccumulator(dimension: config.expertIntermediateSize), count: config.expertCount)
    }

    public func moeInput(layer: Int, hidden: [Float], count: Int) {
        guard layer == self.layer else { return }
        pendingInput = hidden
        tokensSeen += count
        if sampleLimit > 0 { pendingWeights = [Float](repeating: 0, count: count * expertCount) }
    }

    public func routed(layer: Int, token: Int, probabilities: [Float], experts chosen: [Int], weights: [Float]) {
        guard layer == self.layer else { return }
        for (expert, weight) in zip(chosen, weights) {
            frequency[expert] += 1
            mass[expert] += Double(probabilities[expert])
            if sampleLimit > 0 { pendingWeights[token * expertCount + expert] = weight }
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
        guard sampleLimit > 0 else { return }
        // Reservoir sampling: after n tokens, each is in the sample with probability limit / n.
        let seenBefore = frequency[expert] - tokens.count
        for (offset, token) in tokens.enumerated() {
            let seen = seenBefore + offset + 1
            let slot = seen <= sampleLimit ? seen - 1 : random.below(seen)
            guard slot < sampleLimit else { continue }
            let row = pendingInput[(token * hiddenSize)..<((token + 1) * hiddenSize)]
            let weight = pendingWeights[token * expertCount + expert]
            if slot == sampleWeights[expert].count {
                sampleInputs[expert].append(contentsOf: row)
                sampleWeights[expert].append(weight)
            } else {
                sampleInputs[expert].replaceSubrange((slot * hiddenSize)..<((slot + 1) * hiddenSize), with: row)
                sampleWeights[expert][slot] = weight
            }
        }
    }

    static func identity(_ n: Int) -> [Double] {
        var h = [Double](repeating: 0, count: n * n)
        for i in 0..<n { h[i * n + i] = 1 }
        return h
    }
}
