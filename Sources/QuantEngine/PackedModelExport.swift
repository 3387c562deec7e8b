import Foundation
import ModelFormat

/// Turns a `ModelQuantizer` run into a packed model directory: every tensor of the source
/// checkpoint except the expert linears passes through (16-bit unless asked), the expert linears
/// go in packed, and the allocation report is kept beside them. A block-scaled FP8 source's
/// other FP8 linears (attention, shared experts, dense MLPs) pass through dequantized, as bf16
/// unless f32 is kept: a GPTQ checkpoint has no FP8 tensors (docs/FORMATS.md §10).
public enum PackedModelExport {
    /// An FP8 weight times its block scales, as an F32 passthrough tensor.
    static func dequantized(_ name: String, files: CheckpointFiles, fp8: FP8Config) throws
        -> PackedCheckpoint.Passthrough
    {
        let stored = try fp8.weight(name, in: files)
        let values = FP8.dequantize(
            codes: stored.codes, dtype: stored.format, rows: stored.rows, columns: stored.columns,
            scales: stored.scales, blockRows: fp8.blockRows, blockColumns: fp8.blockColumns)
        return .init(
            name: name, dtype: "F32", shape: [stored.rows, stored.columns], data: values.withUnsafeBytes { Data($0) })
    }

    public struct Written {
        public var expertBytes: Int
        public var effectiveBits: Double
        public var totalBytes: Int
    }

    @discardableResult
    public static func write(
        sourceDirectory: String, output: ModelQuantizer.Output, allocationReport: String? = nil,
        actOrder: Bool, keepF32: Bool, to directory: String
    ) throws -> Written {
        let configPath = (sourceDirectory as NSString).appendingPathComponent("config.json")
        guard let sourceConfig = FileManager.default.contents(atPath: configPath) else {
            throw ModelFormatError(file: configPath, "cannot read")
        }
        let files = try CheckpointFiles(directory: sourceDirectory)
        let fp8 = try FP8Config.read(directory: sourceDirectory)
        let config = try MoEModelConfig.read(directory: sourceDirectory)
        let map = ArchitectureMap(config.architecture)
        let removedModules = output.removed.flatMap { layer, experts in
            experts.flatMap { expert in
                TensorRole.expertLinears(layer: layer, expert: expert).map { map.moduleName($0) }
            }
        }
        let replaced = Set(
            (Array(output.linears.keys) + removedModules).flatMap {
                [$0 + ".weight", FP8Config.scaleName(of: $0 + ".weight")]
            })
        // The scales of FP8 weights: applied when those pass through dequantized, not copied.
        var fp8Scales = Set<String>()
        if fp8 != nil {
            for file in files.files {
                for name in file.names where FP8.table(try file.info(name).dtype) != nil {
                    fp8Scales.insert(FP8Config.scaleName(of: name))
                }
            }
        }
        var passthrough: [PackedCheckpoint.Passthrough] = []
        for file in files.files {
            for name in file.names where !replaced.contains(name) && !fp8Scales.contains(name) {
                let info = try file.info(name)
                if FP8.table(info.dtype) != nil, let fp8 {
                    passthrough.append(try dequantized(name, files: files, fp8: fp8))
                    continue
                }
                passthrough.append(
                    .init(name: name, dtype: info.dtype.rawValue, shape: info.shape, data: Data(try file.bytes(name))))
            }
        }
        passthrough.sort { $0.name < $1.name }
        let report = try allocationReport.map { path -> Data in
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ModelFormatError(file: path, "cannot read")
            }
            return data
        }
        let checkpoint = PackedCheckpoint(
            sourceConfig: sourceConfig, passthrough: passthrough, linears: output.linears,
            allocationReport: report,
            options: .init(keepFloat32: keepF32, descAct: actOrder), removedExperts: output.removed)
        try checkpoint.write(to: directory, sourceDirectory: sourceDirectory)
        let expertBytes = output.linears.values.reduce(0) { $0 + $1.byteCount }
        let parameters = output.linears.values.reduce(0) { $0 + $1.outFeatures * $1.inFeatures }
        let total =
            (try? FileManager.default.subpathsOfDirectory(atPath: directory))?.reduce(0) { sum, name in
                sum
                    + ((try? FileManager.default.attributesOfItem(
                        atPath: (directory as NSString).appendingPathComponent(name))[.size] as? Int) ?? 0)
            } ?? 0
        return Written(
            expertBytes: expertBytes, effectiveBits: parameters > 0 ? Double(expertBytes * 8) / Double(parameters) : 0,
            totalBytes: total)
    }
}
