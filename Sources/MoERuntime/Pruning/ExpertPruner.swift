/// Per-token expert pruning after routing (MC-MoE's ODP, MC#'s OTP): of the router's top-k experts,
/// which ones actually run. The forward pass asks once per token and MoE layer; the kept experts'
/// weights are rescaled so that they sum to what the full top-k summed to (for Mixtral, 1).
public protocol ExpertPruner: AnyObject {
    /// - `hidden`: the token's MoE input (after the post-attention norm), `[hidden]`.
    /// - `probabilities`: softmax over all experts (before any top-k renormalisation).
    /// - `experts`, `weights`: the router's top-k, largest first, and the weights the model sums
    ///   their outputs with.
    /// Returns one flag per top-k slot; at least one must be set.
    func keep(layer: Int, hidden: UnsafeBufferPointer<Float>, probabilities: [Float], experts: [Int], weights: [Float])
        -> [Bool]
}

/// Runs every top-k expert (the model as trained).
public final class NoPruning: ExpertPruner {
    public init() {}
    public func keep(
        layer: Int, hidden: UnsafeBufferPointer<Float>, probabilities: [Float], experts: [Int], weights: [Float]
    ) -> [Bool] {
        Array(repeating: true, count: experts.count)
    }
}

/// The runtime's rule for a pruned token's MoE output: the kept slots' weights are rescaled to the
/// full top-k's sum, `y(m) = Σ_j m_j w_j E_j / Σ_j m_j w_j · Σ_j w_j`. The MSE oracle measures drops
/// with it, and OTP's training loss is built on it.
public enum ExpertMix {
    /// `y(m)` (or `y_full` with `mask == nil`) into `output` (`[H]`) from `[k, H]` expert outputs.
    public static func combine(
        _ outputs: UnsafePointer<Float>, _ weights: UnsafePointer<Float>, mask: [Bool]?, slots: Int,
        hiddenSize: Int, into output: inout [Float]
    ) {
        var total: Float = 0, kept: Float = 0
        for j in 0..<slots {
            total += weights[j]
            if mask?[j] ?? true { kept += weights[j] }
        }
        let scale = kept > 0 ? total / kept : 0
        output.withUnsafeMutableBufferPointer { y in
            for i in 0..<hiddenSize { y[i] = 0 }
            for j in 0..<slots where mask?[j] ?? true {
                let c = weights[j] * scale, e = outputs + j * hiddenSize
                for i in 0..<hiddenSize { y[i] += c * e[i] }
            }
        }
    }
}
