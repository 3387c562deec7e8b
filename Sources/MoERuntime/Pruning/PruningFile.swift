import Foundation
import ModelFormat

/// The pruning policies stored beside a packed model's weights, `pruning.safetensors` (docs/FORMATS.md §4): per MoE
/// layer the OTP gate's tensors (`model.layers.N.block_sparse_moe.otp_gate.weight`, … — the
/// router's prefix plus the gate's suffixes) and the ODP threshold calibrated to the same
/// fraction of experts kept (`….odp_beta`, shape [1]), and two diagnostics: the MSE oracle's
/// threshold (`….oracle_mse_threshold`) and, when OTP spread its budget over the layers, ODP
/// calibrated to OTP's fraction in each layer (`….odp_matched_beta`); metadata records how they
/// were trained.
public enum PruningFile {
    public static let fileName = "pruning.safetensors"
    /// Written into the metadata beside how the policies were trained.
    public static let formatName = "pmq-pruning", version = 1

    /// `model.layers.N.block_sparse_moe.` for Mixtral, `model.layers.N.mlp.` for Qwen/OLMoE.
    static func prefix(layer: Int, config: MoEModelConfig) -> String {
        let router = ArchitectureMap(config.architecture).name(.router(layer: layer))
        return router.hasSuffix("gate.weight") ? String(router.dropLast("gate.weight".count)) : router + "."
    }

    public struct Policies {
        public var otp: OTPPruner
        public var odp: ODPPruner
        public var oracleThresholds: [Int: Float]
        public var odpMatched: ODPPruner?
        public var metadata: [String: String]
    }

    public static func write(
        otp: OTPPruner, odp: ODPPruner, oracleThresholds: [Int: Float] = [:], odpMatched: ODPPruner? = nil,
        config: MoEModelConfig,
        metadata: [String: String], directory: String
    ) throws {
        var writer = SafeTensorsWriter()
        writer.metadata = metadata.merging(["format": formatName, "version": String(version)]) { _, own in own }
        for layer in 0..<config.layerCount where config.moeLayers[layer] {
            let prefix = prefix(layer: layer, config: config)
            for tensor in otp.tensors(layer: layer) {
                try writer.add(prefix + tensor.suffix, shape: tensor.shape, floats: tensor.values)
            }
            if let beta = odp.betas[layer] { try writer.add(prefix + "odp_beta", shape: [1], floats: [beta]) }
            if let beta = odpMatched?.betas[layer] {
                try writer.add(prefix + "odp_matched_beta", shape: [1], floats: [beta])
            }
            if let threshold = oracleThresholds[layer], threshold.isFinite {
                try writer.add(prefix + "oracle_mse_threshold", shape: [1], floats: [threshold])
            }
        }
        try writer.write(to: (directory as NSString).appendingPathComponent(fileName))
    }

    /// The stored policies, or nil when the model has no pruning file.
    public static func read(directory: String, config: MoEModelConfig) throws -> Policies? {
        let path = (directory as NSString).appendingPathComponent(fileName)
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let file = try SafeTensorsFile(path: path)
        var gates: [Int: [OTPTensor]] = [:]
        var betas: [Int: Float] = [:]
        var oracle: [Int: Float] = [:]
        var matched: [Int: Float] = [:]
        var used = Set<String>()
        for layer in 0..<config.layerCount where config.moeLayers[layer] {
            let prefix = prefix(layer: layer, config: config)
            for name in file.names where name.hasPrefix(prefix) {
                let suffix = String(name.dropFirst(prefix.count))
                let info = try file.info(name)
                if suffix == "odp_beta" || suffix == "oracle_mse_threshold" || suffix == "odp_matched_beta" {
                    let values = try file.floats(name, shape: [1])
                    guard values[0].isFinite, values[0] >= 0 else {
                        throw ModelFormatError(file: path, "\(name) is not a finite threshold ≥ 0")
                    }
                    switch suffix {
                    case "odp_beta": betas[layer] = values[0]
                    case "odp_matched_beta": matched[layer] = values[0]
                    default: oracle[layer] = values[0]
                    }
                } else {
                    gates[layer, default: []].append((suffix, info.shape, try file.floats(name)))
                }
                used.insert(name)
            }
        }
        if let stray = Set(file.names).subtracting(used).sorted().first {
            throw ModelFormatError(file: path, "tensor \(stray) belongs to no MoE layer of this model")
        }
        let otp = try OTPPruner(tensors: gates, file: path)
        try otp.validate(
            hiddenSize: config.hiddenSize, expertCount: config.expertCount, topK: config.routing.topK,
            moeLayers: Set((0..<config.layerCount).filter { config.moeLayers[$0] }), file: path)
        return Policies(
            otp: otp, odp: ODPPruner(betas: betas), oracleThresholds: oracle,
            odpMatched: matched.isEmpty ? nil : ODPPruner(betas: matched), metadata: file.metadata)
    }
}
