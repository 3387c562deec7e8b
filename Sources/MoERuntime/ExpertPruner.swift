/// Per-token expert pruning after routing (MC-MoE's ODP, MC#'s OTP): of the router's top-k experts,
/// which ones actually run. The forward pass asks once per token and MoE layer; the kept experts'
/// weights are rescaled so that they sum to what the full top-k summed to (for Mixtral, 1).
public protocol ExpertPruner: AnyObject {
    /// - `hidden`: the token's MoE input (after the post-attention norm), `[hidden]`.
    /// - `probabilities`: softmax over all experts (before any top-k renormalisation).
    /// - `experts`, `weights`: the router's top-k, largest first, and the weights the model sums
    ///   their outputs with.
    /// Returns one flag per top-k slot; at least one must be set.
    func keep(layer: Int, hidden: UnsafeBufferPointer<Float>, probabilities: [Float], experts: [Int], weights: [Float]) -> [Bool]
}

/// Runs every top-k expert (the model as trained).
public final class NoPruning: ExpertPruner {
    public init() {}
    public func keep(layer: Int, hidden: UnsafeBufferPointer<Float>, probabilities: [Float], experts: [Int], weights: [Float]) -> [Bool] {
        Array(repeating: true, count: experts.count)
    }
}
