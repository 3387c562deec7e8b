import Foundation
import ModelFormat
import MoERuntime
import QuantEngine

/// Quantizes a whole model's experts at the widths of an allocation plan, layer by layer as GPTQ
/// does: the calibration windows' hidden states go through one layer at a time; that layer's
/// per-expert Hessians are gathered (gate/up from the tokens routed to the expert, down from its
/// own activations), each expert linear is GPTQ-quantized and packed, and — by default — the
/// layer's dequantized experts are installed before the windows go on, so every later layer is
/// calibrated on the output of the quantized layers before it (AutoGPTQ's sequential mode).
public struct ModelQuantizer {
    public struct Options: Sendable {
        public var sequenceLength: Int
        public var samples: Int
        public var dampening: Double
        public var actOrder: Bool
        public var clipSearch: Bool
        /// Feed later layers the quantized layers' output (true) or the float model's (false).
        public var propagateQuantized: Bool
        public init(sequenceLength: Int = 512, samples: Int = 128, dampening: Double = 0.01, actOrder: Bool = false,
                    clipSearch: Bool = false, propagateQuantized: Bool = true) {
            self.sequenceLength = sequenceLength
            self.samples = samples
            self.dampening = dampening
            self.actOrder = actOrder
            self.clipSearch = clipSearch
            self.propagateQuantized = propagateQuantized
        }
    }

    /// Every expert linear, packed, by module name (`model.layers.0.block_sparse_moe.experts.3.w1`).
    public struct Output {
        public var linears: [String: PackedLinear]
        /// Per layer: Σ over its experts' linears of `tr((W − Q) H (W − Q)ᵀ)`.
        public var layerErrors: [Int: Double]
        public var calibrationTokens: Int
        public var seconds: Double
    }

    public let model: FloatModel
    public let options: Options

    public init(model: FloatModel, options: Options) {
        self.model = model
        self.options = options
    }

    /// `progress(stage, done, total)`.
    public func run(tokens: [Int], plan: AllocationPlan, progress: (String, Int, Int) -> Void = { _, _, _ in }) throws -> Output {
        let start = ContinuousClock.now
        let config = model.config
        let windows = try CalibrationWindows.count(tokens: tokens, samples: options.samples, sequenceLength: options.sequenceLength)
        let session = FloatForward(model: model)
        var states = CalibrationWindows.embed(model: model, tokens: tokens, windows: windows, sequenceLength: options.sequenceLength)
        let gptq = GPTQ(options: .init(groupSize: plan.groupSize, blockSize: 128, dampening: options.dampening,
                                       actOrder: options.actOrder, clipSearch: options.clipSearch))
        var linears: [String: PackedLinear] = [:]
        var layerErrors: [Int: Double] = [:]
        for layer in 0..<config.layerCount {
            try model.pin(layer: layer)
            defer { model.unpin(layer: layer) }
            guard config.moeLayers[layer] else {
                CalibrationWindows.forward(session, layer: layer, states: &states, sequenceLength: options.sequenceLength)
                continue
            }
            let inputs = options.propagateQuantized ? states : []
            let statistics = Profiler.LayerStatistics(layer: layer, config: config)
            session.observer = statistics
            CalibrationWindows.forward(session, layer: layer, states: &states, sequenceLength: options.sequenceLength) {
                progress("layer \(layer): calibration windows", $0 + 1, windows)
            }
            session.observer = nil
            var error = 0.0
            for expert in 0..<config.expertCount {
                let bits = plan.widths[layer]![expert]!
                let reached = statistics.frequency[expert] > 0
                let inputH = reached ? statistics.inputHessians[expert].matrix : Profiler.identity(config.hiddenSize)
                let downH = reached ? statistics.downHessians[expert].matrix : Profiler.identity(config.expertIntermediateSize)
                let roles: [(TensorRole, [Double])] = [(.expertGate(layer: layer, expert: expert), inputH),
                                                       (.expertUp(layer: layer, expert: expert), inputH),
                                                       (.expertDown(layer: layer, expert: expert), downH)]
                for (role, hessian) in roles {
                    let weight = model.matrix(role)
                    let result = try gptq.quantize(weight: weight.floats, rows: weight.rows, columns: weight.columns, hessian: hessian, bits: bits)
                    let packed = PackedLinear(packing: result, rows: weight.rows, columns: weight.columns, bits: bits, groupSize: plan.groupSize)
                    let name = model.tensorName(role)
                    linears[name.hasSuffix(".weight") ? String(name.dropLast(7)) : name] = packed
                    error += result.error
                    if options.propagateQuantized {
                        model.replace(role, with: Matrix(rows: weight.rows, columns: weight.columns, floats: packed.dequantized()))
                    }
                }
                progress("layer \(layer): experts quantized", expert + 1, config.expertCount)
            }
            layerErrors[layer] = error
            if options.propagateQuantized {
                states = inputs
                CalibrationWindows.forward(session, layer: layer, states: &states, sequenceLength: options.sequenceLength)
            }
        }
        return Output(linears: linears, layerErrors: layerErrors, calibrationTokens: windows * options.sequenceLength,
                      seconds: seconds(since: start))
    }
}

/// The calibration windows every layer-by-layer pass starts from.
enum CalibrationWindows {
    /// Runs every window's hidden states through one decoder layer (each window its own sequence);
    /// `each(window)` after each.
    static func forward(_ session: FloatForward, layer: Int, states: inout [[Float]], sequenceLength: Int,
                        each: (Int) -> Void = { _ in }) {
        for window in states.indices {
            session.reset()
            session.forwardLayer(layer, &states[window], count: sequenceLength)
            each(window)
        }
    }

    static func count(tokens: [Int], samples: Int, sequenceLength: Int) throws -> Int {
        let windows = min(samples, tokens.count / sequenceLength)
        guard windows >= 1 else {
            throw ModelFormatError(file: "calibration tokens", "\(tokens.count) tokens are fewer than one window of --seq-len \(sequenceLength)")
        }
        return windows
    }

    /// The windows' token embeddings, `[windows][sequenceLength · hidden]`.
    static func embed(model: FloatModel, tokens: [Int], windows: Int, sequenceLength: Int) -> [[Float]] {
        let embeddings = model.matrix(.embeddings)
        return (0..<windows).map { window in
            tokens[(window * sequenceLength)..<((window + 1) * sequenceLength)].flatMap { embeddings.row($0) }
        }
    }
}
