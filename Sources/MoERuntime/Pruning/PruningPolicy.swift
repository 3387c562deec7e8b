/// The per-token expert pruning `pmq eval` runs a model with, by name.
public enum PruningPolicy: String, CaseIterable, Sendable {
    case none, odp, otp
    case oracleMSE = "oracle-mse"
    case odpMatched = "odp-matched"

    /// The model directory lacks what the policy needs (its pruning file, or a part of it).
    public struct Missing: Error, Equatable {
        public let message: String
    }

    /// The pruner for `model` (loaded from `directory`): OTP and calibrated ODP come from its pruning file.
    public func pruner(model: MoEModel, directory: String, odpBeta: Double?) throws -> ExpertPruner? {
        let layers = model.config.layerCount
        switch self {
        case .none: return nil
        case .odp:
            if let odpBeta { return ODPPruner(beta: Float(odpBeta), layers: layers) }
            return try PruningFile.read(directory: directory, config: model.config)?.odp
                ?? ODPPruner(beta: 0.5, layers: layers)
        case .otp:
            guard let stored = try PruningFile.read(directory: directory, config: model.config) else {
                throw Missing(
                    message:
                        "\(directory) has no \(PruningFile.fileName): run `pmq otp train --model \(directory) …` "
                        + "first")
            }
            return stored.otp
        case .oracleMSE:
            guard let stored = try PruningFile.read(directory: directory, config: model.config),
                !stored.oracleThresholds.isEmpty
            else {
                throw Missing(
                    message:
                        "\(directory) has no oracle thresholds in \(PruningFile.fileName): run `pmq otp train "
                        + "--model \(directory) --target output …` first (the end-to-end targets keep no expert "
                        + "outputs to calibrate it)"
                )
            }
            return MSEOraclePruner(model: model, thresholds: stored.oracleThresholds)
        case .odpMatched:
            guard let matched = try PruningFile.read(directory: directory, config: model.config)?.odpMatched else {
                throw Missing(
                    message:
                        "\(directory) has no per-layer matched ODP thresholds in \(PruningFile.fileName): run `pmq "
                        + "otp train --model \(directory) --budget global …` first"
                )
            }
            return matched
        }
    }
}
