import Foundation

/// The safetensors files of a checkpoint: `model.safetensors`, or the shards listed by
/// `model.safetensors.index.json`.
public struct CheckpointFiles: CustomStringConvertible, @unchecked Sendable {
    public var files: [SafeTensorsFile]
    var owner: [String: Int]
    public let description: String

    public init(directory: String) throws {
        let single = (directory as NSString).appendingPathComponent("model.safetensors")
        let index = (directory as NSString).appendingPathComponent("model.safetensors.index.json")
        if FileManager.default.fileExists(atPath: single) {
            files = [try SafeTensorsFile(path: single)]
            description = single
        } else if FileManager.default.fileExists(atPath: index) {
            description = index
            let data: Data
            do { data = try Data(contentsOf: URL(fileURLWithPath: index)) } catch {
                throw ModelFormatError(file: index, "cannot read")
            }
            try StrictJSON.validate(data, file: index)
            guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                let weightMap = object["weight_map"] as? [String: String]
            else {
                throw ModelFormatError(file: index, "not a safetensors index (no weight_map)")
            }
            var shards: [String: SafeTensorsFile] = [:]
            for shard in Set(weightMap.values).sorted() {
                guard !shard.contains("/") else {
                    throw ModelFormatError(file: index, "shard name \(shard) leaves the directory")
                }
                shards[shard] = try SafeTensorsFile(path: (directory as NSString).appendingPathComponent(shard))
            }
            for (name, shard) in weightMap where shards[shard]?.tensors[name] == nil {
                throw ModelFormatError(file: index, "lists \(name) in \(shard), which does not contain it")
            }
            files = Array(shards.values)
        } else {
            throw ModelFormatError(file: directory, "no model.safetensors or model.safetensors.index.json")
        }
        owner = [:]
        // Shards in a fixed order, so that a message names them the same way every run.
        files.sort { $0.path < $1.path }
        for (position, file) in files.enumerated() {
            for name in file.tensors.keys {
                if let other = owner.updateValue(position, forKey: name) {
                    throw ModelFormatError(
                        file: description,
                        "tensor \(name) is in both \((files[other].path as NSString).lastPathComponent) and "
                            + "\((file.path as NSString).lastPathComponent); a tensor must be in one shard")
                }
            }
        }
    }

    public func file(containing name: String) -> SafeTensorsFile? { owner[name].map { files[$0] } }

    /// Drops every mapped page from memory (they are read again if touched).
    public func releaseAll() {
        for file in files { for name in file.names { file.release(name) } }
    }
    public var allNames: Set<String> { Set(owner.keys) }
}
