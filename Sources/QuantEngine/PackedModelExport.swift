import Foundation
import ModelFormat

/// Turns a `ModelQuantizer` run into a packed model directory: every tensor of the source
/// checkpoint except the expert linears passes through (16-bit unless asked), the expert linears
/// go in packed, and the allocation report is kept beside them.
public enum PackedModelExport {
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
        let replaced = Set(output.linears.keys.map { $0 + ".weight" })
        var passthrough: [PackedCheckpoint.Passthrough] = []
        for file in files.files {
            for name in file.names where !replaced.contains(name) {
                let info = try file.info(name)
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
            options: .init(keepFloat32: keepF32, descAct: actOrder))
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
