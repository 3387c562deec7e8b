import Foundation
@testable import MoERuntime
@testable import OTPTraining
import Testing

/// OTP trained on measured per-drop damage (`OTPTrainingSet.damage`) and the model-wide budget.
@Suite struct OTPDamageTests {
    /// A synthetic set whose slot-2 damage is `damage(hidden, w2)` directly (may be negative).
    static func set(count: Int, layer: Int = 3, slots: Int = 2, seed: UInt64, damage: ([Float], Float) -> Float)
        -> OTPTrainingSet
    {
        var set = PruningTests.syntheticSet(
            count: count, hiddenSize: 16, slots: slots, seed: seed, damage: { _, _ in 1 })
        set.layer = layer
        var values = [Float]()
        for t in 0..<count {
            let x = Array(set.hidden[(t * 16)..<((t + 1) * 16)])
            for j in 1..<slots { values.append(damage(x, set.weights[t * slots + j])) }
        }
        set.damage = values
        return set
    }

    /// `Σ_j (1 − m_j) d_j` evaluated directly on hand-made masks.
    @Test func evaluateSumsTheDroppedSlotsDamage() {
        var s = Self.set(count: 6, slots: 3, seed: 1) { x, _ in x[0] }
        s.damage = [1, 2, 3, 4, -1, 0, 5, 6, 0.5, 0.5, 2, -2]
        /// Drops slot 2 on even tokens, both extra slots on odd ones.
        final class Fixed: ExpertPruner {
            var token = 0
            func keep(
                layer: Int, hidden: UnsafeBufferPointer<Float>, probabilities: [Float], experts: [Int], weights: [Float]
            ) -> [Bool] {
                defer { token += 1 }
                return token % 2 == 0 ? [true, true, false] : [true, false, false]
            }
        }
        let result = evaluate(set: s, pruner: Fixed())
        // Dropped: t0 slot2 (2), t1 both (3+4), t2 slot2 (0), t3 both (5+6), t4 slot2 (0.5), t5 both (2−2).
        let dropped: Double = 2 + 7 + 0 + 11 + 0.5 + 0
        let scale = s.damage!.reduce(0.0) { $0 + abs(Double($1)) } / 6
        #expect(abs(result.meanLoss - dropped / 6 / scale) <= 1e-9)
        #expect(abs(s.lossScale - scale) <= 1e-9)
        #expect(abs(result.keptFraction - (6 + 3) / 18.0) <= 1e-12)
    }

    /// The objective's gradient with damage (relaxed masks) against central differences.
    @Test func damageGradientMatchesFiniteDifferences() {
        let s = Self.set(count: 24, slots: 3, seed: 5) { x, w in x[0] * x[1] + w }
        let objective = OTPObjective(set: s)
        var random = PruningRandom(seed: 9)
        let parameters = (0..<objective.parameterCount).map { _ in 0.5 * random.gaussian() }
        let tokens = Array(0..<24)
        let noise = (0..<(24 * 2)).map { _ -> Float in
            let u = random.uniform(); return log(u) - log(1 - u)
        }
        var gradient = [Float](repeating: 0, count: objective.parameterCount), scratch = gradient
        func value(_ p: [Float]) -> Double {
            objective.lossAndGradient(
                parameters: p, tokens: tokens, noise: noise, temperature: 0.8, hard: false, keep: 0.6,
                penalty: 5, gradient: &scratch
            ).objective
        }
        _ = objective.lossAndGradient(
            parameters: parameters, tokens: tokens, noise: noise, temperature: 0.8, hard: false, keep: 0.6,
            penalty: 5, gradient: &gradient)
        let worst = zip(PruningTests.centralDifferences(parameters, value: value), gradient).map { abs($0 - $1) }.max()!
        let norm = gradient.reduce(Float(0)) { $0 + $1 * $1 }.squareRoot()
        #expect(norm > 1e-4)
        #expect(
            worst <= PruningTests.gradientTolerance * norm, "worst |fd − analytic| = \(worst), ‖analytic‖ = \(norm)")
    }

    /// Damage written in the hidden state (and sometimes negative: the drop helps): the gate
    /// trained on it loses far less of it on fresh tokens than ODP at the same fraction.
    @Test func gateLearnsWhereDropsAreCheap() {
        let damage: ([Float], Float) -> Float = { x, _ in x[2] > 0.5 ? 1 : (x[2] < -0.5 ? -0.2 : 0.1) }
        let train = Self.set(count: 4000, seed: 31, damage: damage)
        let test = Self.set(count: 4000, seed: 32, damage: damage)
        let (gate, report) = OTPTrainer.train(set: train, options: PruningTests.quick)
        let otp = evaluate(set: test, pruner: OTPPruner(gates: [train.layer: gate]))
        let odp = evaluate(set: test, pruner: ODPPruner.calibrate(sets: [test], keep: 0.75))
        #expect(abs(otp.keptFraction - 0.75) <= PruningTests.keepTolerance)
        #expect(!report.fellBackToODP)
        #expect(otp.meanLoss < odp.meanLoss - 0.1, "OTP \(otp) vs ODP \(odp)")
    }

    /// Two layers, one where drops are cheap: the budget takes every drop it can from it, keeps
    /// the expensive layer whole, and the model-wide fraction is the target.
    @Test func budgetDropsWhereItCostsLeast() {
        let cheap = Self.set(count: 1000, layer: 0, seed: 41) { _, w in 0.01 * w }
        let costly = Self.set(count: 1000, layer: 1, seed: 42) { _, w in 1 + w }
        let gates = [
            0: OTPGate(odpBeta: 0.5, hiddenSize: 16, slots: 2, expertCount: 8),
            1: OTPGate(odpBeta: 0.5, hiddenSize: 16, slots: 2, expertCount: 8),
        ]
        // Model-wide 0.8 of 4000 slots: 800 drops, all of which fit in the cheap layer's 1000.
        let (shifted, fractions) = OTPBudget.allocate(sets: [0: cheap, 1: costly], gates: gates, keep: 0.8)
        #expect(abs(fractions[0]! - 0.6) <= 1e-3 && fractions[1]! == 1)
        #expect(abs(evaluate(set: cheap, pruner: OTPPruner(gates: [0: shifted[0]!])).keptFraction - 0.6) <= 1e-3)
        #expect(evaluate(set: costly, pruner: OTPPruner(gates: [1: shifted[1]!])).keptFraction == 1)
        // 0.6 model-wide needs 1600 drops: the cheap layer's 1000, then 600 of the costly one's.
        let (_, more) = OTPBudget.allocate(sets: [0: cheap, 1: costly], gates: gates, keep: 0.6)
        #expect(more[0]! == 0.5 && abs(more[1]! - 0.7) <= 1e-3)
        // Within a layer, the gate's order decides what goes: ODP's gate drops the smallest p2/p1 first.
        let z = OTPTrainer.logits(gate: shifted[0]!, set: cheap)
        let droppedRatios = (0..<1000).filter { z[$0] <= 0 }.map {
            cheap.probabilities[$0 * 2 + 1] / cheap.probabilities[$0 * 2]
        }
        let keptRatios = (0..<1000).filter { z[$0] > 0 }.map {
            cheap.probabilities[$0 * 2 + 1] / cheap.probabilities[$0 * 2]
        }
        #expect(droppedRatios.max()! <= keptRatios.min()!)
    }

    /// Two slices of a set put back together are the set (the held-out split of `--held-out`).
    @Test func slicesPartitionTheSet() {
        var set = Self.set(count: 50, layer: 3, seed: 7) { _, w in w }
        set.budgetDamage = set.damage!.map { -$0 }
        let (head, tail) = (set.slice(0..<20), set.slice(20..<50))
        #expect(head.count == 20 && tail.count == 30 && head.layer == 3)
        #expect(head.hidden + tail.hidden == set.hidden && head.weights + tail.weights == set.weights)
        #expect(
            head.experts + tail.experts == set.experts && head.probabilities + tail.probabilities == set.probabilities)
        #expect(
            head.damage! + tail.damage! == set.damage! && head.budgetDamage! + tail.budgetDamage! == set.budgetDamage!)
    }

    /// With budget damage (the `expected` target), the layers' shares follow it, not the damage
    /// the gates learned from: here the budget damage says the other layer is the cheap one.
    @Test func budgetFollowsBudgetDamageWhenPresent() {
        var cheap = Self.set(count: 1000, layer: 0, seed: 41) { _, w in 0.01 * w }
        var costly = Self.set(count: 1000, layer: 1, seed: 42) { _, w in 1 + w }
        cheap.budgetDamage = costly.damage
        costly.budgetDamage = cheap.damage
        let gates = [
            0: OTPGate(odpBeta: 0.5, hiddenSize: 16, slots: 2, expertCount: 8),
            1: OTPGate(odpBeta: 0.5, hiddenSize: 16, slots: 2, expertCount: 8),
        ]
        let (_, fractions) = OTPBudget.allocate(sets: [0: cheap, 1: costly], gates: gates, keep: 0.8)
        #expect(fractions[0]! == 1 && abs(fractions[1]! - 0.6) <= 1e-3)
    }
}
