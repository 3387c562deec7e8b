import MoERuntime

/// Calibration of the runtime's fixed-rule policies on a layer's calibration set: ODP's β and the
/// MSE oracle's threshold, each set so the policy keeps a given fraction of the top-k slots.
extension ODPPruner {
    /// One β per layer so each keeps the fraction `keep` of its top-k slots on its calibration set:
    /// the ODP that runs as many experts per token as an OTP gate trained to the same `keep`.
    public static func calibrate(sets: [OTPTrainingSet], keep: Double) -> ODPPruner {
        ODPPruner(
            betas: Dictionary(
                uniqueKeysWithValues: sets.map {
                    ($0.layer, calibrateBeta(probabilities: $0.probabilities, slots: $0.slots, keep: keep))
                }))
    }
}

extension MSEOraclePruner {
    /// `d_j` for every slot j ≥ 1 of every token of `set`, `[n, k − 1]`.
    public static func dropErrors(set: OTPTrainingSet) -> [Float] {
        dropErrors(
            expertOutputs: set.expertOutputs, weights: set.weights, count: set.count, slots: set.slots,
            hiddenSize: set.hiddenSize)
    }

    /// τ such that the fraction `keep` of all top-k slots (top-1 included) is kept on `set`.
    public static func calibrateThreshold(set: OTPTrainingSet, keep: Double) -> Float {
        let errors = dropErrors(set: set).sorted(by: >)
        let extra = min(max(Int((keep * Double(set.count * set.slots)).rounded()) - set.count, 0), errors.count)
        if extra == 0 { return .infinity }
        if extra == errors.count { return 0 }
        return (errors[extra - 1] + errors[extra]) / 2
    }
}
