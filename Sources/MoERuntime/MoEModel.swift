import Foundation
import ModelFormat
import Kernels

/// An MoE model's weights, read from a Hugging Face directory through the architecture's tensor
/// map: matrices in the checkpoint's precision (bf16 stays bf16, f16 and f32 become f32, GPTQ-packed
/// linears stay packed — `qweight`/`qzeros`/`scales`/`g_idx`, widths from `quantization_config`),
/// vectors (norms, biases) in f32. Every tensor the map expects must be present with its shape,
/// and none may be left over.
public final class MoEModel: @unchecked Sendable {
    public let config: MoEModelConfig
    public let directory: String
    /// Lazy models keep the checkpoint mapped and read a matrix when asked (or when its layer is
    /// pinned) instead of holding every matrix: memory bounded by the layers in use.
    public let lazy: Bool
    private var vectors: [TensorRole: [Float]] = [:]
    var matrices: [TensorRole: Matrix] = [:]
    private var shapes: [TensorRole: [Int]] = [:]
    /// Packed linears: module name (the tensor name without `.weight`) and its width.
    private var packed: [TensorRole: (module: String, bits: Int, groupSize: Int)] = [:]
    static let packedSuffixes = [".qweight", ".qzeros", ".scales", ".g_idx"]
    /// The packed model's `quantization_config`, nil for a float model.
    public let quantization: QuantizationConfig?
    /// A block-scaled FP8 checkpoint's block shape (nil otherwise): its FP8 linears stay FP8 in
    /// memory and the kernels widen them on the fly, or, with `dequantizeFP8`, become f32 as they
    /// are read (docs/FORMATS.md §10, docs/ARCHITECTURES.md for the measurement).
    public let fp8: FP8Config?
    public let dequantizeFP8: Bool
    /// Experts removed (width 0) per layer: absent from the checkpoint and never chosen by the
    /// router (`Routing.route`). Read from a packed model's `quantization_config.pmq.removed_experts`;
    /// the quantizer sets it as it removes experts, so that later layers calibrate without them.
    public var removedExperts: [Int: Set<Int>] = [:] {
        didSet { removedMasks = Self.masks(removedExperts, experts: config.expertCount) }
    }
    /// Per layer with removals: true for a removed expert.
    public private(set) var removedMasks: [Int: [Bool]] = [:]

    static func masks(_ removed: [Int: Set<Int>], experts: Int) -> [Int: [Bool]] {
        removed.filter { !$0.value.isEmpty }.mapValues { set in (0..<experts).map { set.contains($0) } }
    }
    private let files: CheckpointFiles
    private let map: ArchitectureMap

    public init(directory: String, lazy: Bool = false, dequantizeFP8: Bool = false) throws {
        self.directory = directory
        self.lazy = lazy
        self.dequantizeFP8 = dequantizeFP8
        config = try MoEModelConfig.read(directory: directory)
        map = ArchitectureMap(config.architecture)
        files = try CheckpointFiles(directory: directory)
        quantization = try QuantizationConfig.read(directory: directory)
        fp8 = try FP8Config.read(directory: directory)
        if let quantization, !quantization.removedExperts.isEmpty {
            let field = "quantization_config.pmq.removed_experts"
            for (layer, experts) in quantization.removedExperts {
                guard (0..<config.layerCount).contains(layer), config.moeLayers[layer] else {
                    throw ModelFormatError(file: quantization.file, "\(field).\(layer): not an MoE layer of this model")
                }
                guard experts.allSatisfy({ $0 < config.expertCount }) else {
                    throw ModelFormatError(
                        file: quantization.file, "\(field).\(layer): expert index ≥ \(config.expertCount) experts")
                }
                guard config.expertCount - experts.count >= config.routing.topK else {
                    throw ModelFormatError(
                        file: quantization.file,
                        "\(field).\(layer): removes \(experts.count) of \(config.expertCount) experts, leaving "
                            + "fewer than the \(config.routing.topK) a token needs")
                }
            }
            removedExperts = quantization.removedExperts.mapValues(Set.init)
            removedMasks = Self.masks(removedExperts, experts: config.expertCount)
        }
        let removed = removedExperts
        var used = Set<String>()
        for (role, shape) in map.expectedTensors(config) where !Self.isRemoved(role, removed) {
            let name = map.name(role), module = map.moduleName(role)
            if shape.count == 2, files.file(containing: name) == nil, let quantization, module != name,
                files.file(containing: module + ".qweight") != nil
            {
                guard let width = try quantization.width(of: module) else {
                    throw ModelFormatError(
                        file: quantization.file,
                        "\(module) is declared unquantized but the checkpoint has only its packed tensors")
                }
                packed[role] = (module, width.bits, width.groupSize)
                shapes[role] = shape
                for suffix in Self.packedSuffixes where files.file(containing: module + suffix) != nil {
                    used.insert(module + suffix)
                }
                continue
            }
            guard let file = files.file(containing: name) else {
                throw ModelFormatError(file: files.description, "missing tensor \(name)")
            }
            if shape.count == 2 {
                let info = try file.info(name)
                guard info.shape == shape else {
                    throw ModelFormatError(file: file.path, "tensor \(name) has shape \(info.shape), expected \(shape)")
                }
                if FP8.table(info.dtype) != nil {
                    used.insert(try checkFP8Scale(of: name, shape: shape, in: file))
                } else if !info.dtype.isFloatingPoint {
                    throw ModelFormatError(
                        file: file.path, "tensor \(name) is \(info.dtype.rawValue), expected F32, F16 or BF16")
                }
                shapes[role] = shape
            } else {
                vectors[role] = try file.floats(name, shape: shape)
            }
            used.insert(name)
        }
        // DeepSeek-V3's multi-token-prediction layers follow the decoder layers on disk.
        let trailing = (config.layerCount..<(config.layerCount + config.trailingLayers)).map { "model.layers.\($0)." }
        let leftover = files.allNames.subtracting(used).filter { name in !trailing.contains { name.hasPrefix($0) } }
        if !leftover.isEmpty {
            throw ModelFormatError(
                file: files.description,
                "\(leftover.count) tensors this \(config.architecture.rawValue) model does not use, e.g. "
                    + "\(leftover.sorted().first!)"
            )
        }
        if !lazy {
            let needed = try heldBytes()
            let physical = physicalMemoryBytes
            if physical > 0, needed > physical {
                throw ModelFormatError(
                    file: directory,
                    String(
                        format: "holding the weights needs %.1f GB but this machine has %.1f GB of memory "
                            + "(profile, quantize and otp train read one layer at a time)",
                        Double(needed) / 1e9, Double(physical) / 1e9))
            }
            for (role, _) in map.expectedTensors(config) where shapes[role] != nil && matrices[role] == nil {
                matrices[role] = try load(role)
                releasePages(role) // copied: the mapped pages need not stay resident beside the copy
            }
            files.releaseAll()
        }
    }

    /// The bytes the matrices take once loaded: packed tensors as stored, bf16 2 per weight, FP8 1 (4 if
    /// dequantized) plus its scales, F16 and F32 4.
    private func heldBytes() throws -> Int {
        var total = 0
        for (role, shape) in shapes {
            let count = shape[0] * shape[1]
            if let source = packed[role] {
                for suffix in Self.packedSuffixes {
                    if let file = files.file(containing: source.module + suffix) {
                        total += try file.info(source.module + suffix).dataRange.count
                    }
                }
                continue
            }
            let name = map.name(role)
            let dtype = try files.file(containing: name)!.info(name).dtype
            switch dtype {
            case .bf16: total += 2 * count
            case .f8e4m3, .f8e5m2: total += dequantizeFP8 ? 4 * count : count
            default: total += 4 * count
            }
        }
        return total
    }

    /// Reads one matrix from the checkpoint: bf16 stays bf16, F16/F32 become f32.
    private func load(_ role: TensorRole) throws -> Matrix {
        let shape = shapes[role]!
        if let source = packed[role] {
            let file = files.file(containing: source.module + ".qweight")!
            let linear = try PackedLinear.read(
                from: file, prefix: source.module, bits: source.bits, groupSize: source.groupSize,
                outFeatures: shape[0], inFeatures: shape[1])
            return Matrix(rows: shape[0], columns: shape[1], storage: .packed(PackedWeights(linear)))
        }
        let name = map.name(role)
        let file = files.file(containing: name)!
        let info = try file.info(name)
        if FP8.table(info.dtype) != nil, let fp8 {
            let stored = try fp8.weight(name, in: files)
            let codes: [UInt8] = HugePages.array(count: stored.codes.count) {
                _ = $0.initialize(fromContentsOf: stored.codes)
            }
            let weights = FP8Weights(
                codes: codes, scales: stored.scales, format: stored.format, blockRows: fp8.blockRows,
                blockColumns: fp8.blockColumns)
            if dequantizeFP8 {
                return Matrix(
                    rows: shape[0], columns: shape[1], floats: weights.dequantized(rows: shape[0], columns: shape[1]))
            }
            return Matrix(rows: shape[0], columns: shape[1], storage: .fp8(weights))
        }
        if info.dtype == .bf16 {
            let raw = try file.bytes(name)
            let bits: [UInt16] = HugePages.array(count: raw.count / 2) { buffer in
                for index in 0..<(raw.count / 2) {
                    buffer[index] = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * index, as: UInt16.self))
                }
            }
            return Matrix(rows: shape[0], columns: shape[1], storage: .bf16(bits))
        }
        return Matrix(rows: shape[0], columns: shape[1], floats: try file.floats(name, shape: shape))
    }

    static func isRemoved(_ role: TensorRole, _ removed: [Int: Set<Int>]) -> Bool {
        switch role {
        case let .expertGate(l, e), let .expertUp(l, e), let .expertDown(l, e): return removed[l]?.contains(e) == true
        default: return false
        }
    }

    /// An FP8 weight needs the checkpoint to be FP8 and its block scales, of the block grid's
    /// shape; returns the scale tensor's name.
    private func checkFP8Scale(of name: String, shape: [Int], in file: SafeTensorsFile) throws -> String {
        guard let fp8 else {
            throw ModelFormatError(
                file: file.path,
                "tensor \(name) is FP8 but config.json has no quantization_config with quant_method \"fp8\"")
        }
        let scaleName = FP8Config.scaleName(of: name)
        guard let scaleFile = files.file(containing: scaleName) else {
            throw ModelFormatError(file: files.description, "missing tensor \(scaleName) (the scales of FP8 \(name))")
        }
        let info = try scaleFile.info(scaleName)
        let expected = fp8.scaleShape(rows: shape[0], columns: shape[1])
        guard info.shape == expected, info.dtype.isFloatingPoint else {
            throw ModelFormatError(
                file: scaleFile.path,
                "tensor \(scaleName) is \(info.dtype.rawValue) \(info.shape), expected a float tensor of shape "
                    + "\(expected) (weight_block_size \([fp8.blockRows, fp8.blockColumns]) over \(shape))")
        }
        // Small (one value per block): checked here so that a lazy model never meets a bad one later.
        if let bad = try scaleFile.floats(scaleName).first(where: { !$0.isFinite || $0 <= 0 }) {
            throw ModelFormatError(
                file: scaleFile.path, "tensor \(scaleName) holds \(bad); scales must be finite and > 0")
        }
        return scaleName
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
            releasePages(role)
        }
    }

    /// Drops the checkpoint pages `role`'s matrix was read from (and its packed companions or FP8 scales).
    private func releasePages(_ role: TensorRole) {
        if let source = packed[role] {
            for suffix in Self.packedSuffixes {
                files.file(containing: source.module + suffix)?.release(source.module + suffix)
            }
        } else {
            let name = map.name(role)
            files.file(containing: name)?.release(name)
            files.file(containing: FP8Config.scaleName(of: name))?.release(FP8Config.scaleName(of: name))
        }
    }

    /// Puts `matrix` in place of `role`'s weights (the quantizer installs a layer's dequantized
    /// experts so that later layers calibrate on its output). A lazy model drops it at `unpin`.
    public func replace(_ role: TensorRole, with matrix: Matrix) {
        precondition(shapes[role] == [matrix.rows, matrix.columns], "shape mismatch for \(role)")
        matrices[role] = matrix
    }

    /// Stores every tensor but the expert linears as a packed checkpoint holds it
    /// (docs/PACKED_FORMAT.md): tensors stored as F32 (and FP8 linears, dequantized) are rounded to
    /// bf16, nearest even; bf16 and f16 ones stay as they are. An eager model then runs as the
    /// packed checkpoint written from it would, once its experts are replaced by the packed ones.
    public func roundPassthroughToBFloat16() throws {
        precondition(!lazy, "rounding needs every matrix in memory")
        func storedAsFloat32(_ role: TensorRole) throws -> Bool {
            let name = map.name(role)
            guard let file = files.file(containing: name) else { return false }
            return try file.info(name).dtype == .f32
        }
        for (role, matrix) in matrices {
            switch role {
            case .expertGate, .expertUp, .expertDown: continue
            default: break
            }
            switch matrix.storage {
            case let .f32(values) where try storedAsFloat32(role):
                matrices[role] = Matrix(
                    rows: matrix.rows, columns: matrix.columns, storage: .bf16(values.map(\.bfloat16Bits)))
            case .fp8:
                matrices[role] = Matrix(
                    rows: matrix.rows, columns: matrix.columns, storage: .bf16(matrix.floats.map(\.bfloat16Bits)))
            default: continue
            }
        }
        for (role, values) in vectors where try storedAsFloat32(role) {
            vectors[role] = values.map { Float(bitPattern: UInt32($0.bfloat16Bits) << 16) }
        }
    }

    /// The module `role`'s weight belongs to (`….experts.3.w1`): what a packed linear is named after.
    public func moduleName(_ role: TensorRole) -> String { map.moduleName(role) }

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
        guard let value = try? load(role) else {
            preconditionFailure("cannot read \(map.name(role)) from \(directory)")
        }
        return value
    }

    public var parameterCount: Int {
        vectors.values.reduce(0) { $0 + $1.count } + shapes.values.reduce(0) { $0 + $1[0] * $1[1] }
    }
    public var weightBytes: Int {
        vectors.values.reduce(0) { $0 + 4 * $1.count } + matrices.values.reduce(0) { $0 + $1.byteCount }
    }
    /// The expert linears as held (eager models): their parameters, bytes (packed: codes, zeros,
    /// scales and g_idx; float: the values) and nominal bits per parameter (packed: the width).
    public var expertStorage: (parameters: Int, bytes: Int, nominalBits: Double) {
        var parameters = 0, bytes = 0
        var bits = 0.0
        for (role, matrix) in matrices {
            switch role {
            case .expertGate, .expertUp, .expertDown:
                let count = matrix.rows * matrix.columns
                parameters += count
                bytes += matrix.byteCount
                switch matrix.storage {
                case .f32: bits += 32 * Double(count)
                case .bf16: bits += 16 * Double(count)
                case .fp8: bits += 8 * Double(count)
                case let .packed(weights): bits += Double(weights.linear.bits * count)
                }
            default: continue
            }
        }
        return (parameters, bytes, parameters > 0 ? bits / Double(parameters) : 0)
    }
}
