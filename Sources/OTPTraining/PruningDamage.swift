import Foundation
import Calibration
import ModelFormat
import MoERuntime

/// OTP's end-to-end training targets (`nll`, `kl`): for every calibration token, MoE layer and
/// top-k slot beyond the first, what dropping that one expert for that one token does at the end
/// of the model — to the likelihood of the token that actually comes next (`nll`:
/// `d = log p_full(y) − log p_dropped(y)`, negative when the drop helps) or to the whole
/// next-token distribution (`kl`: `d = KL(p_full ‖ p_dropped)`, label-free).
///
/// Per window, one unpruned pass records each layer's output, the MoE layers' routing and expert
/// outputs (`PruningCapture`) and the final distributions. Then, per MoE layer `l` and slot `j`,
/// every token's layer output loses its slot-j contribution — `δ = y_full − y(m without j)`, the
/// kept weights rescaled as the runtime does — and the later layers run as per-token
/// counterfactuals (`ForwardPass.counterfactualLayer`: each token sees the unperturbed sequence
/// before it), so all tokens' effects are measured in one batched pass per (l, j). The approximation:
/// the change in later tokens' attention to the perturbed one, and interactions between drops at
/// several layers or slots, are not counted.
///
/// Measured on the example model (README, "Expert pruning"): the two targets disagree about which
/// layers can spare an expert. Dropping the second expert at random in layer 0 moves the
/// next-token distributions a lot (the largest KL of any layer) but the likelihood of the real
/// next tokens hardly at all; `kl` protects layer 0 and loses to ODP, `nll` prunes it hardest and wins.
///
/// Cost per window: the full pass, plus for each (l, j) the layers after `l` and the head — for
/// top-2 about `(L − 1)/2 + 1` full passes more. Needs the whole model resident (pinned), and
/// keeps per MoE layer the calibration tokens' MoE inputs (`n × H` floats) and routing, not
/// their expert outputs.
enum PruningDamage {
    enum Measure {
        /// ΔNLL of each window position's next token, `tokens[window · n + t + 1]` (the windows'
        /// tokens, in order; a position whose next token is not in `tokens` gets 0).
        case nll(tokens: [Int])
        case kl
        /// `kl` as the damage and `nll` as the budget damage, from the same counterfactual passes.
        case both(tokens: [Int])
    }

    /// Per MoE layer: the captured set with `damage` `[n, k−1]` filled in.
    static func measure(
        model: MoEModel, states: [[Float]], sequenceLength: Int, measure: Measure,
        progress: (String, Int, Int) -> Void
    ) throws -> [Int: OTPTrainingSet] {
        let config = model.config
        let (hidden, k, vocab) = (config.hiddenSize, config.routing.topK, config.vocabSize)
        let moeLayers = (0..<config.layerCount).filter { config.moeLayers[$0] }
        for layer in 0..<config.layerCount { try model.pin(layer: layer) }
        defer { for layer in 0..<config.layerCount { model.unpin(layer: layer) } }
        let captures = Dictionary(
            uniqueKeysWithValues: moeLayers.map {
                ($0, PruningCapture(layer: $0, config: config, keepExpertOutputs: false))
            })
        let observer = AllLayers(captures: Array(captures.values))
        let session = ForwardPass(model: model, observer: observer)
        var damage = Dictionary(uniqueKeysWithValues: moeLayers.map { ($0, [Float]()) })
        var budgetDamage = damage
        let n = sequenceLength
        for (window, start) in states.enumerated() {
            session.reset()
            var x = start
            var outputs: [[Float]] = []
            for layer in 0..<config.layerCount {
                session.forwardLayer(layer, &x, count: n)
                outputs.append(x)
            }
            let full = logSoftmax(session.outputLogits(x, count: n), vocab: vocab)
            for capture in captures.values { capture.finishChunk() }
            for layer in moeLayers {
                let capture = captures[layer]!
                let first = capture.count - n // this window's first token in the capture
                var measured = [Float](repeating: 0, count: n * (k - 1))
                var measuredNLL = [Float](repeating: 0, count: measure.isBoth ? n * (k - 1) : 0)
                for slot in 1..<k {
                    var perturbed = outputs[layer]
                    capture.weights.withUnsafeBufferPointer { w in
                        capture.chunkSlotOutputs.withUnsafeBufferPointer { e in
                            for t in 0..<n {
                                let weights = w.baseAddress! + (first + t) * k, rows = e.baseAddress! + t * k * hidden
                                subtractDropContribution(
                                    &perturbed, token: t, slot: slot, weights: weights, outputs: rows, slots: k,
                                    hidden: hidden)
                            }
                        }
                    }
                    for later in (layer + 1)..<config.layerCount {
                        session.counterfactualLayer(later, &perturbed, count: n)
                    }
                    let dropped = logSoftmax(session.outputLogits(perturbed, count: n), vocab: vocab)
                    for t in 0..<n {
                        let index = t * (k - 1) + slot - 1
                        // ΔNLL of the position's real next token (0 when it is not in `tokens`).
                        func nll(_ tokens: [Int]) -> Float {
                            let next = window * n + t + 1
                            guard next < tokens.count else { return 0 }
                            return full[t * vocab + tokens[next]] - dropped[t * vocab + tokens[next]]
                        }
                        switch measure {
                        case let .nll(tokens): measured[index] = nll(tokens)
                        case .kl: measured[index] = klDivergence(full, dropped, row: t, vocab: vocab)
                        case let .both(tokens):
                            measured[index] = klDivergence(full, dropped, row: t, vocab: vocab)
                            measuredNLL[index] = nll(tokens)
                        }
                    }
                }
                damage[layer]! += measured
                budgetDamage[layer]! += measuredNLL
            }
            progress("measured damage of each expert drop", window + 1, states.count)
        }
        var sets: [Int: OTPTrainingSet] = [:]
        for layer in moeLayers {
            var set = captures[layer]!.trainingSet()
            set.damage = damage[layer]!
            if measure.isBoth { set.budgetDamage = budgetDamage[layer]! }
            sets[layer] = set
        }
        return sets
    }

    /// Row `token` of `x` (`[n, hidden]`) minus `y_full − y(m)` for the mask that drops `slot`:
    /// `y(m) = Σ_{i≠slot} w_i · (W/D) E_i` with `W = Σ w`, `D = W − w_slot`.
    static func subtractDropContribution(
        _ x: inout [Float], token: Int, slot: Int, weights: UnsafePointer<Float>,
        outputs: UnsafePointer<Float>, slots k: Int, hidden: Int
    ) {
        var total: Float = 0
        for i in 0..<k { total += weights[i] }
        let kept = total - weights[slot]
        let rescale = kept > 0 ? total / kept : 0
        x.withUnsafeMutableBufferPointer { x in
            let row = x.baseAddress! + token * hidden
            for i in 0..<k {
                // δ_i coefficient: w_i − (i kept ? w_i·W/D : 0); x − δ.
                let c = weights[i] - (i == slot ? 0 : weights[i] * rescale)
                let e = outputs + i * hidden
                for h in 0..<hidden { row[h] -= c * e[h] }
            }
        }
    }

    /// Row-wise log-softmax of `[n, vocab]` logits.
    static func logSoftmax(_ logits: [Float], vocab: Int) -> [Float] {
        var out = logits
        let n = logits.count / vocab
        out.withUnsafeMutableBufferPointer { out in
            for t in 0..<n {
                let row = out.baseAddress! + t * vocab
                var peak = -Float.infinity
                for v in 0..<vocab { peak = max(peak, row[v]) }
                var total: Float = 0
                for v in 0..<vocab { total += Foundation.exp(row[v] - peak) }
                let shift = peak + Foundation.log(total)
                for v in 0..<vocab { row[v] -= shift }
            }
        }
        return out
    }

    /// `KL(p ‖ q) = Σ p (log p − log q)` for row `row` of two log-probability tables; not negative.
    static func klDivergence(_ logP: [Float], _ logQ: [Float], row: Int, vocab: Int) -> Float {
        var total: Double = 0
        for v in (row * vocab)..<((row + 1) * vocab) {
            let lp = logP[v]
            total += Double(Foundation.exp(lp)) * Double(lp - logQ[v])
        }
        return Float(max(total, 0))
    }
}

/// Hands every routing event to each layer's capture (each keeps its own layer's).
final class AllLayers: RouterObserver {
    let captures: [PruningCapture]
    init(captures: [PruningCapture]) { self.captures = captures }
    func routed(layer: Int, token: Int, probabilities: [Float], experts: [Int], weights: [Float]) {
        for capture in captures {
            capture.routed(layer: layer, token: token, probabilities: probabilities, experts: experts, weights: weights)
        }
    }
    func moeInput(layer: Int, hidden: [Float], count: Int) {
        for capture in captures { capture.moeInput(layer: layer, hidden: hidden, count: count) }
    }
    func expertOutputs(layer: Int, expert: Int, tokens: [Int], outputs: [Float]) {
        for capture in captures {
            capture.expertOutputs(layer: layer, expert: expert, tokens: tokens, outputs: outputs)
        }
    }
}

/// Which layers can spare an expert: per MoE layer, one pass with the top-k slots beyond the
/// first dropped for a random `rate` of the tokens in that layer only (the others untouched), and
/// its effect on every position of the window — the next-token distributions (mean KL) and the
/// likelihood of the real next tokens (mean ΔNLL). Unlike `PruningDamage` it includes what the
/// drops do to later tokens through attention; it does not say which tokens to drop.
public enum RandomDropProbe {
    public struct Layer: Sendable {
        public var layer: Int
        /// Token-layer decisions that dropped.
        public var drops: Int
        /// Positions measured (ΔNLL: those whose next token is in the file).
        public var positions: Int
        public var meanKL: Double
        public var meanDeltaNLL: Double
    }

    public static func run(
        model: MoEModel, tokens: [Int], samples: Int, sequenceLength n: Int, rate: Double, seed: UInt64,
        progress: (String, Int, Int) -> Void = { _, _, _ in }
    ) throws -> [Layer] {
        let config = model.config
        let vocab = config.vocabSize
        guard config.routing.topK >= 2 else {
            throw ModelFormatError(
                file: model.directory,
                "top-\(config.routing.topK) routing leaves nothing to drop (the probe needs top-k ≥ 2)")
        }
        let windows = try CalibrationWindows.count(tokens: tokens, samples: samples, sequenceLength: n)
        let states = CalibrationWindows.embed(model: model, tokens: tokens, windows: windows, sequenceLength: n)
        let moeLayers = (0..<config.layerCount).filter { config.moeLayers[$0] }
        for layer in 0..<config.layerCount { try model.pin(layer: layer) }
        defer { for layer in 0..<config.layerCount { model.unpin(layer: layer) } }
        let session = ForwardPass(model: model)
        func logProbabilities(_ start: [Float]) -> [Float] {
            session.reset()
            var x = start
            for layer in 0..<config.layerCount { session.forwardLayer(layer, &x, count: n) }
            return PruningDamage.logSoftmax(session.outputLogits(x, count: n), vocab: vocab)
        }
        var results = moeLayers.map { Layer(layer: $0, drops: 0, positions: 0, meanKL: 0, meanDeltaNLL: 0) }
        var nllPositions = 0
        for (window, start) in states.enumerated() {
            session.pruner = nil
            let full = logProbabilities(start)
            for (index, layer) in moeLayers.enumerated() {
                let pruner = RandomDrop(layer: layer, rate: rate, seed: seed &+ UInt64(window * 1_000 + layer))
                session.pruner = pruner
                let dropped = logProbabilities(start)
                session.pruner = nil
                results[index].drops += pruner.drops
                for t in 0..<n {
                    results[index].meanKL += Double(PruningDamage.klDivergence(full, dropped, row: t, vocab: vocab))
                    let next = window * n + t + 1
                    if next < tokens.count {
                        results[index].meanDeltaNLL += Double(
                            full[t * vocab + tokens[next]] - dropped[t * vocab + tokens[next]])
                        if index == 0 { nllPositions += 1 }
                    }
                }
            }
            progress("random drops, one layer at a time", window + 1, windows)
        }
        return results.map {
            var r = $0
            r.positions = windows * n
            r.meanKL /= Double(windows * n)
            r.meanDeltaNLL /= Double(max(nllPositions, 1))
            return r
        }
    }
}

/// Drops every slot after the first for a seeded random fraction of the tokens in one layer.
final class RandomDrop: ExpertPruner {
    let layer: Int
    let rate: Double
    private var random: SplitMix64
    private(set) var drops = 0

    init(layer: Int, rate: Double, seed: UInt64) {
        self.layer = layer
        self.rate = rate
        random = SplitMix64(seed: seed)
    }

    func keep(layer: Int, hidden: UnsafeBufferPointer<Float>, probabilities: [Float], experts: [Int], weights: [Float])
        -> [Bool]
    {
        guard layer == self.layer, random.uniform() < rate else { return experts.map { _ in true } }
        drops += 1
        return experts.indices.map { $0 == 0 }
    }
}

extension PruningDamage.Measure {
    var isBoth: Bool {
        if case .both = self { return true }
        return false
    }
}
