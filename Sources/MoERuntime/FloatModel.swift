import Foundation
import ModelFormat

/// An MoE model's unquantized weights, read from a Hugging Face directory through the
/// architecture's tensor map: matrices in the checkpoint's precision (bf16 stays bf16, f16 and
/// f32 become f32), vectors (norms, biases) in f32. Every tensor the map expects must be present
/// with its shape, and none may be left over.
public final class FloatModel: @unchecked Sendable {
    public let config: MoEModelConfig
    public let directory: String
    /// Lazy models keep the checkpoint mapped and read a matrix when asked (or when its layer is
    /// pinned) instead of holding every matrix: memory bounded by the layers in use.
    public let lazy: Bool
    private var vectors: [TensorRole: [Float]] = [:]
    private var matrices: [TensorRole: Matrix] = [:]
    private var shapes: [TensorRole: [Int]] = [:]
    private let files: CheckpointFiles
    private let map: ArchitectureMap

    public init(directory: String, lazy: Bool = false) throws {
        self.directory = directory
        self.lazy = lazy
        config = try MoEModelConfig.read(directory: directory)
        map = ArchitectureMap(config.architecture)
        files = try CheckpointFiles(directory: directory)
        var used = Set<String>()
        for (role, shape) in map.expectedTensors(config) {
            let name = map.name(role)
            guard let file = files.file(containing: name) else {
                throw ModelFormatError(file: files.description, "missing tensor \(name)")
            }
            if shape.count == 2 {
                let info = try file.info(name)
                guard info.shape == shape else {
                    throw ModelFormatError(file: file.path, "tensor \(name) has shape \(info.shape), expected \(shape)")
                }
                guard info.dtype.isFloatingPoint else {
                    throw ModelFormatError(file: file.path, "tensor \(name) is \(info.dtype.rawValue), expected F32, F16 or BF16")
                }
                shapes[role] = shape
                if !lazy { matrices[role] = try load(role) }
            } else {
                vectors[role] = try file.floats(name, shape: shape)
            }
            used.insert(name)
        }
        let leftover = files.allNames.subtracting(used)
        if !leftover.isEmpty {
            throw ModelFormatError(file: files.description, "\(leftover.count) tensors this \(config.architecture.rawValue) model does not use, e.g. \(leftover.sorted().first!)")
        }
        if !lazy { files.releaseAll() }
    }

    /// Reads one matrix from the checkpoint: bf16 stays bf16, F16/F32 become f32.
    private func load(_ role: TensorRole) throws -> Matrix {
        let name = map.name(role)
        let file = files.file(containing: name)!
        let shape = shapes[role]!
        let info = try file.info(name)
        if info.dtype == .bf16 {
            let raw = try file.bytes(name)
            let bits = [UInt16](unsafeUninitializedCapacity: raw.count / 2) { buffer, count in
                for index in 0..<(raw.count / 2) {
                    buffer[index] = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * index, as: UInt16.self))
                }
                count = raw.count / 2
            }
            return Matrix(rows: shape[0], columns: shape[1], storage: .bf16(bits))
        }
        return Matrix(rows: shape[0], columns: shape[1], floats: try file.floats(name, shape: shape))
    }

    /// Lazy models: read every matrix of `layer` now and keep it until `unpin`.
    public func pin(layer: Int) throws {
        guard lazy else { return }
        for role in shapes.keys where role.layer == layer && matrices[role] == nil { matrices[role] = try load(role) }
    }

    /// Lazy models: drop `layer`'s matrices and the checkpoint pages they were read from.
    public func unpin(layer: Int) {
        guard lazy else { return }
        for role in shapes.keys where role.layer == layer {
            matrices[role] = nil
            let name = map.name(role)
            files.file(containing: name)?.release(name)
        }
    }

    /// A vector (norm weight, bias).
    public func weight(_ role: TensorRole) -> [Float] {
        guard let value = vectors[role] else { preconditionFailure("no vector for \(role)") }
        return value
    }

    public func optionalWeight(_ role: TensorRole) -> [Float]? { vectors[role] }

    public func matrix(_ role: TensorRole) -> Matrix {
        if let value = matrices[role] { return value }
        guard lazy, shapes[role] != nil else { preconditionFailure("no matrix for \(role)") }
        // Validated at load time; a failure here means the file changed underneath us.
        guard let value = try? load(role) else { preconditionFailure("cannot read \(map.name(role)) from \(directory)") }
        return value
    }

    public var parameterCount: Int { vectors.values.reduce(0) { $0 + $1.count } + shapes.values.reduce(0) { $0 + $1[0] * $1[1] } }
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

    /// Drops every mapped page from memory (they are read again if touched).
    func releaseAll() {
        for file in files { for name in file.names { file.release(name) } }
    }
    var allNames: Set<String> { Set(owner.keys) }
}
