import Foundation
import ModelFormat
import Kernels
import MoERuntime

/// One MoE layer's calibration tokens for training and judging expert pruning: what the router
/// chose for each token and what each chosen expert produced. Slots are the router's top-k,
/// largest first, exactly as the forward pass hands them to an `ExpertPruner`.
public struct OTPTrainingSet: Sendable {
    /// The MoE layer these tokens come from (the index the forward pass passes to `keep(layer:…)`).
    public var layer: Int
    /// Number of tokens `n`.
    public var count: Int
    /// Hidden size `H`.
    public var hiddenSize: Int
    /// Top-k `k` (slots per token).
    public var slots: Int
    /// Experts in the layer `E`.
    public var expertCount: Int
    /// The tokens' MoE inputs (after the post-attention norm), `[n, H]`.
    public var hidden: [Float]
    /// Softmax probability (over all experts, before any top-k renormalisation) of each slot's
    /// expert, `[n, k]`, largest first.
    public var probabilities: [Float]
    /// Each slot's expert index, `[n, k]`.
    public var experts: [Int32]
    /// The weights the model sums the slots' outputs with, `[n, k]`.
    public var weights: [Float]
    /// Each slot's expert output for the token, `[n, k, H]`; empty in a set that carries
    /// measured `damage` instead (the end-to-end targets keep no outputs).
    public var expertOutputs: [Float]
    /// Measured harm of dropping slot j (1..<k) alone, `[n, k−1]`: the change in the token's
    /// next-token log-likelihood or the KL of its next-token distribution (`PruningDamage`); may be
    /// negative (the drop helped). When set, it replaces the output MSE as the pruning loss:
    /// `Σ_j (1 − m_j) d_j / D`, `D = mean_t Σ_j |d_tj|` — drops add their harms.
    public var damage: [Float]? {
        didSet {
            precondition(
                damage.map { $0.count == count * (slots - 1) && $0.allSatisfy { $0.isFinite } } ?? true,
                "damage must be [n, k−1] and finite")
        }
    }

    /// What the model-wide budget spreads the drops by (`OTPBudget`), when not `damage`: with the
    /// `expected` target the gates learn from the KL and the layers' shares come from the real next
    /// tokens' ΔNLL, `[n, k−1]`.
    public var budgetDamage: [Float]? {
        didSet {
            precondition(
                budgetDamage.map { $0.count == count * (slots - 1) && $0.allSatisfy { $0.isFinite } } ?? true,
                "budget damage must be [n, k−1] and finite")
        }
    }

    public init(
        layer: Int, hiddenSize: Int, slots: Int, expertCount: Int, hidden: [Float], probabilities: [Float],
        experts: [Int32], weights: [Float], expertOutputs: [Float]
    ) {
        let n = hiddenSize > 0 ? hidden.count / hiddenSize : 0
        precondition(slots >= 1 && hiddenSize >= 1 && hidden.count == n * hiddenSize, "hidden is not [n, H]")
        precondition(
            probabilities.count == n * slots && experts.count == n * slots && weights.count == n * slots,
            "probabilities, experts and weights must be [n, k]")
        precondition(
            expertOutputs.isEmpty || expertOutputs.count == n * slots * hiddenSize,
            "expertOutputs must be [n, k, H] or empty")
        precondition(experts.allSatisfy { $0 >= 0 && Int($0) < expertCount }, "expert index out of range")
        self.layer = layer
        self.count = n
        self.hiddenSize = hiddenSize
        self.slots = slots
        self.expertCount = expertCount
        self.hidden = hidden
        self.probabilities = probabilities
        self.experts = experts
        self.weights = weights
        self.expertOutputs = expertOutputs
    }

    /// The tokens `range` of this set (with their damage), e.g. a held-out part of the windows.
    public func slice(_ range: Range<Int>) -> OTPTrainingSet {
        precondition(range.lowerBound >= 0 && range.upperBound <= count, "slice out of range")
        let (h, k) = (hiddenSize, slots)
        var part = OTPTrainingSet(
            layer: layer, hiddenSize: h, slots: k, expertCount: expertCount,
            hidden: Array(hidden[(range.lowerBound * h)..<(range.upperBound * h)]),
            probabilities: Array(probabilities[(range.lowerBound * k)..<(range.upperBound * k)]),
            experts: Array(experts[(range.lowerBound * k)..<(range.upperBound * k)]),
            weights: Array(weights[(range.lowerBound * k)..<(range.upperBound * k)]),
            expertOutputs: expertOutputs.isEmpty
                ? [] : Array(expertOutputs[(range.lowerBound * k * h)..<(range.upperBound * k * h)]))
        let ranks = (range.lowerBound * (k - 1))..<(range.upperBound * (k - 1))
        part.damage = damage.map { Array($0[ranks]) }
        part.budgetDamage = budgetDamage.map { Array($0[ranks]) }
        return part
    }

    /// The unit every pruning loss in this set is measured in: `mean_t Σ_j d_tj` with `damage`,
    /// otherwise `mean_t ‖y_full(t)‖²`.
    public var lossScale: Double {
        guard let damage else {
            precondition(
                !expertOutputs.isEmpty || count == 0, "a pruning set needs its expert outputs or measured damage")
            return outputScale
        }
        return count > 0 ? damage.reduce(0.0) { $0 + abs(Double($1)) } / Double(count) : 0
    }

    /// `mean_t ‖y_full(t)‖²`.
    public var outputScale: Double {
        var total = 0.0
        expertOutputs.withUnsafeBufferPointer { outputs in
            weights.withUnsafeBufferPointer { weights in
                var full = [Float](repeating: 0, count: hiddenSize)
                for t in 0..<count {
                    ExpertMix.combine(
                        outputs.baseAddress! + t * slots * hiddenSize, weights.baseAddress! + t * slots,
                        mask: nil, slots: slots, hiddenSize: hiddenSize, into: &full)
                    total += Double(
                        full.withUnsafeBufferPointer { Kernels.dot($0.baseAddress!, $0.baseAddress!, hiddenSize) })
                }
            }
        }
        return count > 0 ? total / Double(count) : 0
    }
}

/// The damage pruning does to one token's MoE output, as the runtime computes that output.
///
/// With mask `m` (m_j = 1: slot j runs) the runtime combines the kept slots and rescales their
/// weights to the full top-k's sum: `y(m) = Σ_j m_j w_j E_j / Σ_j m_j w_j · Σ_j w_j`. The loss of a
/// token is `‖y_full − y(m)‖² / S` with `S = mean_t ‖y_full(t)‖²` over the set: squared error in
/// the residual stream (where the MoE output is added), in units of the set's typical output.
/// A per-token `‖y_full‖²` denominator was rejected: it weights tokens whose MoE output is nearly
/// zero — where no choice does any absolute harm — as heavily as the rest.
public enum PruningLoss {
    /// The same squared error from the slots' Gram matrix `G_ij = E_iᵀE_j` (`[k, k]`), for a
    /// continuous mask `m ∈ [0, 1]^k` with `m_0 > 0`; with `gradient` set, also `∂‖r‖²/∂m_j`.
    ///
    /// `r = y(m) − y_full = Σ_i d_i E_i` with `d_i = m_i w_i W/D − w_i`, `W = Σ w`, `D = Σ m w`, so
    /// `‖r‖² = dᵀGd` and `∂‖r‖²/∂m_j = 2 (W w_j / D) · ((Gd)_j − Σ_i (m_i w_i / D)(Gd)_i)`.
    /// Training never touches the `[k, H]` outputs again: a token costs O(k²), not O(kH).
    @inline(__always)
    static func squaredError(
        gram: UnsafePointer<Float>, weights: UnsafePointer<Float>, mask: UnsafePointer<Float>,
        slots k: Int, gradient: UnsafeMutablePointer<Float>?
    ) -> Float {
        var total: Float = 0, kept: Float = 0
        for j in 0..<k {
            total += weights[j]
            kept += mask[j] * weights[j]
        }
        // Up to 8 slots on the stack: top-k of the MoEs pmq reads is at most 8.
        var d = SIMD8<Float>(), gd = SIMD8<Float>()
        precondition(k <= 8, "OTP supports top-k up to 8")
        let ratio = total / kept
        for i in 0..<k { d[i] = mask[i] * weights[i] * ratio - weights[i] }
        var error: Float = 0
        for i in 0..<k {
            var s: Float = 0
            for j in 0..<k { s += gram[i * k + j] * d[j] }
            gd[i] = s
            error += d[i] * s
        }
        if let gradient {
            var mean: Float = 0
            for i in 0..<k { mean += mask[i] * weights[i] / kept * gd[i] }
            for j in 0..<k { gradient[j] = 2 * ratio * weights[j] * (gd[j] - mean) }
        }
        return error
    }
}

/// Runs `pruner` over the set as the runtime would (the kept slots' weights rescaled to the full
/// top-k's sum) and measures it directly from the expert outputs (or the measured `damage`).
/// - Returns: `keptFraction`: the mean fraction of top-k slots run (0.8 with top-2 = 1.6 experts
///   per token); `meanLoss`: mean over tokens of `‖y_full − y(m)‖² / S` (`PruningLoss`), or of
///   `Σ_j (1 − m_j) d_j / D` with `damage`.
public func evaluate(set: OTPTrainingSet, pruner: ExpertPruner) -> (keptFraction: Double, meanLoss: Double) {
    let n = set.count, k = set.slots, h = set.hiddenSize
    guard n > 0 else { return (1, 0) }
    let scale = set.lossScale
    var probabilities = [Float](repeating: 0, count: set.expertCount)
    var full = [Float](repeating: 0, count: h), pruned = full
    var kept = 0, loss = 0.0
    set.hidden.withUnsafeBufferPointer { hidden in
        set.expertOutputs.withUnsafeBufferPointer { outputs in
            set.weights.withUnsafeBufferPointer { weights in
                for t in 0..<n {
                    let experts = (0..<k).map { Int(set.experts[t * k + $0]) }
                    for j in 0..<k { probabilities[experts[j]] = set.probabilities[t * k + j] }
                    let mask = pruner.keep(
                        layer: set.layer, hidden: UnsafeBufferPointer(rebasing: hidden[(t * h)..<(t * h + h)]),
                        probabilities: probabilities, experts: experts,
                        weights: Array(weights[(t * k)..<(t * k + k)]))
                    for j in 0..<k { probabilities[experts[j]] = 0 }
                    precondition(mask.count == k && mask.contains(true), "a pruner must keep at least one of the top-k")
                    kept += mask.reduce(0) { $0 + ($1 ? 1 : 0) }
                    if let damage = set.damage {
                        for j in 1..<k where !mask[j] { loss += Double(damage[t * (k - 1) + j - 1]) }
                        continue
                    }
                    let e = outputs.baseAddress! + t * k * h, w = weights.baseAddress! + t * k
                    ExpertMix.combine(e, w, mask: nil, slots: k, hiddenSize: h, into: &full)
                    ExpertMix.combine(e, w, mask: mask, slots: k, hiddenSize: h, into: &pruned)
                    var error: Float = 0
                    for i in 0..<h { error += (full[i] - pruned[i]) * (full[i] - pruned[i]) }
                    loss += Double(error)
                }
            }
        }
    }
    return (Double(kept) / Double(n * k), scale > 0 ? loss / Double(n) / scale : 0)
}

/// The trainer's seeded draws in Float, from ModelFormat's SplitMix64.
struct PruningRandom: RandomNumberGenerator {
    private var generator: SplitMix64
    init(seed: UInt64) { generator = SplitMix64(seed: seed) }
    mutating func next() -> UInt64 { generator.next() }
    /// Uniform in (0, 1), never 0 or 1 in Float.
    mutating func uniform() -> Float { generator.uniformFloat() }
    /// Uniform integer in `0..<bound`.
    mutating func below(_ bound: Int) -> Int { generator.below(bound) }
    /// Standard normal (Box–Muller).
    mutating func gaussian() -> Float { (-2 * log(uniform())).squareRoot() * cos(2 * Float.pi * uniform()) }
}
