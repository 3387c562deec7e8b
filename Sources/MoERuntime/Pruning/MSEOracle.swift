import Foundation

/// A diagnostic upper reference for OTP, not a deployable policy: it runs every top-k expert of
/// the token, measures what dropping each later slot would do to the MoE output,
/// `d_j = ‖y_full − y(without j)‖²` (the runtime's rescaling applied), and drops slot j when
/// `d_j < τ_l`, with τ_l calibrated to a target fraction of slots kept. It is the best any gate
/// can do on OTP's training loss at that fraction (per slot, one at a time), so comparing its
/// perplexity with ODP's tells whether that loss is the right target.
public final class MSEOraclePruner: ExpertPruner {
    public let thresholds: [Int: Float]
    /// Runs the token's top-k experts (its own session: the caller's is mid-forward).
    let forward: ForwardPass

    public init(model: MoEModel, thresholds: [Int: Float]) {
        forward = ForwardPass(model: model)
        self.thresholds = thresholds
    }

    /// `d_j` for every slot j ≥ 1 of `count` tokens, `[n, k − 1]`, from each slot's expert output
    /// (`[n, k, H]`) and weight (`[n, k]`).
    public static func dropErrors(expertOutputs: [Float], weights: [Float], count: Int, slots k: Int, hiddenSize h: Int)
        -> [Float]
    {
        var errors = [Float](repeating: 0, count: count * (k - 1))
        var full = [Float](repeating: 0, count: h), partial = [Float](repeating: 0, count: h)
        expertOutputs.withUnsafeBufferPointer { outputs in
            weights.withUnsafeBufferPointer { weights in
                for t in 0..<count {
                    let e = outputs.baseAddress! + t * k * h, w = weights.baseAddress! + t * k
                    ExpertMix.combine(e, w, mask: nil, slots: k, hiddenSize: h, into: &full)
                    for j in 1..<k {
                        ExpertMix.combine(e, w, mask: (0..<k).map { $0 != j }, slots: k, hiddenSize: h, into: &partial)
                        var sum: Float = 0
                        for i in 0..<h { sum += (full[i] - partial[i]) * (full[i] - partial[i]) }
                        errors[t * (k - 1) + j - 1] = sum
                    }
                }
            }
        }
        return errors
    }

    public func keep(
        layer: Int, hidden: UnsafeBufferPointer<Float>, probabilities: [Float], experts: [Int], weights: [Float]
    ) -> [Bool] {
        guard let threshold = thresholds[layer], experts.count > 1 else {
            return Array(repeating: true, count: experts.count)
        }
        let config = forward.model.config, h = config.hiddenSize, k = experts.count
        let x = Array(hidden)
        var outputs = [Float]()
        outputs.reserveCapacity(k * h)
        for expert in experts {
            outputs += forward.swiglu(
                x, count: 1, gate: .expertGate(layer: layer, expert: expert),
                up: .expertUp(layer: layer, expert: expert),
                down: .expertDown(layer: layer, expert: expert), width: config.expertIntermediateSize)
        }
        let errors = Self.dropErrors(expertOutputs: outputs, weights: weights, count: 1, slots: k, hiddenSize: h)
        return (0..<k).map { $0 == 0 || errors[$0 - 1] >= threshold }
    }
}
