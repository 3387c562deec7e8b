import Foundation
import Kernels
import MoERuntime

/// How `OTPTrainer` trains one layer's gate.
public struct OTPTrainingOptions: Sendable, Equatable {
    /// Target fraction of top-k slots run, top-1 included: 0.8 with top-2 = 1.6 experts per token.
    public var keep: Double = 0.8
    /// Passes over the training tokens (ignored when `steps` is set).
    public var epochs: Int = 20
    /// Total Adam steps; `nil`: `epochs` passes of full minibatches.
    public var steps: Int? = nil
    /// Tokens per minibatch.
    public var batchSize: Int = 256
    /// Adam's step size (on standardised features, so one value suits every layer), decayed to 0
    /// along a cosine over the run.
    public var learningRate: Float = 0.02
    /// Decoupled (AdamW) weight decay on the hidden-state weights `w` and expert biases `c`, per
    /// unit of learning rate: without it, Adam's normalised steps random-walk the weights of
    /// features that carry no signal.
    public var weightDecay: Float = 0.1
    /// Gumbel-Softmax temperature at the first and last step (annealed geometrically).
    public var temperatureStart: Float = 2
    public var temperatureEnd: Float = 0.1
    /// λ in `λ · (kept fraction − keep)²`.
    public var penalty: Float = 20
    /// Seeds the minibatch order and the Gumbel noise.
    public var seed: UInt64 = 0

    public init(
        keep: Double = 0.8, epochs: Int = 20, steps: Int? = nil, batchSize: Int = 256, learningRate: Float = 0.02,
        weightDecay: Float = 0.1, temperatureStart: Float = 2, temperatureEnd: Float = 0.1, penalty: Float = 20,
        seed: UInt64 = 0
    ) {
        self.keep = keep
        self.epochs = epochs
        self.steps = steps
        self.batchSize = batchSize
        self.learningRate = learningRate
        self.weightDecay = weightDecay
        self.temperatureStart = temperatureStart
        self.temperatureEnd = temperatureEnd
        self.penalty = penalty
        self.seed = seed
    }
}

/// What training one gate did.
public struct OTPTrainingReport: Sendable, Equatable {
    /// Adam steps taken.
    public var steps: Int
    /// Mean kept fraction of the sampled (stochastic) masks over the last 10% of steps.
    public var sampledKeptFraction: Double
    /// Mean training objective (loss + penalty) over the last 10% of steps.
    public var finalObjective: Double
    /// Kept fraction of the deterministic gate (`z > 0`) on the training set, as trained…
    public var keptFractionBeforeAdjustment: Double
    /// …and after its bias was shifted to hit the target.
    public var keptFraction: Double
    /// The shift added to every slot's bias.
    public var biasShift: Float
    /// The returned gate's mean loss on the training set (`PruningLoss` units).
    public var meanLoss: Double
    /// The trained gate's mean loss there (after the bias shift).
    public var trainedMeanLoss: Double
    /// The ODP β that keeps the same fraction on the training set, and its mean loss there.
    public var odpBeta: Float
    public var odpMeanLoss: Double
    /// With a model-wide budget (`OTPBudget`), `keptFraction` and `meanLoss` are the budgeted
    /// gate's, and this is ODP's loss at that same per-layer fraction.
    public var odpMatchedMeanLoss: Double?
    /// The trained gate did worse than ODP on the training set, so the gate returned is ODP's rule
    /// (`OTPGate(odpBeta:…)`): the token's hidden state told the gate nothing the ratio did not.
    public var fellBackToODP: Bool
    /// Wall-clock seconds.
    public var seconds: Double
}

/// Trains an `OTPGate` on one layer's calibration tokens.
///
/// **Objective** (per minibatch of B tokens):
/// `(1/B) Σ_t ‖y_full(t) − y(m_t)‖² / S + λ · (f − keep)²`, where `y(m)` is the MoE output the
/// runtime would produce with slot mask `m` (kept weights rescaled to the full top-k's sum),
/// `S = mean ‖y_full‖²` over the set (`PruningLoss` says why not per token), and
/// `f = (1/(B·k)) Σ_t Σ_j m_tj` the kept fraction of slots, top-1 included.
///
/// **Masks**: `m_t1 = 1`; for j ≥ 2 a binary concrete (Gumbel-Softmax with two classes) sample:
/// `s = σ((z + L)/τ)` with logistic noise `L = log u − log(1−u)`, hard forward `m = [z + L > 0]`
/// (an exact Bernoulli(σ(z)) draw), soft backward `∂m/∂z := ∂s/∂z = s(1−s)/τ` (straight-through).
/// The hard forward does not depend on τ: annealing τ from 2 to 0.1 moves the gradient from
/// every token (early, while the gate is unsure) to the tokens near the decision boundary (late).
/// `∂‖r‖²/∂m` is taken analytically at the hard mask (`PruningLoss.squaredError`) from each token's
/// k×k Gram matrix of expert outputs, computed once.
///
/// **Start**: the gate starts as ODP calibrated to the same `keep` (`a > 0`, `w = 0`, `c = 0`),
/// on standardised features (`h` and `log(p_j/p_1)` centred and scaled per coordinate, folded back
/// into the stored gate at the end), trained with Adam on seeded minibatches. Single-threaded and
/// seeded: the result depends only on the set and the options (train layers in parallel).
///
/// **Cost**: O(k²·H) per token once (the Gram matrices), then O((k−1)·H) per token and step.
/// Measured (release, one core): 65,536 tokens × H 160 × top-2, 20 epochs of 256-token batches
/// (5,120 steps) in 0.8 s including setup and the final evaluations; on the example model's
/// calibration tokens (16,384 per layer) 0.11 s per layer.
///
/// **Finish**: the deterministic gate's kept fraction is off target by however much the penalty
/// left; one shift of every slot's bias (halfway between two consecutive logits) puts it on target.
/// If the result then does worse than ODP at the same fraction on the training set, ODP's rule is
/// returned as the gate (`OTPTrainingReport.fellBackToODP`).
public enum OTPTrainer {
    public static func train(set: OTPTrainingSet, options: OTPTrainingOptions = .init()) -> (
        gate: OTPGate, report: OTPTrainingReport
    ) {
        precondition(set.slots >= 2, "OTP needs top-k ≥ 2")
        precondition(set.count > 0, "no training tokens")
        precondition(
            options.temperatureStart > 0 && options.temperatureEnd > 0 && options.batchSize >= 1
                && options.penalty >= 0,
            "temperatures must be positive, the batch at least 1 token, λ not negative")
        let start = Date()
        let objective = OTPObjective(set: set)
        let odpBeta = ODPPruner.calibrateBeta(probabilities: set.probabilities, slots: set.slots, keep: options.keep)
        var parameters = objective.initialParameters(odpBeta: odpBeta)
        let batch = min(max(options.batchSize, 1), set.count)
        let steps = max(options.steps ?? options.epochs * (set.count / batch), 1)
        let ranks = set.slots - 1

        var random = PruningRandom(seed: options.seed)
        var order = Array(0..<set.count), cursor = set.count
        var tokens = [Int](repeating: 0, count: batch)
        var noise = [Float](repeating: 0, count: batch * ranks)
        var gradient = [Float](repeating: 0, count: parameters.count)
        var adam = Adam(count: parameters.count)
        // Decay applies to w and c, not to the ratio scale and slot biases that carry ODP's rule.
        var decay = [Float](repeating: options.weightDecay, count: parameters.count)
        for i in objective.offsetA..<objective.offsetC { decay[i] = 0 }
        var tailObjective = 0.0, tailKept = 0.0, tailSteps = 0
        for step in 0..<steps {
            // Minibatch: the next B tokens of a seeded permutation, reshuffled each pass.
            if cursor + batch > set.count {
                for i in stride(from: set.count - 1, to: 0, by: -1) { order.swapAt(i, random.below(i + 1)) }
                cursor = 0
            }
            for i in 0..<batch { tokens[i] = order[cursor + i] }
            cursor += batch
            for i in 0..<noise.count {
                let u = random.uniform()
                noise[i] = log(u) - log(1 - u)
            }
            let progress = steps > 1 ? Float(step) / Float(steps - 1) : 1
            let temperature =
                options.temperatureStart * pow(options.temperatureEnd / options.temperatureStart, progress)
            let (value, kept) = objective.lossAndGradient(
                parameters: parameters, tokens: tokens, noise: noise,
                temperature: temperature, hard: true, keep: Float(options.keep),
                penalty: options.penalty, gradient: &gradient)
            let rate = options.learningRate * 0.5 * (1 + cos(Float.pi * progress))
            adam.step(&parameters, gradient: gradient, learningRate: rate, decay: decay)
            if step >= steps - max(steps / 10, 1) {
                tailObjective += value
                tailKept += kept
                tailSteps += 1
            }
        }

        var gate = objective.gate(parameters: parameters)
        let before = keptFraction(gate: gate, set: set)
        let shift = biasShift(gate: gate, set: set, keep: options.keep)
        for r in 0..<ranks { gate.bias[r] += shift }
        let trained = evaluate(set: set, pruner: OTPPruner(gates: [set.layer: gate]))
        let odp = evaluate(set: set, pruner: ODPPruner(betas: [set.layer: odpBeta]))
        // Never hand back a gate that does worse than the rule it started from.
        let fallBack = trained.meanLoss > odp.meanLoss
        let result = fallBack ? odp : trained
        if fallBack {
            gate = OTPGate(odpBeta: odpBeta, hiddenSize: set.hiddenSize, slots: set.slots, expertCount: set.expertCount)
        }
        let report = OTPTrainingReport(
            steps: steps, sampledKeptFraction: tailKept / Double(tailSteps),
            finalObjective: tailObjective / Double(tailSteps),
            keptFractionBeforeAdjustment: before,
            keptFraction: fallBack ? keptFraction(gate: gate, set: set) : trained.keptFraction,
            biasShift: shift, meanLoss: result.meanLoss, trainedMeanLoss: trained.meanLoss, odpBeta: odpBeta,
            odpMeanLoss: odp.meanLoss, odpMatchedMeanLoss: nil, fellBackToODP: fallBack,
            seconds: Date().timeIntervalSince(start))
        return (gate, report)
    }

    /// Every gated slot's logit `z` on the set, as the runtime computes it, `[n, k−1]`.
    static func logits(gate: OTPGate, set: OTPTrainingSet) -> [Float] {
        let n = set.count, k = set.slots, h = set.hiddenSize
        var z = [Float](repeating: 0, count: n * (k - 1))
        set.hidden.withUnsafeBufferPointer { hidden in
            for t in 0..<n {
                let p1 = set.probabilities[t * k]
                for j in 1..<k {
                    z[t * (k - 1) + j - 1] = gate.logit(
                        slot: j, hidden: hidden.baseAddress! + t * h,
                        logRatio: OTPGate.logRatio(set.probabilities[t * k + j], p1),
                        expert: Int(set.experts[t * k + j]))
                }
            }
        }
        return z
    }

    /// The deterministic gate's kept fraction of slots on the set.
    static func keptFraction(gate: OTPGate, set: OTPTrainingSet) -> Double {
        let kept = logits(gate: gate, set: set).reduce(0) { $0 + ($1 > 0 ? 1 : 0) }
        return Double(set.count + kept) / Double(set.count * set.slots)
    }

    /// The shift of every bias that makes the deterministic gate keep `keep` of the slots.
    static func biasShift(gate: OTPGate, set: OTPTrainingSet, keep: Double) -> Float {
        let z = logits(gate: gate, set: set).sorted(by: >)
        let extra = min(max(Int((keep * Double(set.count * set.slots)).rounded()) - set.count, 0), z.count)
        if extra == 0 { return -(z[0] + 1 + abs(z[0]) * 1e-3) }
        if extra == z.count { return -(z[z.count - 1] - 1 - abs(z[z.count - 1]) * 1e-3) }
        return -(z[extra - 1] + z[extra]) / 2
    }
}

/// One layer's training problem on standardised features, and its loss and gradient.
///
/// Parameters, flat: `w'` `[R, H]`, `a'` `[R]`, `b'` `[R]`, `c` `[E]` (R = k − 1), on features
/// `x = (h − μ_h)/σ_h` and `ρ' = (log(p_j/p_1) − μ_r)/σ_r`; `gate(parameters:)` folds them back.
final class OTPObjective {
    let n: Int, k: Int, ranks: Int, h: Int, experts: Int
    /// `x`, `[n, H]`.
    let features: [Float]
    let meanHidden: [Float], scaleHidden: [Float]
    /// `ρ'`, `[n, R]`.
    let ratios: [Float]
    let meanRatio: [Float], scaleRatio: [Float]
    /// Slot experts `[n, k]`, weights `[n, k]`, Gram matrices of the slots' outputs `[n, k, k]`.
    let slotExperts: [Int32]
    let weights: [Float]
    let gram: [Float]
    /// `S = mean ‖y_full‖²` (or `D = mean Σ_j d_j` with damage).
    let scale: Float
    /// Measured drop damage `[n, R]` (`OTPTrainingSet.damage`); nil: the output MSE.
    let damage: [Float]?
    // Per-minibatch scratch, reused every step.
    private var logit: [Float] = [], soft: [Float] = [], mask: [Float] = []

    var parameterCount: Int { ranks * h + 2 * ranks + experts }
    var offsetA: Int { ranks * h }
    var offsetB: Int { ranks * h + ranks }
    var offsetC: Int { ranks * h + 2 * ranks }

    init(set: OTPTrainingSet) {
        n = set.count; k = set.slots; ranks = set.slots - 1; h = set.hiddenSize; experts = set.expertCount
        let (n, k, ranks, h) = (n, k, ranks, h)
        var mean = [Double](repeating: 0, count: h), square = [Double](repeating: 0, count: h)
        for t in 0..<n {
            for i in 0..<h {
                let v = Double(set.hidden[t * h + i])
                mean[i] += v
                square[i] += v * v
            }
        }
        meanHidden = mean.map { Float($0 / Double(n)) }
        scaleHidden = (0..<h).map { i in
            let m = mean[i] / Double(n), variance = max(square[i] / Double(n) - m * m, 0)
            return variance > 1e-20 ? Float(variance.squareRoot()) : 1
        }
        var features = [Float](repeating: 0, count: n * h)
        for t in 0..<n {
            for i in 0..<h { features[t * h + i] = (set.hidden[t * h + i] - meanHidden[i]) / scaleHidden[i] }
        }
        self.features = features

        var raw = [Float](repeating: 0, count: n * ranks)
        for t in 0..<n {
            for r in 0..<ranks {
                raw[t * ranks + r] = OTPGate.logRatio(set.probabilities[t * k + r + 1], set.probabilities[t * k])
            }
        }
        var meanRatio = [Float](repeating: 0, count: ranks), scaleRatio = [Float](repeating: 1, count: ranks)
        for r in 0..<ranks {
            var s = 0.0, s2 = 0.0
            for t in 0..<n {
                s += Double(raw[t * ranks + r]); s2 += Double(raw[t * ranks + r]) * Double(raw[t * ranks + r])
            }
            let m = s / Double(n), variance = max(s2 / Double(n) - m * m, 0)
            meanRatio[r] = Float(m)
            scaleRatio[r] = variance > 1e-20 ? Float(variance.squareRoot()) : 1
        }
        for t in 0..<n {
            for r in 0..<ranks { raw[t * ranks + r] = (raw[t * ranks + r] - meanRatio[r]) / scaleRatio[r] }
        }
        self.ratios = raw
        self.meanRatio = meanRatio
        self.scaleRatio = scaleRatio

        slotExperts = set.experts
        weights = set.weights
        // The Gram matrices serve the output loss only; with measured damage there are none.
        var gram = [Float](repeating: 0, count: set.damage == nil ? n * k * k : 0)
        if set.damage == nil {
            set.expertOutputs.withUnsafeBufferPointer { e in
                for t in 0..<n {
                    let base = e.baseAddress! + t * k * h
                    for i in 0..<k {
                        for j in i..<k {
                            let g = Kernels.dot(base + i * h, base + j * h, h)
                            gram[t * k * k + i * k + j] = g
                            gram[t * k * k + j * k + i] = g
                        }
                    }
                }
            }
        }
        self.gram = gram
        damage = set.damage
        scale = Float(set.lossScale)
    }

    /// The gate that is ODP with `odpBeta` (slot j runs when `p_j/p_1 > β`), in standardised form.
    func initialParameters(odpBeta: Float) -> [Float] {
        var p = [Float](repeating: 0, count: parameterCount)
        let logBeta = odpBeta > 0 ? max(log(odpBeta), OTPGate.minimumLogRatio) : OTPGate.minimumLogRatio
        for r in 0..<ranks {
            // z = a'·(ρ − log β)/σ_r: a' = 2 makes the standardised ratio's spread twice the noise's unit.
            let a: Float = 2
            p[offsetA + r] = a
            p[offsetB + r] = a * (meanRatio[r] - logBeta) / scaleRatio[r]
        }
        return p
    }

    /// The stored gate for standardised parameters: `w = w'/σ_h`, `a = a'/σ_r`,
    /// `b = b' − Σ_i w'_i μ_i/σ_i − a' μ_r/σ_r`, `c` as is.
    func gate(parameters p: [Float]) -> OTPGate {
        var weight = [Float](repeating: 0, count: ranks * h), a = [Float](repeating: 0, count: ranks), b = a
        for r in 0..<ranks {
            var shift: Double = 0
            for i in 0..<h {
                weight[r * h + i] = p[r * h + i] / scaleHidden[i]
                shift += Double(p[r * h + i]) * Double(meanHidden[i] / scaleHidden[i])
            }
            a[r] = p[offsetA + r] / scaleRatio[r]
            b[r] = p[offsetB + r] - Float(shift) - p[offsetA + r] * meanRatio[r] / scaleRatio[r]
        }
        return OTPGate(
            hiddenSize: h, slots: k, expertCount: experts, weight: weight, ratioScale: a, bias: b,
            expertBias: Array(p[offsetC..<(offsetC + experts)]))
    }

    /// The minibatch objective `(1/B) Σ_t ‖r_t‖²/S + λ (f − keep)²` and its gradient (overwritten).
    /// `noise`: logistic noise `[B, R]`. `hard`: straight-through masks `[z + L > 0]` (training);
    /// otherwise the relaxed masks `s` themselves, whose gradient is exact (the finite-difference test).
    /// Returns the objective and the batch's kept fraction `f`.
    func lossAndGradient(
        parameters: [Float], tokens: [Int], noise: [Float], temperature tau: Float, hard: Bool,
        keep: Float, penalty: Float, gradient: inout [Float]
    ) -> (objective: Double, kept: Double) {
        let batch = tokens.count, (k, ranks, h) = (k, ranks, h)
        precondition(
            noise.count == batch * ranks && gradient.count == parameterCount && parameters.count == parameterCount)
        if logit.count < batch * ranks {
            logit = [Float](repeating: 0, count: batch * ranks)
            soft = logit
            mask = [Float](repeating: 0, count: batch * k)
        }
        let invB = 1 / Float(batch), invS = scale > 0 ? 1 / scale : 0
        var keptSum: Float = 0, error: Float = 0
        let offsetA = offsetA, offsetB = offsetB, offsetC = offsetC
        parameters.withUnsafeBufferPointer { p in
            features.withUnsafeBufferPointer { x in
                ratios.withUnsafeBufferPointer { rho in
                    // Pass 1: logits and masks.
                    for (b, t) in tokens.enumerated() {
                        mask[b * k] = 1
                        for r in 0..<ranks {
                            let z =
                                Kernels.dot(p.baseAddress! + r * h, x.baseAddress! + t * h, h)
                                + p[offsetA + r] * rho[t * ranks + r] + p[offsetB + r]
                                + p[offsetC + Int(slotExperts[t * k + r + 1])]
                            let noisy = z + noise[b * ranks + r]
                            let s = 1 / (1 + (-noisy / tau).exponential)
                            logit[b * ranks + r] = z
                            soft[b * ranks + r] = s
                            let m: Float = hard ? (noisy > 0 ? 1 : 0) : s
                            mask[b * k + r + 1] = m
                            keptSum += m
                        }
                    }
                }
            }
        }
        let kept = (Float(batch) + keptSum) / Float(batch * k)
        let penaltySlope = 2 * penalty * (kept - keep) / Float(batch * k)
        for i in gradient.indices { gradient[i] = 0 }
        gradient.withUnsafeMutableBufferPointer { g in
            features.withUnsafeBufferPointer { x in
                ratios.withUnsafeBufferPointer { rho in
                    gram.withUnsafeBufferPointer { gram in
                        weights.withUnsafeBufferPointer { w in
                            mask.withUnsafeBufferPointer { m in
                                var dm = SIMD8<Float>()
                                for (b, t) in tokens.enumerated() {
                                    // Pass 2: ∂/∂m from the Gram matrix, chained through ∂s/∂z.
                                    if let damage {
                                        // Σ_j (1 − m_j) d_j: ∂/∂m_j = −d_j.
                                        for r in 0..<ranks {
                                            let d = damage[t * ranks + r]
                                            error += (1 - m[b * k + r + 1]) * d
                                            dm[r + 1] = -d
                                        }
                                    } else {
                                        withUnsafeMutablePointer(to: &dm) { dmPointer in
                                            dmPointer.withMemoryRebound(to: Float.self, capacity: 8) { dm in
                                                error += PruningLoss.squaredError(
                                                    gram: gram.baseAddress! + t * k * k,
                                                    weights: w.baseAddress! + t * k,
                                                    mask: m.baseAddress! + b * k, slots: k, gradient: dm)
                                            }
                                        }
                                    }
                                    for r in 0..<ranks {
                                        let s = soft[b * ranks + r]
                                        let dz = (dm[r + 1] * invB * invS + penaltySlope) * s * (1 - s) / tau
                                        if dz == 0 { continue }
                                        axpy(dz, x.baseAddress! + t * h, g.baseAddress! + r * h, h)
                                        g[offsetA + r] += dz * rho[t * ranks + r]
                                        g[offsetB + r] += dz
                                        g[offsetC + Int(slotExperts[t * k + r + 1])] += dz
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let objective = Double(error * invB * invS) + Double(penalty) * Double(kept - keep) * Double(kept - keep)
        return (objective, Double(kept))
    }

    /// `y += α·x` over `count` floats, SIMD8.
    @inline(__always)
    private func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ count: Int) {
        var i = 0
        let a = SIMD8<Float>(repeating: alpha), rawX = UnsafeRawPointer(x), rawY = UnsafeMutableRawPointer(y)
        while i + 8 <= count {
            var v = rawY.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            v.addProduct(a, rawX.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self))
            rawY.storeBytes(of: v, toByteOffset: 4 * i, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            y[i] += alpha * x[i]
            i += 1
        }
    }
}

/// Adam (Kingma & Ba 2015) with bias correction and decoupled weight decay (AdamW, Loshchilov &
/// Hutter 2019): `θ -= lr · (m̂/(√v̂ + ε) + decay · θ)`.
struct Adam {
    var first: [Float], second: [Float]
    let beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8
    var t = 0

    init(count: Int) {
        first = [Float](repeating: 0, count: count)
        second = first
    }

    mutating func step(_ parameters: inout [Float], gradient: [Float], learningRate lr: Float, decay: [Float]) {
        t += 1
        let c1 = 1 - pow(beta1, Float(t)), c2 = 1 - pow(beta2, Float(t))
        let (b1, b2, eps) = (beta1, beta2, epsilon)
        for i in parameters.indices {
            let g = gradient[i]
            first[i] = b1 * first[i] + (1 - b1) * g
            second[i] = b2 * second[i] + (1 - b2) * g * g
            parameters[i] -= lr * ((first[i] / c1) / ((second[i] / c2).squareRoot() + eps) + decay[i] * parameters[i])
        }
    }
}
