import Foundation
import ModelFormat

/// Everything a packed model directory holds (docs/PACKED_FORMAT.md), before it is written:
/// the source model's `config.json`, float tensors passed through, the packed expert linears by
/// module name, extra f32 tensors (the OTP gates) and the allocation record. This file builds the
/// names, dtypes and `quantization_config`; `PackedCheckpoint+Files.swift` writes and reads them.
public struct PackedCheckpoint: Sendable {
    /// A float (or other) tensor copied from the source model, raw little-endian bytes; its dtype
    /// (`BF16`, `F16`, `F32`; others are copied unchanged) is converted by `storedPassthrough`.
    public typealias Passthrough = StoredTensor

    /// An extra f32 tensor written after the packed linears (no command writes one: OTP gates live in
    /// `pruning.safetensors`, and a loader refuses tensors its architecture does not use).
    public struct Extra: Sendable {
        public var name: String
        public var shape: [Int]
        public var values: [Float]
        public init(name: String, shape: [Int], values: [Float]) {
            self.name = name
            self.shape = shape
            self.values = values
        }
    }

    public struct Options: Sendable {
        /// Keep f32 passthrough tensors in f32 instead of rounding them to bf16.
        public var keepFloat32: Bool
        /// Largest shard in bytes; a model over it is split into `model-0000i-of-0000n.safetensors`
        /// with `model.safetensors.index.json`.
        public var maximumShardBytes: Int
        /// Written as `desc_act` (GPTQ act-order was used; `g_idx` is then permuted).
        public var descAct: Bool
        public init(keepFloat32: Bool = false, maximumShardBytes: Int = 5_000_000_000, descAct: Bool = false) {
            self.keepFloat32 = keepFloat32
            self.maximumShardBytes = maximumShardBytes
            self.descAct = descAct
        }
    }

    /// The source model's `config.json` object (JSON data, kept as is apart from
    /// `quantization_config`).
    public var sourceConfig: Data
    public var passthrough: [Passthrough]
    /// Packed linears by module name, e.g. `model.layers.0.block_sparse_moe.experts.3.w1`.
    public var linears: [String: PackedLinear]
    public var extras: [Extra]
    /// The allocation report (JSON) the widths came from, copied as `pmq_allocation.json`; nil
    /// when there is none.
    public var allocationReport: Data?
    public var options: Options
    /// Experts removed at width 0, by layer: absent from the tensors, listed in
    /// `quantization_config.pmq.removed_experts` for the runtime's router mask.
    public var removedExperts: [Int: [Int]]

    public init(
        sourceConfig: Data, passthrough: [Passthrough], linears: [String: PackedLinear], extras: [Extra] = [],
        allocationReport: Data? = nil, options: Options = .init(), removedExperts: [Int: [Int]] = [:]
    ) {
        self.sourceConfig = sourceConfig
        self.passthrough = passthrough
        self.linears = linears
        self.extras = extras
        self.allocationReport = allocationReport
        self.options = options
        self.removedExperts = removedExperts
    }

    public static let allocationFileName = "pmq_allocation.json"
    /// Files copied from the source directory when present.
    public static let copiedFiles = [
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
    ]

    // MARK: tensors

    /// Every tensor in file order: passthrough tensors in the order given, then the packed
    /// linears by module name (`qweight`, `qzeros` — none at width 1 —, `scales`, `g_idx`), then
    /// the extras.
    public func storedTensors() throws -> [StoredTensor] { try storedUnits().flatMap { $0 } }

    /// The tensors in file order, in units a shard never splits: one per passthrough or extra
    /// tensor, one per packed linear (so a linear's tensors always share a file).
    public func storedUnits() throws -> [[StoredTensor]] {
        var units: [[StoredTensor]] = []
        for tensor in passthrough {
            let (dtype, data) = try Self.storedPassthrough(tensor, keepFloat32: options.keepFloat32)
            units.append([StoredTensor(name: tensor.name, dtype: dtype, shape: tensor.shape, data: data)])
        }
        for module in linears.keys.sorted() {
            units.append(try linears[module]!.storedTensors(module: module))
        }
        // Sizes are checked against shapes as each tensor is written.
        for extra in extras {
            units.append([
                StoredTensor(
                    name: extra.name, dtype: "F32", shape: extra.shape,
                    data: StoredTensor.littleEndianData(extra.values.map(\.bitPattern)))
            ])
        }
        var seen = Set<String>()
        for tensor in units.joined() where !seen.insert(tensor.name).inserted {
            throw PackedFormatError(tensor: tensor.name, "appears twice in the packed model")
        }
        return units
    }

    /// bf16 and f16 stay as they are; f32 becomes bf16 (nearest even) unless `keepFloat32`.
    static func storedPassthrough(_ tensor: Passthrough, keepFloat32: Bool) throws -> (String, Data) {
        guard tensor.dtype == "F32", !keepFloat32 else { return (tensor.dtype, tensor.data) }
        let count = tensor.data.count / 4
        guard count * 4 == tensor.data.count else {
            throw PackedFormatError(tensor: tensor.name, "F32 data of \(tensor.data.count) bytes is not whole floats")
        }
        var halves = [UInt16](repeating: 0, count: count)
        tensor.data.withUnsafeBytes { raw in
            halves.withUnsafeMutableBufferPointer { out in
                for index in 0..<count {
                    out[index] =
                        Float(
                            bitPattern: UInt32(
                                littleEndian: raw.loadUnaligned(fromByteOffset: 4 * index, as: UInt32.self))
                        ).bfloat16Bits
                }
            }
        }
        return ("BF16", StoredTensor.littleEndianData(halves))
    }

    // MARK: quantization_config

    /// `^…$` around the module name with regex metacharacters escaped: GPTQModel reads such a key
    /// as an exact module name (`_extract_literal_regex_pattern`), and `re.match` of it matches
    /// that module alone.
    public static func exactPattern(_ module: String) -> String {
        var escaped = "^"
        for character in module {
            if ".^$*+?{}[]()|\\".contains(character) { escaped.append("\\") }
            escaped.append(character)
        }
        return escaped + "$"
    }

    /// The most common value, ties broken towards the larger one.
    static func mostCommon(_ values: [Int]) -> Int? {
        var counts: [Int: Int] = [:]
        for value in values { counts[value, default: 0] += 1 }
        return counts.max { $0.value != $1.value ? $0.value < $1.value : $0.key < $1.key }?.key
    }

    /// Modules kept in float that a GPTQ loader would otherwise expect packed: the 2-D `.weight`
    /// tensors inside decoder layers (attention projections, routers, shared experts).
    public func floatModules() -> [String] {
        passthrough.compactMap { tensor -> String? in
            guard tensor.shape.count == 2, tensor.name.hasSuffix(".weight"), tensor.name.contains(".layers.") else {
                return nil
            }
            return String(tensor.name.dropLast(".weight".count))
        }.sorted()
    }

    /// `quantization_config` (also written as `quantize_config.json`): GPTQ v1 with the most
    /// common width and group size as defaults, a `+:` exact-name override in `dynamic` for every
    /// module that differs, a `-:` entry for every float module inside the decoder layers, and the
    /// `pmq` summary.
    public func quantizationConfig() throws -> [String: Any] {
        guard !linears.isEmpty else { throw PackedFormatError(tensor: nil, "no packed linears") }
        let modules = linears.keys.sorted()
        let bits = Self.mostCommon(modules.map { linears[$0]!.bits })!
        let groupSize = Self.mostCommon(modules.map { linears[$0]!.groupSize })!
        var dynamic: [String: Any] = [:]
        for module in modules {
            let linear = linears[module]!
            guard linear.bits != bits || linear.groupSize != groupSize else { continue }
            dynamic["+:" + Self.exactPattern(module)] = ["bits": linear.bits, "group_size": linear.groupSize]
        }
        for module in floatModules() where linears[module] == nil {
            dynamic["-:" + Self.exactPattern(module)] = [String: Any]()
        }
        var config: [String: Any] = [
            "quant_method": "gptq",
            "bits": bits,
            "group_size": groupSize,
            "desc_act": options.descAct,
            "sym": false,
            "checkpoint_format": "gptq",
            "pack_dtype": "int32",
            "true_sequential": true,
            "lm_head": false,
            "pmq": summary(),
        ]
        if !dynamic.isEmpty { config["dynamic"] = dynamic }
        return config
    }

    /// The `pmq` object: format version, modules per width, parameter-weighted average width,
    /// packed bytes and effective bits (scales, zeros and g_idx included), and the notes a reader
    /// needs for what GPTQ lacks.
    public func summary() -> [String: Any] {
        var modulesPerWidth: [String: Int] = [:]
        var parameters = 0, weightedBits = 0, packedBytes: Int64 = 0
        for linear in linears.values {
            modulesPerWidth[String(linear.bits), default: 0] += 1
            let count = linear.outFeatures * linear.inFeatures
            parameters += count
            weightedBits += count * linear.bits
            packedBytes += linear.layout.totalBytes
        }
        var summary: [String: Any] = [
            "format_version": 1,
            "modules_per_width": modulesPerWidth,
            "packed_parameters": parameters,
            "average_bits": parameters == 0 ? 0 : Double(weightedBits) / Double(parameters),
            "packed_bytes": packedBytes,
            "effective_bits": parameters == 0 ? 0 : Double(packedBytes * 8) / Double(parameters),
            "zero_storage":
                "v1 zero-1 as GPTQModel writes it: widths 2/4/8 subtract one per value from each whole word (a zero "
                + "of 0 borrows from the next value), width 3 stores (zero-1) mod 8 per value",
            "one_bit":
                "width 1 (pmq only): codes {0,1} packed 32 per int32 like other widths, no qzeros, zero fixed at "
                + "1/2, scale = 2*mean|w|, so w = scale*(q-1/2) = +-mean|w|",
            "float_passthrough": options.keepFloat32 ? "f32 kept" : "f32 rounded to bf16; bf16 and f16 kept",
        ]
        if allocationReport != nil { summary["allocation_report"] = Self.allocationFileName }
        if !removedExperts.isEmpty {
            summary["removed_experts"] = Dictionary(
                uniqueKeysWithValues: removedExperts.map { (String($0.key), $0.value.sorted()) })
            summary["removal"] =
                "experts listed here are not in the checkpoint; pmq never routes to them (router scores as "
                + "before, top-k refilled from the other experts); other loaders expect every expert"
        }
        if !extras.isEmpty { summary["extra_tensors"] = extras.map(\.name) }
        return summary
    }

    /// The `config.json` to write, and the `quantization_config` it declares (also written
    /// alone as `quantize_config.json`): the source's text as it is, with `quantization_config`
    /// added as its last member. Splicing text rather than re-encoding keeps the source's numbers
    /// as written: a JSON round trip turns `0.0` into `0`, and transformers then rejects
    /// `router_jitter_noise: 0` ("expected float, got int"). A source that already declares a
    /// `quantization_config` (an FP8 checkpoint) has that member cut out of the text first; only
    /// text that cannot be cut goes through a JSON round trip instead.
    public func config() throws -> (text: Data, quantization: [String: Any]) {
        guard var object = (try? JSONSerialization.jsonObject(with: sourceConfig)) as? [String: Any] else {
            throw PackedFormatError(tensor: nil, "the source config.json is not a JSON object")
        }
        let declared = object["quantization_config"] != nil
        let quantization = try quantizationConfig()
        object["quantization_config"] = quantization
        let options: JSONSerialization.WritingOptions = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        var text = String(data: sourceConfig, encoding: .utf8)
        // An FP8 source's own quantization_config is cut out of the text, which keeps the rest as written.
        if declared { text = text.flatMap { Self.removingMember("quantization_config", from: $0) } }
        guard let source = text, let close = source.lastIndex(of: "}") else {
            return (
                try JSONSerialization.data(withJSONObject: object, options: options) + Data("\n".utf8), quantization
            )
        }
        var head = String(source[..<close])
        while let last = head.last, last.isWhitespace { head.removeLast() }
        let member =
            "\"quantization_config\": "
            + String(
                decoding: try JSONSerialization.data(withJSONObject: quantization, options: options), as: UTF8.self
            )
            .replacingOccurrences(of: "\n", with: "\n  ")
        let written = head + (head.hasSuffix("{") ? "" : ",") + "\n  " + member + "\n}\n"
        // What is written must parse to the same object.
        guard let reparsed = try? JSONSerialization.jsonObject(with: Data(written.utf8)) as? [String: Any],
            reparsed.keys.sorted() == object.keys.sorted()
        else {
            throw PackedFormatError(
                tensor: nil, "the source config.json could not be extended with quantization_config")
        }
        return (Data(written.utf8), quantization)
    }

    /// `text`, a JSON object, without its top-level member `key` (and the comma that separated it);
    /// nil when the member is not found at the top level.
    static func removingMember(_ key: String, from text: String) -> String? {
        let bytes = Array(text.utf8)
        var depth = 0, index = 0
        var lastComma: Int?
        var memberStart: Int?
        func skipString(_ start: Int) -> Int { // index just past the closing quote
            var i = start + 1
            while i < bytes.count, bytes[i] != UInt8(ascii: "\"") { i += bytes[i] == UInt8(ascii: "\\") ? 2 : 1 }
            return i + 1
        }
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let end = skipString(index)
                if depth == 1, memberStart == nil, end <= bytes.count,
                    String(decoding: bytes[(index + 1)..<(end - 1)], as: UTF8.self) == key
                {
                    var colon = end
                    while colon < bytes.count,
                        bytes[colon] == UInt8(ascii: " ") || bytes[colon] == 10
                            || bytes[colon] == 13 || bytes[colon] == 9
                    {
                        colon += 1
                    }
                    if colon < bytes.count, bytes[colon] == UInt8(ascii: ":") { memberStart = index }
                }
                index = end
                continue
            }
            switch byte {
            case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                if depth == 1, let start = memberStart {
                    // The member was the last one: drop the comma before it.
                    let from = lastComma.flatMap { $0 < start ? $0 : nil } ?? start
                    return String(decoding: bytes[..<from] + bytes[index...], as: UTF8.self)
                }
                depth -= 1
            case UInt8(ascii: ","):
                if depth == 1 {
                    if let start = memberStart {
                        let prefix = lastComma.flatMap { $0 < start ? $0 : nil }
                        // Drop the member with the comma before it, or, first member, the comma after it.
                        return prefix.map { String(decoding: bytes[..<$0] + bytes[index...], as: UTF8.self) }
                            ?? String(decoding: bytes[..<start] + bytes[(index + 1)...], as: UTF8.self)
                    }
                    lastComma = index
                }
            default: break
            }
            index += 1
        }
        return nil
    }

    // MARK: shards

    /// Units of tensors grouped into shards of at most `maximumBytes` (a larger unit gets a shard
    /// of its own), in file order.
    public static func shards(_ units: [[StoredTensor]], maximumBytes: Int) -> [[StoredTensor]] {
        var shards: [[StoredTensor]] = [[]]
        var size = 0
        for unit in units {
            let bytes = unit.reduce(0) { $0 + $1.data.count }
            if size + bytes > maximumBytes, !shards[shards.count - 1].isEmpty {
                shards.append([])
                size = 0
            }
            shards[shards.count - 1].append(contentsOf: unit)
            size += bytes
        }
        return shards
    }

    /// `model.safetensors`, or `model-0000i-of-0000n.safetensors` when there are several shards.
    public static func shardName(_ index: Int, of count: Int) -> String {
        guard count > 1 else { return "model.safetensors" }
        func padded(_ n: Int) -> String { String(repeating: "0", count: max(0, 5 - String(n).count)) + String(n) }
        return "model-\(padded(index + 1))-of-\(padded(count)).safetensors"
    }
}
