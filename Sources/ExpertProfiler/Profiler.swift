import Foundation
import ModelFormat
import MoERuntime
import QuantEngine

/// The calibration run: routing statistics and, per expert and candidate width, the GPTQ output
/// error `tr((W − Q) H (W − Q)ᵀ)` of its gate, up and down projections with Hessians built from
/// the tokens routed to it (the down projection from that expert's own activations).
public struct Profiler {
    public struct Options: Sendable {
        public var widths: [Int]
        public var groupSize: Int
        public var sequenceLength: Int
        public var samples: Int
        public var dampening: Double
        public init(widths: [Int] = [1, 2, 3], groupSize: Int = 128, sequenceLength: Int = 512, samples: Int = 128, dampening: Double = 0.01) {
            self.widths = widths
            self.groupSize = groupSize
            self.sequenceLength = sequenceLength
            self.samples = samples
            self.dampening = dampening
        }
    }

    /// Per-layer routing statistics and Hessians, filled by the forward pass.
    final class Statistics: RouterObserver {
        let layers: Int, experts: Int
        var frequency: [[Int]]
        var mass: [[Double]]
        var inputHessians: [[HessianAccumulator]]
        var downHessians: [[HessianAccumulator]]
        private var pendingInput: [Int: [Float]] = [:]

        init(config: MoEModelConfig) {
            layers = config.layerCount
            experts = config.expertCount
            frequency = Array(repeating: Array(repeating: 0, count: experts), count: layers)
            mass = Array(repeating: Array(repeating: 0, count: experts), count: layers)
            inputHessians = Array(repeating: Array(repeating: HessianAccumulator(dimension: config.hiddenSize), count: experts), count: layers)
            downHessians = Array(repeating: Array(repeating: HessianAccumulator(dimension: config.expertIntermediateSize), count: experts), count: layers)
        }

        func moeInput(layer: Int, hidden: [Float], count: Int) {
            pendingInput[layer] = hidden
        }

        func routed(layer: Int, token: Int, probabilities: [Float], experts chosen: [Int], weights: [Float]) {
            for expert in chosen {
                frequency[layer][expert] += 1
                mass[layer][expert] += Double(probabilities[expert])
            }
        }

        func expertActivations(layer: Int, expert: Int, tokens: [Int], activations: [Float]) {
            if let input = pendingInput[layer] { inputHessians[layer][expert].add(input, rows: tokens) }
            downHessians[layer][expert].add(activations)
        }
    }

    public let model: FloatModel
    public let options: Options

    public init(model: FloatModel, options: Options) {
        self.model = model
        self.options = options
    }

    /// Runs the calibration windows and measures every expert; `progress(stage, done, total)`.
    public func run(tokens: [Int], description: String, progress: (String, Int, Int) -> Void = { _, _, _ in }) throws -> ProfileDocument {
        let config = model.config
        let statistics = Statistics(config: config)
        let session = FloatForward(model: model, observer: statistics)
        let windows = min(options.samples, tokens.count / options.sequenceLength)
        guard windows >= 1 else {
            throw ModelFormatError(file: "calibration tokens", "\(tokens.count) tokens are fewer than one window of --seq-len \(options.sequenceLength)")
        }
        for window in 0..<windows {
            session.reset()
            let start = window * options.sequenceLength
            _ = try session.logits(Array(tokens[start..<(start + options.sequenceLength)]))
            progress("calibration windows", window + 1, windows)
        }
        var layers: [ProfileDocument.Layer] = []
        let gptq = GPTQ(options: .init(groupSize: options.groupSize, blockSize: 128, dampening: options.dampening))
        let hidden = config.hiddenSize, width = config.expertIntermediateSize
        let moeLayers = (0..<config.layerCount).filter { config.moeLayers[$0] }
        var done = 0
        for layer in moeLayers {
            var experts: [ProfileDocument.Expert] = []
            for expert in 0..<config.expertCount {
                let reached = statistics.frequency[layer][expert] > 0
                let inputH = reached ? statistics.inputHessians[layer][expert].matrix : Self.identity(hidden)
                let downH = reached ? statistics.downHessians[layer][expert].matrix : Self.identity(width)
                let gate = model.matrix(.expertGate(layer: layer, expert: expert)).floats
                let up = model.matrix(.expertUp(layer: layer, expert: expert)).floats
                let down = model.matrix(.expertDown(layer: layer, expert: expert)).floats
                var errors: [(width: Int, value: Double)] = []
                var bytes: [(width: Int, value: Int64)] = []
                for bits in options.widths {
                    let e = try gptq.quantize(weight: gate, rows: width, columns: hidden, hessian: inputH, bits: bits).error
                        + gptq.quantize(weight: up, rows: width, columns: hidden, hessian: inputH, bits: bits).error
                        + gptq.quantize(weight: down, rows: hidden, columns: width, hessian: downH, bits: bits).error
                    errors.append((bits, max(0, e)))
                    bytes.append((bits, PackedLayout.expertBytes(hidden: hidden, intermediate: width, bits: bits, groupSize: options.groupSize)))
                }
                experts.append(ProfileDocument.Expert(
                    index: expert, params: 3 * Int64(hidden) * Int64(width),
                    freq: Double(statistics.frequency[layer][expert]), mass: statistics.mass[layer][expert],
                    error: WidthMap(errors), bytes: WidthMap(bytes), tokens: statistics.frequency[layer][expert],
                    note: reached ? nil : "no calibration token reached this expert: error measured with H = I (weight space)"))
                done += 1
                progress("experts quantized", done, moeLayers.count * config.expertCount)
            }
            layers.append(ProfileDocument.Layer(index: layer, experts: experts))
        }
        let name = URL(fileURLWithPath: model.directory).lastPathComponent
        return ProfileDocument(model: .init(name: name, architecture: config.architecture.rawValue),
                               calibration: .init(tokens: windows * options.sequenceLength, description: description),
                               widths: options.widths.sorted(), groupSize: options.groupSize, layers: layers)
    }

    static func identity(_ n: Int) -> [Double] {
        var h = [Double](repeating: 0, count: n * n)
        for i in 0..<n { h[i * n + i] = 1 }
        return h
    }
}
