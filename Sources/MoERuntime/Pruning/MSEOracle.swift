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
    let forward: FloatForward

    public init(model: FloatModel, thresholds: [Int: Float]) {
        forward = FloatForward(model: model)
        self.thresholds = thresholds
    }

    /// `d_j` for every slot j ≥ 1 of every token of `set`, `[n, k − 1]`.
    public static func dropErrors(set: OTPTrainingSet) -> [Float] {
        let k = set.slots, h = set.hiddenSize
        var errors = [Float](repeating: 0, count: set.count * (k - 1))
        var full = [Float](repeating: 0, count: h), partial = [Float](repeating: 0, count: h)
        set.expertOutputs.withUnsafeBufferPointer { outputs in
            set.weights.withUnsafeBufferPointer { weights in
                for t in 0..<set.count {
                    let e = outputs.baseAddress! + t * k * h, w = weights.baseAddress! + t * k
                    PruningLoss.combine(e, w, mask: nil, slots: k, hiddenSize: h, into: &full)
                    for j in 1..<k {
                        PruningLoss.combine(e, w, mask: (0..<k).map { $0 != j }, slots: k, hiddenSize: h, into: &partial)
                        var sum: Float = 0
                        for i in 0..<h { sum += (full[i] - partial[i]) * (full[i] - partial[i]) }
                        errors[t * (k - 1) + j - 1] = sum
                    }
                }
            }
        }
        return errors
    }

    /// τ such that the fraction `keep` of all top-k slots (top-1 included) is kept on `set`.
    public static func calibrateThreshold(set: OTPTrainingSet, keep: Double) -> Float {
        let errors = dropErrors(set: set).sorted(by: >)
        let extra = min(max(Int((keep * Double(set.count * set.slots)).rounded()) - set.count, 0), errors.count)
        if extra == 0 { return .infinity }
        if extra == errors.count { return 0 }
        return (errors[extra - 1] + errors[extra]) / 2
    }

    public func keep(layer: Int, hidden: UnsafeBufferPointer<Float>, probabilities: [Float], experts: [Int], weights: [Float]) -> [Bool] {
        guard let threshold = thresholds[layer], experts.count > 1 else { return Array(repeating: true, count: experts.count) }
        let config = forward.model.config, h = config.hiddenSize, k = experts.count
        let x = Array(hidden)
        var outputs = [Float]()
        outputs.reserveCapacity(k * h)
        for expert in experts {
            outputs += forward.swiglu(x, count: 1, gate: .expertGate(layer: layer, expert: expert), up: .expertUp(layer: layer, expert: expert),
                                      down: .expertDown(layer: layer, expert: expert), width: config.expertIntermediateSize)
        }
        let set = OTPTrainingSet(layer: layer, hiddenSize: h, slots: k, expertCount: config.expertCount, hidden: x,
                                 probabilities: experts.map { probabilities[$0] }, experts: experts.map { Int32($0) },
                                 weights: weights, expertOutputs: outputs)
        let errors = Self.dropErrors(set: set)
        return (0..<k).map { $0 == 0 || errors[$0 - 1] >= threshold }
    }
}
