import Foundation
import ModelFormat

extension PackedCheckpoint {
    /// Writes the packed model directory at `directory`: `model.safetensors` (or shards and
    /// `model.safetensors.index.json`), `config.json` with `quantization_config`,
    /// `quantize_config.json`, the allocation report, and the tokenizer files found in
    /// `sourceDirectory`. The directory appears whole or not at all: everything is written into a
    /// temporary sibling, renamed into place at the end, and removed on any error. An existing
    /// `directory` is an error (nothing is overwritten).
    public func write(to directory: String, sourceDirectory: String? = nil) throws {
        let fileManager = FileManager.default
        // Absolute, so that a one-component relative name ("x") has a parent too.
        let url = URL(fileURLWithPath: directory).standardizedFileURL
        let target = url.path
        if fileManager.fileExists(atPath: target) {
            throw ModelFormatError(file: target, "already exists; pmq does not overwrite a packed model")
        }
        let temporary = try OutputPaths.stagingFolder(for: target)
        do {
            try writeContents(into: temporary, sourceDirectory: sourceDirectory)
            guard rename(temporary, target) == 0 else {
                throw ModelFormatError(
                    file: target, "cannot rename \(temporary) into place: \(String(cString: strerror(errno)))")
            }
        } catch {
            try? fileManager.removeItem(atPath: temporary)
            throw error
        }
    }

    func writeContents(into directory: String, sourceDirectory: String?) throws {
        func path(_ name: String) -> String { (directory as NSString).appendingPathComponent(name) }
        func describe(_ error: Error, _ name: String) -> Error {
            if let error = error as? PackedFormatError { return ModelFormatError(file: path(name), "tensor \(error)") }
            return error
        }
        let config: (text: Data, quantization: [String: Any])
        do { config = try self.config() } catch { throw describe(error, "config.json") }
        try AtomicFile.write(config.text, to: path("config.json"))
        try writeJSON(config.quantization, to: path("quantize_config.json"))
        if let allocationReport { try AtomicFile.write(allocationReport, to: path(Self.allocationFileName)) }

        let units: [[StoredTensor]]
        do { units = try storedUnits() } catch { throw describe(error, "model.safetensors") }
        let shards = Self.shards(units, maximumBytes: options.maximumShardBytes)
        var weightMap: [String: String] = [:]
        var totalSize = 0
        for (index, shard) in shards.enumerated() {
            let name = Self.shardName(index, of: shards.count)
            var writer = SafeTensorsWriter()
            writer.metadata = ["format": "pt"]
            for tensor in shard {
                guard let dtype = TensorDType(rawValue: tensor.dtype) else {
                    throw ModelFormatError(file: path(name), "tensor \(tensor.name) has unknown dtype \(tensor.dtype)")
                }
                do { try writer.add(tensor.name, dtype: dtype, shape: tensor.shape, data: tensor.data) } catch let error
                    as ModelFormatError
                {
                    throw ModelFormatError(file: path(name), "tensor \(tensor.name): \(error.problem)")
                }
                weightMap[tensor.name] = name
                totalSize += tensor.data.count
            }
            try writer.write(to: path(name))
        }
        if shards.count > 1 {
            try writeJSON(
                ["metadata": ["total_size": totalSize], "weight_map": weightMap] as [String: Any],
                to: path("model.safetensors.index.json"))
        }
        if let sourceDirectory {
            for name in Self.copiedFiles {
                let source = (sourceDirectory as NSString).appendingPathComponent(name)
                guard FileManager.default.fileExists(atPath: source) else { continue }
                do { try FileManager.default.copyItem(atPath: source, toPath: path(name)) } catch {
                    throw ModelFormatError(
                        file: source, "cannot copy into the packed model: \(error.localizedDescription)")
                }
            }
        }
    }

    func writeJSON(_ object: Any, to path: String) throws {
        let data: Data
        do {
            data = try JSONSerialization.data(
                withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        } catch {
            throw ModelFormatError(file: path, "cannot encode JSON: \(error.localizedDescription)")
        }
        try AtomicFile.write(data + Data("\n".utf8), to: path)
    }
}
