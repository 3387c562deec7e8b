import Foundation
import ModelFormat

/// An MoE model's weights in Float32, read from a Hugging Face directory through the
/// architecture's tensor map. Every tensor the map expects must be present with its shape, and
/// none may be left over.
public final class FloatModel: @unchecked Sendable {
    public let config: MoEModelConfig
    public let directory: String
    private var weights: [TensorRole: [Float]] = [:]

    public init(directory: String) throws {
        self.directory = directory
        config = try MoEModelConfig.read(directory: directory)
        let map = ArchitectureMap(config.architecture)
        let files = try CheckpointFiles(directory: directory)
        var used = Set<String>()
        for (role, shape) in map.expectedTensors(config) {
            let name = map.name(role)
            guard let file = files.file(containing: name) else {
                throw ModelFormatError(file: files.description, "missing tensor \(name)")
            }
            weights[role] = try file.floats(name, shape: shape)
            used.insert(name)
        }
        let leftover = files.allNames.subtracting(used)
        if !leftover.isEmpty {
            throw ModelFormatError(file: files.description, "\(leftover.count) tensors this \(config.architecture.rawValue) model does not use, e.g. \(leftover.sorted().first!)")
        }
    }

    public func weight(_ role: TensorRole) -> [Float] {
        guard let value = weights[role] else { preconditionFailure("no tensor for \(role)") }
        return value
    }

    public func optionalWeight(_ role: TensorRole) -> [Float]? { weights[role] }

    public var parameterCount: Int { weights.values.reduce(0) { $0 + $1.count } }
}

/// The safetensors files of a checkpoint: `model.safetensors`, or the shards listed by
/// `model.safetensors.index.json`.
struct CheckpointFiles: CustomStringConvertible {
    var files: [SafeTensorsFile]
    var owner: [String: Int]
    let description: String

    init(directory: String) throws {
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
            guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let weightMap = object["weight_map"] as? [String: String] else {
                throw ModelFormatError(file: index, "not a safetensors index (no weight_map)")
            }
            var shards: [String: SafeTensorsFile] = [:]
            for shard in Set(weightMap.values).sorted() {
                guard !shard.contains("/") else { throw ModelFormatError(file: index, "shard name \(shard) leaves the directory") }
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
        for (position, file) in files.enumerated() {
            for name in file.tensors.keys { owner[name] = position }
        }
    }

    func file(containing name: String) -> SafeTensorsFile? { owner[name].map { files[$0] } }
    var allNames: Set<String> { Set(owner.keys) }
}
