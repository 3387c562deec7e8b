import Foundation
import Calibration
import ModelFormat
import MoERuntime

/// Trains the OTP gates of a (packed) model on calibration tokens and calibrates the ODP baseline
/// to the same fraction of experts kept.
///
/// End-to-end targets (`nll`, the default, and `kl`): `PruningDamage` measures, for every token,
/// layer and top-k slot, what dropping that one expert does at the end of the model; each layer's
/// gate learns to drop where that is small; `OTPBudget` then spreads the budget over the layers.
///
/// Layer-local targets (`output`, `logits`): for each MoE layer, the windows' hidden states go
/// through the layer with every top-k expert running while a capture records each token's MoE
/// input, routing and per-expert outputs; the layer's gate is trained on that set; then the layer
/// runs again with its new gate, so the next layer trains on the hidden states it will see when
/// pruning is on.
public struct PruningCalibration {
    /// What OTP's loss compares:
    /// - `output`: the MoE block's output, `‖y_full − y(m)‖²` (the definition);
    /// - `logits`: its first-order effect on the next-token distribution along the residual
    ///   stream's direct path to the head (`LogitFisher`);
    /// - `nll`, `kl`: the measured end-to-end effect of each drop, through every later layer, on
    ///   the likelihood of the real next token or on the next-token distribution (`PruningDamage`).
    ///   Both are in the same units at every layer, so the experts-per-token budget can be spread
    ///   over the layers (`budget`).
    public enum Target: String, Sendable, CaseIterable {
        case output, logits, kl, nll
        /// Each token's gate learns from the KL of its drops (the expected ΔNLL of the next token
        /// under the model's own distribution: one real next token is a noisy sample of it), and the
        /// model-wide budget is spread over the layers by the real next tokens' ΔNLL (averaged
        /// over chunks of a layer's slots, where the noise cancels).
        case expected

        public var isEndToEnd: Bool { self == .kl || self == .nll || self == .expected }
    }

    /// How the fraction kept is met: `layer` keeps `keep` in every MoE layer (as ODP does);
    /// `global` keeps `keep` over the whole model, more where drops cost more (`OTPBudget`; end-to-end
    /// targets only).
    public enum Budget: String, Sendable, CaseIterable {
        case layer, global
    }

    public struct Options: Sendable {
        public var target: Target
        public var sequenceLength: Int
        public var samples: Int
        public var training: OTPTrainingOptions
        /// Feed later layers the pruned layer's output (true) or the unpruned one.
        public var propagatePruned: Bool
        public var budget: Budget
        /// End-to-end targets: the fraction of the windows (the last ones) held out from training,
        /// on which each gate is checked against ODP and the model-wide budget is spread (0: none;
        /// everything is decided on the training tokens).
        public var heldOut: Double = 0
        public init(
            sequenceLength: Int = 512, samples: Int = 32, training: OTPTrainingOptions = .init(),
            propagatePruned: Bool = true,
            target: Target = .output, budget: Budget = .layer
        ) {
            precondition(budget == .layer || target.isEndToEnd, "a global budget needs an end-to-end target (nll, kl)")
            self.target = target
            self.budget = budget
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
        /// With a global budget: ODP calibrated per layer to the fractions OTP keeps there (a
        /// diagnostic, `--prune odp-matched`: how much of OTP's gain is the layer allocation).
        public var odpMatched: ODPPruner?
        public var calibrationTokens: Int
        public var seconds: Double
    }

    public let model: MoEModel
    public let options: Options

    public init(model: MoEModel, options: Options) {
        self.model = model
        self.options = options
    }

    public func run(tokens: [Int], progress: (String, Int, Int) -> Void = { _, _, _ in }) throws -> Output {
        let start = ContinuousClock.now
        let config = model.config
        guard config.routing.topK >= 2 else {
            throw ModelFormatError(
                file: model.directory,
                "top-\(config.routing.topK) routing leaves nothing to prune (OTP needs top-k ≥ 2)")
        }
        let windows = try CalibrationWindows.count(
            tokens: tokens, samples: options.samples, sequenceLength: options.sequenceLength)
        let session = ForwardPass(model: model)
        var states = CalibrationWindows.embed(
            model: model, tokens: tokens, windows: windows, sequenceLength: options.sequenceLength)
        if options.target.isEndToEnd {
            return try runEndToEnd(states: states, tokens: tokens, progress: progress, start: start)
        }
        let fisher =
            options.target == .logits
            ? try LogitFisher(model: model, states: states, sequenceLength: options.sequenceLength) : nil
        var gates: [Int: OTPGate] = [:]
        var betas: [Int: Float] = [:]
        var reports: [Int: OTPTrainingReport] = [:]
        var oracle: [Int: Float] = [:]
        try CalibrationWindows.layerByLayer(
            model: model, session: session, states: &states, sequenceLength: options.sequenceLength,
            rerun: options.propagatePruned,
            observer: { layer in
                session.pruner = nil // every top-k expert runs while the layer is captured
                return PruningCapture(layer: layer, config: config)
            },
            afterWindow: { layer, window, capture in
                capture.finishChunk()
                progress("layer \(layer): calibration windows", window + 1, windows)
            }
        ) { layer, capture in
            let captured = capture.trainingSet()
            let (gate, report) = trainGate(set: fisher?.transform(captured) ?? captured)
            gates[layer] = gate
            reports[layer] = report
            betas[layer] = report.odpBeta // ODP calibrated by the trainer to the same fraction, on the same tokens
            oracle[layer] = MSEOraclePruner.calibrateThreshold(set: captured, keep: options.training.keep)
            progress("layer \(layer): gate trained", 1, 1)
            // The rerun (with `propagatePruned`) runs the layer with its new gate.
            session.pruner = OTPPruner(gates: [layer: gate])
        }
        session.pruner = nil
        return Output(
            otp: OTPPruner(gates: gates), odp: ODPPruner(betas: betas), reports: reports, oracleThresholds: oracle,
            odpMatched: nil, calibrationTokens: windows * options.sequenceLength, seconds: seconds(since: start))
    }
}

extension PruningCalibration {
    /// One layer's gate, seeded by the options' seed plus the layer index.
    func trainGate(set: OTPTrainingSet) -> (gate: OTPGate, report: OTPTrainingReport) {
        var training = options.training
        training.seed = options.training.seed &+ UInt64(set.layer)
        return OTPTrainer.train(set: set, options: training)
    }

    /// The end-to-end targets: every layer's drop damage measured on the unpruned model in one
    /// pass over the windows (`PruningDamage`), each layer's gate trained on it, then (global
    /// budget) the experts-per-token budget spread over the layers. A layer's damage is measured
    /// with the other layers unpruned.
    func runEndToEnd(
        states: [[Float]], tokens: [Int], progress: (String, Int, Int) -> Void, start: ContinuousClock.Instant
    ) throws -> Output {
        let measure: PruningDamage.Measure
        switch options.target {
        case .nll: measure = .nll(tokens: tokens)
        case .expected: measure = .both(tokens: tokens)
        default: measure = .kl
        }
        let sets = try PruningDamage.measure(
            model: model, states: states, sequenceLength: options.sequenceLength, measure: measure,
            progress: progress)
        var gates: [Int: OTPGate] = [:], betas: [Int: Float] = [:]
        var reports: [Int: OTPTrainingReport] = [:]
        // Held-out windows: the gates train on the others; ODP fallback and the budget use these.
        let windowsHeldOut = Int((options.heldOut * Double(states.count)).rounded())
        let trainTokens = (states.count - min(windowsHeldOut, states.count - 1)) * options.sequenceLength
        var validation: [Int: OTPTrainingSet] = [:]
        for (layer, set) in sets.sorted(by: { $0.key < $1.key }) {
            let training = windowsHeldOut > 0 ? set.slice(0..<trainTokens) : set
            var (gate, report) = trainGate(set: training)
            if windowsHeldOut > 0 {
                let check = set.slice(trainTokens..<set.count)
                validation[layer] = check
                let trained = evaluate(set: check, pruner: OTPPruner(gates: [layer: gate]))
                let odp = evaluate(set: check, pruner: ODPPruner(betas: [layer: report.odpBeta]))
                if !report.fellBackToODP, trained.meanLoss > odp.meanLoss {
                    gate = OTPGate(
                        odpBeta: report.odpBeta, hiddenSize: set.hiddenSize, slots: set.slots,
                        expertCount: set.expertCount)
                    // The report describes the returned gate, as OTPTrainer's own fallback does.
                    report.fellBackToODP = true
                    report.meanLoss = report.odpMeanLoss
                    report.keptFraction = OTPTrainer.keptFraction(gate: gate, set: training)
                }
            }
            gates[layer] = gate
            reports[layer] = report
            betas[layer] = report.odpBeta
            progress("layer \(layer): gate trained", 1, 1)
        }
        var matched: ODPPruner?
        if options.budget == .global {
            let (shifted, fractions) = OTPBudget.allocate(
                sets: windowsHeldOut > 0 ? validation : sets, gates: gates, keep: options.training.keep)
            gates = shifted
            var matchedBetas: [Int: Float] = [:]
            for (layer, set) in sets {
                let budgeted = evaluate(set: set, pruner: OTPPruner(gates: [layer: shifted[layer]!]))
                reports[layer]!.keptFraction = fractions[layer]!
                reports[layer]!.meanLoss = budgeted.meanLoss
                matchedBetas[layer] = ODPPruner.calibrateBeta(
                    probabilities: set.probabilities, slots: set.slots, keep: fractions[layer]!)
                reports[layer]!.odpMatchedMeanLoss =
                    evaluate(set: set, pruner: ODPPruner(betas: [layer: matchedBetas[layer]!])).meanLoss
            }
            matched = ODPPruner(betas: matchedBetas)
        }
        // No MSE oracle: the sets keep no expert outputs (memory: the hidden states only).
        return Output(
            otp: OTPPruner(gates: gates), odp: ODPPruner(betas: betas), reports: reports, oracleThresholds: [:],
            odpMatched: matched, calibrationTokens: states.count * options.sequenceLength,
            seconds: seconds(since: start))
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
    private(set) var hidden: [Float] = []
    private(set) var probabilities: [Float] = []
    private(set) var experts: [Int32] = []
    private(set) var weights: [Float] = []
    private(set) var expertOutputs: [Float] = []
    /// The last chunk's slot outputs, `[chunk tokens, k, H]`.
    private(set) var chunkSlotOutputs: [Float] = []
    /// Keep every chunk's expert outputs in the training set (the layer-local losses need them;
    /// the end-to-end ones only need each chunk's while it is measured).
    let keepExpertOutputs: Bool
    /// Tokens captured so far.
    var count: Int { weights.count / slots }

    init(layer: Int, config: MoEModelConfig, keepExpertOutputs: Bool = true) {
        self.keepExpertOutputs = keepExpertOutputs
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
        chunkSlotOutputs.removeAll(keepingCapacity: true)
        for (token, routing) in chunkRouting.enumerated() {
            hidden += chunkInput[(token * hiddenSize)..<((token + 1) * hiddenSize)]
            probabilities += routing.probabilities
            weights += routing.weights
            for expert in routing.experts {
                experts.append(Int32(expert))
                let row = rowOf[expert]![token]!
                chunkSlotOutputs += chunkOutputs[expert]!.outputs[(row * hiddenSize)..<((row + 1) * hiddenSize)]
            }
        }
        if keepExpertOutputs { expertOutputs += chunkSlotOutputs }
        chunkRouting.removeAll(keepingCapacity: true)
        chunkOutputs.removeAll(keepingCapacity: true)
    }

    func trainingSet() -> OTPTrainingSet {
        OTPTrainingSet(
            layer: layer, hiddenSize: hiddenSize, slots: slots, expertCount: expertCount, hidden: hidden,
            probabilities: probabilities, experts: experts, weights: weights, expertOutputs: expertOutputs)
    }
}
