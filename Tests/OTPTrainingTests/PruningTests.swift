import Foundation
@testable import ModelFormat
@testable import MoERuntime
@testable import OTPTraining
import Testing

/// Expert pruning policies: ODP's threshold rule and calibration, OTP's gate, trainer and storage.
@Suite struct PruningTests {
    /// Kept fraction of slots a trained gate or calibrated β must land within.
    static let keepTolerance = 0.02
    /// Relative error allowed between the analytic gradient and central differences (Float).
    static let gradientTolerance: Float = 2e-2

    // MARK: Synthetic sets

    /// A top-k layer of random tokens. The first two slots' probabilities have `p2/p1` uniform in
    /// [0.1, 1]; `damage(h, w2)` is what dropping slot 2 costs (`‖y_full − y([1,0])‖²` for k = 2),
    /// built in by placing `E2 = E1 + (√damage / w2)·u` for a random unit `u`.
    static func syntheticSet(
        count n: Int, hiddenSize h: Int = 16, expertCount: Int = 8, slots k: Int = 2, seed: UInt64,
        damage: (_ hidden: [Float], _ w2: Float) -> Float
    ) -> OTPTrainingSet {
        var random = PruningRandom(seed: seed)
        var hidden = [Float](), probabilities = [Float](), experts = [Int32](), weights = [Float](), outputs = [Float]()
        for _ in 0..<n {
            let x = (0..<h).map { _ in random.gaussian() }
            hidden += x
            // Distinct experts for the k slots.
            var chosen = [Int32]()
            while chosen.count < k {
                let e = Int32(random.below(expertCount))
                if !chosen.contains(e) { chosen.append(e) }
            }
            experts += chosen
            let p1 = 0.2 + 0.4 * random.uniform()
            var p = [p1]
            for _ in 1..<k { p.append(p.last! * (0.1 + 0.9 * random.uniform())) }
            probabilities += p
            let total = p.reduce(0, +)
            let w = p.map { $0 / total }
            weights += w
            let e1 = (0..<h).map { _ in random.gaussian() / Float(h).squareRoot() }
            var u = (0..<h).map { _ in random.gaussian() }
            let norm = u.reduce(0) { $0 + $1 * $1 }.squareRoot()
            u = u.map { $0 / norm }
            let step = damage(x, w[1]).squareRoot() / w[1]
            outputs += e1
            outputs += zip(e1, u).map { $0 + step * $1 }
            for _ in 2..<max(k, 2) { outputs += (0..<h).map { _ in random.gaussian() / Float(h).squareRoot() } }
        }
        return OTPTrainingSet(
            layer: 3, hiddenSize: h, slots: k, expertCount: expertCount, hidden: hidden,
            probabilities: probabilities, experts: experts, weights: weights, expertOutputs: outputs)
    }

    /// Damage set by the token (its first hidden coordinate), not by the router's confidence.
    static func hiddenDamage(_ x: [Float], _ w2: Float) -> Float { 0.1 * exp(2 * x[0]) }
    /// Damage set by the router's confidence alone: `‖E1 − E2‖` fixed, so dropping costs `∝ w2²`
    /// and ODP's rule is the best possible.
    static func ratioDamage(_ x: [Float], _ w2: Float) -> Float { 0.5 * w2 * w2 }

    // MARK: ODP

    @Test func odpRuleOnHandCases() {
        let pruner = ODPPruner(betas: [0: 0.5, 2: 0.3])
        var p = [Float](repeating: 0, count: 8)
        p[5] = 0.5; p[1] = 0.2; p[7] = 0.1
        let h = [Float](repeating: 0, count: 4)
        h.withUnsafeBufferPointer { h in
            #expect(
                pruner.keep(layer: 0, hidden: h, probabilities: p, experts: [5, 1, 7], weights: [0.6, 0.24, 0.16]) == [
                    true, false, false,
                ])
            #expect(
                pruner.keep(layer: 2, hidden: h, probabilities: p, experts: [5, 1, 7], weights: [0.6, 0.24, 0.16]) == [
                    true, true, false,
                ])
            // No β for layer 1: every slot runs.
            #expect(
                pruner.keep(layer: 1, hidden: h, probabilities: p, experts: [5, 1, 7], weights: [0.6, 0.24, 0.16]) == [
                    true, true, true,
                ])
            // p2 = β·p1 exactly is not "small": it runs.
            var q = [Float](repeating: 0, count: 8)
            q[0] = 0.5; q[3] = 0.25
            #expect(
                pruner.keep(layer: 0, hidden: h, probabilities: q, experts: [0, 3], weights: [0.67, 0.33]) == [
                    true, true,
                ])
            // β = 2 keeps only the top-1, β = 0 keeps all.
            #expect(
                ODPPruner(beta: 2, layers: 1).keep(
                    layer: 0, hidden: h, probabilities: q, experts: [0, 3], weights: [1, 0]) == [true, false])
            #expect(
                ODPPruner(beta: 0, layers: 1).keep(
                    layer: 0, hidden: h, probabilities: q, experts: [0, 3], weights: [1, 0]) == [true, true])
        }
    }

    @Test(arguments: [(2, 0.8), (2, 0.55), (4, 0.5), (4, 0.9), (2, 1.0), (2, 0.5)])
    func odpCalibrationHitsTheTarget(slots: Int, keep: Double) {
        let set = Self.syntheticSet(count: 2000, hiddenSize: 4, slots: slots, seed: 7, damage: Self.ratioDamage)
        let odp = ODPPruner.calibrate(sets: [set], keep: keep)
        let result = evaluate(set: set, pruner: odp)
        #expect(abs(result.keptFraction - keep) <= 1.0 / 2000, "kept \(result.keptFraction) for target \(keep)")
        #expect(odp.betas[set.layer] != nil)
    }

    // MARK: Loss and gradients

    /// The k×k Gram form of the loss equals the loss computed from the expert outputs.
    @Test func gramLossMatchesDirectLoss() {
        let set = Self.syntheticSet(count: 50, hiddenSize: 12, slots: 3, seed: 3, damage: Self.hiddenDamage)
        let objective = OTPObjective(set: set)
        var full = [Float](repeating: 0, count: 12), pruned = full
        for t in 0..<set.count {
            for mask in [[true, true, true], [true, false, true], [true, true, false], [true, false, false]] {
                let m = mask.map { Float($0 ? 1 : 0) }
                let gram = objective.gram[(t * 9)..<(t * 9 + 9)].map { $0 }
                let w = Array(set.weights[(t * 3)..<(t * 3 + 3)])
                let viaGram = PruningLoss.squaredError(gram: gram, weights: w, mask: m, slots: 3, gradient: nil)
                set.expertOutputs.withUnsafeBufferPointer { e in
                    ExpertMix.combine(e.baseAddress! + t * 36, w, mask: nil, slots: 3, hiddenSize: 12, into: &full)
                    ExpertMix.combine(e.baseAddress! + t * 36, w, mask: mask, slots: 3, hiddenSize: 12, into: &pruned)
                }
                let direct = zip(full, pruned).reduce(Float(0)) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }
                #expect(
                    abs(viaGram - direct) <= 1e-5 * max(1, direct), "token \(t) mask \(mask): \(viaGram) vs \(direct)")
            }
        }
    }

    /// `∂‖r‖²/∂m` against central differences, at soft masks and at the hard ones training uses.
    @Test func maskGradientMatchesFiniteDifferences() {
        var random = PruningRandom(seed: 11)
        let k = 3
        for trial in 0..<20 {
            var a = (0..<(k * 4)).map { _ in Double(random.gaussian()) }
            a = a.map { $0 }
            // G = AᵀA-like Gram of k random 4-vectors.
            var gram = [Float](repeating: 0, count: k * k)
            for i in 0..<k {
                for j in 0..<k { gram[i * k + j] = Float((0..<4).reduce(0.0) { $0 + a[i * 4 + $1] * a[j * 4 + $1] }) }
            }
            let w = (0..<k).map { _ in 0.1 + random.uniform() }
            let m: [Float] =
                trial < 10 ? [1, random.uniform(), random.uniform()] : [1, Float(trial % 2), Float((trial / 2) % 2)]
            var gradient = [Float](repeating: 0, count: k)
            _ = PruningLoss.squaredError(gram: gram, weights: w, mask: m, slots: k, gradient: &gradient)
            for j in 1..<k {
                let eps: Float = 1e-3
                var plus = m, minus = m
                plus[j] += eps; minus[j] -= eps
                let fd =
                    (PruningLoss.squaredError(gram: gram, weights: w, mask: plus, slots: k, gradient: nil)
                        - PruningLoss.squaredError(gram: gram, weights: w, mask: minus, slots: k, gradient: nil))
                    / (2 * eps)
                #expect(
                    abs(fd - gradient[j]) <= Self.gradientTolerance * max(0.1, abs(gradient[j])),
                    "trial \(trial) slot \(j): analytic \(gradient[j]) vs finite difference \(fd)")
            }
        }
    }

    /// The whole objective's parameter gradient (relaxed masks, where it is exact) against central
    /// differences: loss, penalty, the ST chain through s(1−s)/τ, and every parameter block.
    @Test func parameterGradientMatchesFiniteDifferences() {
        let set = Self.syntheticSet(
            count: 24, hiddenSize: 6, expertCount: 5, slots: 3, seed: 5, damage: Self.hiddenDamage)
        let objective = OTPObjective(set: set)
        var random = PruningRandom(seed: 9)
        let parameters = (0..<objective.parameterCount).map { _ in 0.5 * random.gaussian() }
        let tokens = Array(0..<24).shuffled(using: &random)
        let noise = (0..<(24 * 2)).map { _ -> Float in
            let u = random.uniform(); return log(u) - log(1 - u)
        }
        var gradient = [Float](repeating: 0, count: objective.parameterCount), scratch = gradient
        func value(_ p: [Float]) -> Double {
            objective.lossAndGradient(
                parameters: p, tokens: tokens, noise: noise, temperature: 0.8, hard: false,
                keep: 0.6, penalty: 5, gradient: &scratch
            ).objective
        }
        _ = objective.lossAndGradient(
            parameters: parameters, tokens: tokens, noise: noise, temperature: 0.8, hard: false,
            keep: 0.6, penalty: 5, gradient: &gradient)
        let numeric = Self.centralDifferences(parameters, value: value)
        let difference = zip(numeric, gradient).reduce(Float(0)) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
        let norm = gradient.reduce(Float(0)) { $0 + $1 * $1 }.squareRoot()
        #expect(norm > 1e-4)
        #expect(difference <= Self.gradientTolerance * norm, "‖fd − analytic‖ = \(difference), ‖analytic‖ = \(norm)")
        // Every block (w, a, b, c) gets gradient.
        for range in [
            0..<objective.offsetA, objective.offsetA..<objective.offsetB, objective.offsetB..<objective.offsetC,
            objective.offsetC..<objective.parameterCount,
        ] {
            #expect(gradient[range].contains { $0 != 0 })
        }
    }

    /// `∂value/∂p_i` by central differences of step `eps`.
    static func centralDifferences(_ parameters: [Float], eps: Float = 1e-2, value: ([Float]) -> Double) -> [Float] {
        var p = parameters
        return parameters.indices.map { i in
            p[i] = parameters[i] + eps
            let plus = value(p)
            p[i] = parameters[i] - eps
            let minus = value(p)
            p[i] = parameters[i]
            return Float((plus - minus) / Double(2 * eps))
        }
    }

    // MARK: Training

    static let quick = OTPTrainingOptions(keep: 0.75, epochs: 30, batchSize: 128, seed: 1)

    @Test func trainingIsDeterministicUnderASeed() {
        let set = Self.syntheticSet(count: 1500, seed: 21, damage: Self.hiddenDamage)
        let options = OTPTrainingOptions(keep: 0.8, steps: 200, batchSize: 64, seed: 42)
        let (a, ra) = OTPTrainer.train(set: set, options: options)
        let (b, rb) = OTPTrainer.train(set: set, options: options)
        #expect(a == b)
        #expect(ra.keptFraction == rb.keptFraction && ra.meanLoss == rb.meanLoss)
        var other = options
        other.seed = 43
        #expect(OTPTrainer.train(set: set, options: other).gate != a)
    }

    /// Where the harm of dropping slot 2 is written in the hidden state, OTP sees it and ODP cannot.
    @Test func otpBeatsODPWhenDamageDependsOnTheToken() {
        let set = Self.syntheticSet(count: 4000, seed: 31, damage: Self.hiddenDamage)
        let test = Self.syntheticSet(count: 4000, seed: 32, damage: Self.hiddenDamage)
        let (gate, report) = OTPTrainer.train(set: set, options: Self.quick)
        #expect(abs(report.keptFraction - 0.75) <= Self.keepTolerance)
        let otp = evaluate(set: test, pruner: OTPPruner(gates: [set.layer: gate]))
        let odp = evaluate(set: test, pruner: ODPPruner.calibrate(sets: [test], keep: 0.75))
        #expect(abs(otp.keptFraction - 0.75) <= Self.keepTolerance)
        #expect(otp.meanLoss < 0.5 * odp.meanLoss, "OTP \(otp) vs ODP \(odp); report \(report)")
        #expect(report.meanLoss < 0.5 * report.odpMeanLoss && !report.fellBackToODP)
    }

    /// Where the harm depends only on p2/p1, ODP's rule is optimal; OTP must not be worse.
    @Test func otpMatchesODPWhenDamageDependsOnTheRatio() {
        let set = Self.syntheticSet(count: 4000, seed: 41, damage: Self.ratioDamage)
        let test = Self.syntheticSet(count: 4000, seed: 42, damage: Self.ratioDamage)
        let (gate, report) = OTPTrainer.train(set: set, options: Self.quick)
        #expect(abs(report.keptFraction - 0.75) <= Self.keepTolerance)
        let otp = evaluate(set: test, pruner: OTPPruner(gates: [set.layer: gate]))
        let odp = evaluate(set: test, pruner: ODPPruner.calibrate(sets: [test], keep: 0.75))
        #expect(abs(otp.keptFraction - 0.75) <= Self.keepTolerance)
        #expect(otp.meanLoss <= 1.1 * odp.meanLoss + 1e-3, "OTP \(otp) vs ODP \(odp); report \(report)")
        #expect(report.meanLoss <= report.odpMeanLoss)
        // Without the fallback, the trained gate alone is within 10% too.
        #expect(report.trainedMeanLoss <= 1.1 * report.odpMeanLoss)
    }

    @Test(arguments: [0.6, 0.8, 0.95])
    func keptFractionLandsOnTarget(keep: Double) {
        let set = Self.syntheticSet(count: 2000, slots: 3, seed: 51, damage: Self.hiddenDamage)
        let (gate, report) = OTPTrainer.train(
            set: set, options: OTPTrainingOptions(keep: keep, steps: 150, batchSize: 128, seed: 2))
        let result = evaluate(set: set, pruner: OTPPruner(gates: [set.layer: gate]))
        #expect(
            abs(result.keptFraction - keep) <= Self.keepTolerance, "kept \(result.keptFraction) for \(keep): \(report)")
        #expect(result.keptFraction == report.keptFraction)
    }

    /// With no hidden weights, the gate is ODP: same decisions on every token.
    @Test func gateWithoutHiddenWeightsIsODP() {
        let set = Self.syntheticSet(count: 500, hiddenSize: 8, slots: 2, seed: 61, damage: Self.ratioDamage)
        let beta: Float = 0.45
        let gate = OTPGate(odpBeta: beta, hiddenSize: 8, slots: 2, expertCount: 8)
        let otp = evaluate(set: set, pruner: OTPPruner(gates: [set.layer: gate]))
        let odp = evaluate(set: set, pruner: ODPPruner(betas: [set.layer: beta]))
        #expect(abs(otp.keptFraction - odp.keptFraction) <= 1.0 / 1000)
        #expect(abs(otp.meanLoss - odp.meanLoss) <= 1e-3 * max(odp.meanLoss, 1e-6))
    }

    // MARK: Storage

    static func sampleGate() -> OTPGate {
        OTPGate(
            hiddenSize: 3, slots: 3, expertCount: 4, weight: [1, 2, 3, 4, 5, 6], ratioScale: [0.5, 0.25],
            bias: [-1, 1],
            expertBias: [0, 0.1, 0.2, 0.3])
    }

    @Test func gatesRoundTripThroughTensors() throws {
        let pruner = OTPPruner(gates: [1: Self.sampleGate(), 4: Self.sampleGate()])
        #expect(pruner.tensors(layer: 0).isEmpty)
        let stored = Dictionary(uniqueKeysWithValues: [1, 4].map { ($0, pruner.tensors(layer: $0)) })
        #expect(
            stored[1]!.map(\.suffix) == [
                "otp_gate.weight", "otp_gate.ratio_scale", "otp_gate.bias", "otp_gate.expert_bias",
            ])
        #expect(stored[1]![0].shape == [2, 3])
        let loaded = try OTPPruner(tensors: stored, file: "model.safetensors")
        #expect(loaded.gates == pruner.gates)
        try loaded.validate(hiddenSize: 3, expertCount: 4, topK: 3, moeLayers: [0, 1, 2, 3, 4], file: "m")
        #expect(throws: ModelFormatError.self) {
            try loaded.validate(hiddenSize: 3, expertCount: 4, topK: 2, moeLayers: [1, 4], file: "m")
        }
        #expect(throws: ModelFormatError.self) {
            try loaded.validate(hiddenSize: 3, expertCount: 4, topK: 3, moeLayers: [1], file: "m")
        }
    }

    @Test func malformedGateTensorsAreRejected() {
        let good = Self.sampleGate().tensors
        func rejects(_ tensors: [OTPTensor], _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
            do {
                _ = try OTPPruner(tensors: [2: tensors], file: "gates.safetensors")
                Issue.record("accepted malformed tensors (\(fragment))", sourceLocation: sourceLocation)
            } catch let error as ModelFormatError {
                #expect(error.file == "gates.safetensors", sourceLocation: sourceLocation)
                #expect(
                    error.problem.contains("layer 2") && error.problem.contains(fragment), "\(error.problem)",
                    sourceLocation: sourceLocation)
            } catch {
                Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
            }
        }
        rejects(Array(good.dropLast()), "missing")
        rejects(good + [good[1]], "twice")
        rejects(good + [("otp_gate.extra", [1], [0])], "unexpected")
        var wrongCount = good
        wrongCount[0].values.removeLast()
        rejects(wrongCount, "values")
        var nonFinite = good
        nonFinite[2].values[0] = .nan
        rejects(nonFinite, "not finite")
        var flat = good
        flat[0].shape = [6]
        rejects(flat, "[k−1, hidden]")
        var mismatched = good
        mismatched[1] = ("otp_gate.ratio_scale", [1], [0.5])
        rejects(mismatched, "ratio_scale")
        var fewExperts = good
        fewExperts[3] = ("otp_gate.expert_bias", [2], [0, 0])
        rejects(fewExperts, "expert_bias")
    }
}
