import Foundation
import ModelFormat
import MoERuntime

/// Trains the OTP gates of a (packed) model on calibration tokens, layer by layer, and calibrates
/// the ODP baseline to the same fraction of experts kept: for each MoE layer, the windows' hidden
/// states go through the layer with every top-k expert running while a capture records each
/// token's MoE input, routing and per-expert outputs; the layer's gate is trained on that set;
/// then the layer runs again with its new gate, so the next layer trains on the hidden states it
/// will see when pruning is on.
public struct PruningCalibration {
    /// What OTP's loss compares: the MoE block's output (`‖y_full − y(m)‖²`, the issue's
    /// definition) or its first-order effect on the next-token distribution (`LogitFisher`).
    public enum Target: String, Sendable, CaseIterable {
        case output, logits
    }

    public struct Options: Sendable {
        public var target: Target
        public var sequenceLength: Int
        public var samples: Int
        public var training: OTPTrainingOptions
        /// Feed later layers the pruned layer's output (true) or the unpruned one.
        public var propagatePruned: Bool
        public init(sequenceLength: Int = 512, samples: Int = 32, training: OTPTrainingOptions = .init(), propagatePruned: Bool = true,
                    target: Target = .output) {
            self.target = target
            self.sequenceLength = sequenceLength
            self.samples = samples
            self.training = training
            self.propagatePruned = propagatePruned
        }
    }

    public struct Output {
        public var otp: OTPPruner
        public var odp: ODPPruner
        public var reports: [Int: OTPTrainingReport]
        /// The MSE oracle's thresholds at the same fraction (a diagnostic, `--prune oracle-mse`).
        public var oracleThresholds: [Int: Float]
        public var calibrationTokens: Int
        public var seconds: Double
    }

    public let model: FloatModel
    public let options: Options

    public init(model: FloatModel, options: Options) {
        self.model = model
        self.options = options
    }

    public func run(tokens: [Int], progress: (String, Int, Int) -> Void = { _, _, _ in }) throws -> Output {
        let start = ContinuousClock.now
        let config = model.config
        guard config.routing.topK >= 2 else {
            throw ModelFormatError(file: model.directory, "top-\(config.routing.topK) routing leaves nothing to prune (OTP needs top-k ≥ 2)")
        }
        let windows = try CalibrationWindows.count(tokens: tokens, samples: options.samples, sequenceLength: options.sequenceLength)
        let session = FloatForward(model: model)
        var states = CalibrationWindows.embed(model: model, tokens: tokens, windows: windows, sequenceLength: options.sequenceLength)
        let fisher = options.target == .logits ? try LogitFisher(model: model, states: states, sequenceLength: options.sequenceLength) : nil
        var gates: [Int: OTPGate] = [:]
        var betas: [Int: Float] = [:]
        var reports: [Int: OTPTrainingReport] = [:]
        var oracle: [Int: Float] = [:]
        try CalibrationWindows.layerByLayer(
            model: model, session: session, states: &states, sequenceLength: options.sequenceLength, rerun: options.propagatePruned,
            observer: { layer in
                session.pruner = nil   // every top-k expert runs while the layer is captured
                return PruningCapture(layer: layer, config: config)
            },
            afterWindow: { layer, window, capture in
                capture.finishChunk()
                progress("layer \(layer): calibration windows", window + 1, windows)
            }
        ) { layer, capture in
            let captured = capture.trainingSet()
            let set = fisher?.transform(captured) ?? captured
            var training = options.training
            training.seed = options.training.seed &+ UInt64(layer)
            let (gate, report) = OTPTrainer.train(set: set, options: training)
            gates[layer] = gate
            reports[layer] = report
            betas[layer] = report.odpBeta   // ODP calibrated by the trainer to the same fraction, on the same tokens
            oracle[layer] = MSEOraclePruner.calibrateThreshold(set: captured, keep: options.training.keep)
            progress("layer \(layer): gate trained", 1, 1)
            // The rerun (with `propagatePruned`) runs the layer with its new gate.
            session.pruner = OTPPruner(gates: [layer: gate])
        }
        session.pruner = nil
        return Output(otp: OTPPruner(gates: gates), odp: ODPPruner(betas: betas), reports: reports, oracleThresholds: oracle,
                      calibrationTokens: windows * options.sequenceLength, seconds: seconds(since: start))
    }
}

/// Records, for one MoE layer, what OTP trains on: each token's MoE input, its top-k experts with
/// their probabilities and weights, and each of those experts' outputs.
final class PruningCapture: RouterObserver {
    let layer: Int
    let hiddenSize: Int
    let slots: Int
    let expertCount: Int
    private var chunkInput: [Float] = []
    private var chunkRouting: [(experts: [Int], probabilities: [Float], weights: [Float])] = []
    /// Per expert: the chunk's token indices routed to it and its outputs for them.
    private var chunkOutputs: [Int: (tokens: [Int], outputs: [Float])] = [:]
    private var hidden: [Float] = []
    private var probabilities: [Float] = []
    private var experts: [Int32] = []
    private var weights: [Float] = []
    private var expertOutputs: [Float] = []

    init(layer: Int, config: MoEModelConfig) {
        self.layer = layer
        hiddenSize = config.hiddenSize
        slots = config.routing.topK
        expertCount = config.expertCount
    }

    func moeInput(layer: Int, hidden: [Float], count: Int) {
        guard layer == self.layer else { return }
        chunkInput = hidden
        chunkRouting.removeAll(keepingCapacity: true)
        chunkOutputs.removeAll(keepingCapacity: true)
    }

    func routed(layer: Int, token: Int, probabilities: [Float], experts chosen: [Int], weights: [Float]) {
        guard layer == self.layer else { return }
        precondition(token == chunkRouting.count, "tokens are routed in order")
        chunkRouting.append((chosen, chosen.map { probabilities[$0] }, weights))
    }

    func expertOutputs(layer: Int, expert: Int, tokens: [Int], outputs: [Float]) {
        guard layer == self.layer else { return }
        chunkOutputs[expert] = (tokens, outputs)
    }

    /// Appends the chunk just run to the training set.
    func finishChunk() {
        var rowOf: [Int: [Int: Int]] = [:]
        for (expert, entry) in chunkOutputs {
            rowOf[expert] = Dictionary(uniqueKeysWithValues: entry.tokens.enumerated().map { ($1, $0) })
        }
        for (token, routing) in chunkRouting.enumerated() {
            hidden += chunkInput[(token * hiddenSize)..<((token + 1) * hiddenSize)]
            probabilities += routing.probabilities
            weights += routing.weights
            for expert in routing.experts {
                experts.append(Int32(expert))
                let row = rowOf[expert]![token]!
                expertOutputs += chunkOutputs[expert]!.outputs[(row * hiddenSize)..<((row + 1) * hiddenSize)]
            }
        }
        chunkRouting.removeAll(keepingCapacity: true)
        chunkOutputs.removeAll(keepingCapacity: true)
    }

    func trainingSet() -> OTPTrainingSet {
        OTPTrainingSet(layer: layer, hiddenSize: hiddenSize, slots: slots, expertCount: expertCount, hidden: hidden,
                       probabilities: probabilities, experts: experts, weights: weights, expertOutputs: expertOutputs)
    }
}
