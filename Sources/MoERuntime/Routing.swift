import Foundation
import Kernels
import ModelFormat

/// The router's choice for one token, every architecture's rule (`RoutingRule`): scores by
/// softmax or sigmoid; DeepSeek-V3's correction bias added for choosing only; group-limited
/// top-k (only the best `groupsKept` of `groups` groups compete); the chosen experts' weights
/// from the scores, renormalised and/or multiplied by `routed_scaling_factor`.
public enum Routing {
    /// Indices of the k largest values, largest first (ties: lower index first, as torch.topk).
    public static func topK(_ values: [Float], k: Int) -> [Int] {
        Array(values.indices.sorted { values[$0] != values[$1] ? values[$0] > values[$1] : $0 < $1 }.prefix(k))
    }

    /// `logits` of every expert → the scores (what the observer and the pruners see as the
    /// router's probabilities), the chosen experts (best first) and their weights.
    /// `removed` (width 0): those experts are never chosen. Scores are computed over every expert
    /// as the router always does (a softmax's denominator keeps the removed ones, so no other
    /// token's weights move), the top-k is filled from the remaining experts (ignoring the group
    /// limit if the kept groups no longer hold k of them), and the chosen weights are their scores,
    /// renormalised and scaled as the architecture does. Only tokens that chose a removed expert
    /// route differently.
    public static func route(
        _ logits: ArraySlice<Float>, rule: RoutingRule, bias: [Float]? = nil, removed: [Bool]? = nil
    ) -> (scores: [Float], experts: [Int], weights: [Float]) {
        var scores = Array(logits)
        switch rule.scoring {
        case .softmax: Kernels.softmax(&scores)
        case .sigmoid: for i in scores.indices { scores[i] = Kernels.sigmoid(scores[i]) }
        }
        var choice = scores
        if rule.correctionBias, let bias { for i in choice.indices { choice[i] += bias[i] } }
        // Groups are scored as if nothing were removed, so a token that did not choose a removed
        // expert keeps its groups and its experts.
        var unlimited = choice
        if let removed { for i in unlimited.indices where removed[i] { unlimited[i] = -.infinity } }
        if rule.groups > 1 {
            let size = choice.count / rule.groups
            let groupScores = (0..<rule.groups).map { g -> Float in
                let members = choice[(g * size)..<((g + 1) * size)]
                switch rule.groupScore {
                case .max: return members.max()!
                case .topTwoSum: return topK(Array(members), k: 2).map { members[g * size + $0] }.reduce(0, +)
                }
            }
            let kept = Set(topK(groupScores, k: rule.groupsKept))
            // Experts outside the kept groups cannot be chosen (V2 masks them to 0, V3 to −∞:
            // the same choice, since the kept groups hold at least top-k experts).
            for g in 0..<rule.groups where !kept.contains(g) {
                for i in (g * size)..<((g + 1) * size) { choice[i] = -.infinity }
            }
        }
        if let removed { for i in choice.indices where removed[i] { choice[i] = -.infinity } }
        var chosen = topK(choice, k: rule.topK)
        if removed != nil, chosen.contains(where: { choice[$0] == -.infinity }) {
            chosen = topK(unlimited, k: rule.topK)
        }
        var weights = chosen.map { scores[$0] }
        if rule.normalizeTopK {
            let sum = weights.reduce(0, +)
            weights = weights.map { $0 / sum }
        }
        if rule.scale != 1, !rule.normalizeTopK || rule.scaleAfterNormalizing {
            let scale = Float(rule.scale)
            weights = weights.map { $0 * scale }
        }
        return (scores, chosen, weights)
    }
}
