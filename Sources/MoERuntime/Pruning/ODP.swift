import Foundation

/// MC-MoE's Online Dynamic Pruning (ODP), the baseline OTP must beat: after routing, slot j ≥ 1
/// of the top-k is dropped when its softmax probability is small next to the top-1's,
/// `p_j < β_l · p_1`; the top-1 always runs. β is per layer (MC-MoE uses one value around
/// 0.4–0.6); layers without a β run every slot. The runtime rescales the kept weights.
///
/// Not reproduced: MC-MoE's prefill exception (both experts kept for the ~2% most important
/// tokens, judged by attention), which needs the attention scores the pruner does not see.
public final class ODPPruner: ExpertPruner, Sendable {
    /// β per MoE layer index.
    public let betas: [Int: Float]

    public init(betas: [Int: Float]) { self.betas = betas }

    /// One β for the layers `0..<layers`.
    public convenience init(beta: Float, layers: Int) {
        self.init(betas: Dictionary(uniqueKeysWithValues: (0..<layers).map { ($0, beta) }))
    }

    public func keep(
        layer: Int, hidden: UnsafeBufferPointer<Float>, probabilities: [Float], experts: [Int], weights: [Float]
    ) -> [Bool] {
        guard let beta = betas[layer], let first = experts.first else {
            return Array(repeating: true, count: experts.count)
        }
        let p1 = probabilities[first]
        return experts.indices.map { $0 == 0 || !(probabilities[experts[$0]] < beta * p1) }
    }

    /// The β that keeps the fraction `keep` of all top-k slots (top-1 included: with top-2,
    /// `keep` 0.8 runs 1.6 experts per token on average) on tokens whose top-k probabilities,
    /// largest first, are `probabilities` (`[n, k]`). β sits halfway between two consecutive
    /// ratios `p_j/p_1`, so the fraction is met to within ties; `keep` is clamped to `[1/k, 1]`
    /// (β = 0 keeps everything, β = 2 only the top-1 — every ratio is at most 1).
    public static func calibrateBeta(probabilities: [Float], slots k: Int, keep: Double) -> Float {
        precondition(k >= 1 && probabilities.count % k == 0)
        let n = probabilities.count / k
        guard k > 1, n > 0 else { return 0 }
        var ratios = [Float]()
        ratios.reserveCapacity(n * (k - 1))
        for t in 0..<n {
            let p1 = probabilities[t * k]
            for j in 1..<k { ratios.append(p1 > 0 ? probabilities[t * k + j] / p1 : 0) }
        }
        ratios.sort(by: >)
        // Slots beyond the top-1 to keep.
        let extra = min(max(Int((keep * Double(n * k)).rounded()) - n, 0), ratios.count)
        if extra == 0 { return 2 }
        if extra == ratios.count { return 0 }
        // Keep ratios[0..<extra] (those ≥ β), drop the rest (< β).
        let above = ratios[extra - 1], below = ratios[extra]
        return above > below ? (above + below) / 2 : above
    }
}
