/// Sees every routing decision the forward pass makes: the profiler's hook, and the tests'.
public protocol RouterObserver: AnyObject {
    /// `probabilities`: softmax over all experts (before any top-k renormalisation);
    /// `experts`/`weights`: the chosen experts and the weights their outputs are summed with.
    func routed(layer: Int, token: Int, probabilities: [Float], experts: [Int], weights: [Float])

    /// The MoE block's input for `count` tokens, `[count, hidden]` (after the post-attention norm):
    /// what every expert's gate and up projections see.
    func moeInput(layer: Int, hidden: [Float], count: Int)

    /// One expert's intermediate activations `silu(gate(x)) ⊙ up(x)`, `[tokens.count, width]`, for
    /// the tokens routed to it (indices into the current chunk): what its down projection sees.
    func expertActivations(layer: Int, expert: Int, tokens: [Int], activations: [Float])

    /// One expert's outputs `[tokens.count, hidden]` (before the routing weight) for the tokens
    /// routed to it: what OTP's training compares against.
    func expertOutputs(layer: Int, expert: Int, tokens: [Int], outputs: [Float])
}

extension RouterObserver {
    public func moeInput(layer: Int, hidden: [Float], count: Int) {}
    public func expertActivations(layer: Int, expert: Int, tokens: [Int], activations: [Float]) {}
    public func expertOutputs(layer: Int, expert: Int, tokens: [Int], outputs: [Float]) {}
}
