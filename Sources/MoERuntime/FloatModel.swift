import Foundation
import ModelFormat

/// An MoE model's unquantized weights, read from a Hugging Face directory through the
/// architecture's tensor map: matrices in the checkpoint's precision (bf16 stays bf16, f16 and
/// f32 become f32), vectors (norms, biases) in f32. Every tensor the map expects must be present
/// with its shape, and none may be left over.
public final class FloatModel: @unchecked Sendable {
    public let config: MoEModelConfig
    public let directory: String
    private var vectors: [TensorRole: [Float]] = [:]
    private var matrices: [TensorRole: Matrix] = [:]

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
            if shape.count == 2 {
                let info = try file.info(name)
                if info.dtype == .bf16, info.shape == shape {
                    let raw = try file.bytes(name)
                    let bits = (0..<(raw.count / 2)).map { UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self)) }
                    matrices[role] = Matrix(rows: shape[0], columns: shape[1], storage: .bf16(bits))
                } else {
                    matrices[role] = Matrix(rows: shape[0], columns: shape[1], floats: try file.floats(name, shape: shape))
                }
            } else {
                vectors[role] = try file.floats(name, shape: shape)
            }
            used.insert(name)
        }
        let leftover = files.allNames.subtracting(used)
        if !leftover.isEmpty {
            throw ModelFormatError(file: files.description, "\(leftover.count) tensors this \(config.architecture.rawValue) model does not use, e.g. \(leftover.sorted().first!)")
        }
    }

    /// A vector (norm weight, bias).
    public func weight(_ role: TensorRole) -> [Float] {
        guard let value = vectors[role] else { preconditionFailure("no vector for \(role)") }
        return value
    }

    public func optionalWeight(_ role: TensorRole) -> [Float]? { vectors[role] }

    public func matrix(_ role: TensorRole) -> Matrix {
        guard let value = matrices[role] else { preconditionFailure("no matrix for \(role)") }
        return value
    }

    public var parameterCount: Int { vectors.values.reduce(0) { $0 + $1.count } + matrices.values.reduce(0) { $0 + $1.rows * $1.columns } }
    public var weightBytes: Int { vectors.values.reduce(0) { $0 + 4 * $1.count } + matrices.values.reduce(0) { $0 + $1.byteCount } }
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
