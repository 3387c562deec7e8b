import Foundation
import ModelFormat
import Calibration
import Kernels
import Quantization
import MoERuntime

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
        public init(
            sequenceLength: Int = 512, samples: Int = 128, dampening: Double = 0.01, actOrder: Bool = false,
            clipSearch: Bool = false, propagateQuantized: Bool = true
        ) {
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
        /// Experts the plan removes (width 0), by layer: not packed, masked in the router.
        public var removed: [Int: [Int]] = [:]
        public var seconds: Double
    }

    public let model: MoEModel
    public let options: Options

    public init(model: MoEModel, options: Options) {
        self.model = model
        self.options = options
    }

    /// `progress(stage, done, total)`.
    public func run(tokens: [Int], plan: AllocationPlan, progress: (String, Int, Int) -> Void = { _, _, _ in }) throws
        -> Output
    {
        let start = ContinuousClock.now
        let config = model.config
        let windows = try CalibrationWindows.count(
            tokens: tokens, samples: options.samples, sequenceLength: options.sequenceLength)
        let session = ForwardPass(model: model)
        var states = CalibrationWindows.embed(
            model: model, tokens: tokens, windows: windows, sequenceLength: options.sequenceLength)
        let gptq = GPTQ(
            options: .init(
                groupSize: plan.groupSize, blockSize: 128, dampening: options.dampening,
                actOrder: options.actOrder, clipSearch: options.clipSearch))
        var linears: [String: PackedLinear] = [:]
        try CalibrationWindows.layerByLayer(
            model: model, session: session, states: &states, sequenceLength: options.sequenceLength,
            rerun: options.propagateQuantized,
            observer: { ExpertStatistics(layer: $0, config: config) },
            afterWindow: { layer, window, _ in progress("layer \(layer): calibration windows", window + 1, windows) }
        ) { layer, statistics in
            // Removed experts are masked before the windows rerun through the layer, so later
            // layers calibrate on the model as it will run.
            if let removed = plan.removedExperts[layer] { model.removedExperts[layer] = Set(removed) }
            for expert in 0..<config.expertCount {
                let bits = plan.widths[layer]![expert]!
                guard bits != 0 else {
                    progress("layer \(layer): experts quantized", expert + 1, config.expertCount)
                    continue
                }
                let (inputH, downH) = statistics.hessians(expert: expert)
                // Gate and up share the input Hessian, so one factor serves both.
                let roles = TensorRole.expertLinears(layer: layer, expert: expert)
                let weights = roles.map { model.matrix($0) }
                var timing = GPTQ.Timing()
                let gateUp = try gptq.quantize(
                    weights: [weights[0].floats, weights[1].floats], rows: [weights[0].rows, weights[1].rows],
                    columns: weights[0].columns, hessian: inputH, widths: [bits], timing: &timing)[0]
                let down = try gptq.quantize(
                    weight: weights[2].floats, rows: weights[2].rows, columns: weights[2].columns, hessian: downH,
                    bits: bits)
                for (role, (weight, result)) in zip(roles, zip(weights, gateUp + [down])) {
                    let packed = PackedLinear(
                        packing: result, rows: weight.rows, columns: weight.columns, bits: bits,
                        groupSize: plan.groupSize)
                    linears[model.moduleName(role)] = packed
                    if options.propagateQuantized {
                        model.replace(
                            role, with: Matrix(rows: weight.rows, columns: weight.columns, floats: packed.dequantized())
                        )
                    }
                }
                progress("layer \(layer): experts quantized", expert + 1, config.expertCount)
            }
        }
        return Output(linears: linears, removed: plan.removedExperts, seconds: seconds(since: start))
    }
}
