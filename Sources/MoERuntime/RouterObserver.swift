/// Sees every routing decision the forward pass makes: the profiler's hook, and the tests'.
public protocol RouterObserver: AnyObject {
    /// `probabilities`: softmax over all experts (before any top-k renormalisation);
    /// `experts`/`weights`: the chosen experts and the weights their outputs are summed with.
    func routed(layer: Int, token: Int, probabilities: [Float], experts: [Int], weights: [Float])
}
