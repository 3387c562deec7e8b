import Foundation

/// The GPTQ part of a packed model's `config.json` (`quantization_config`): the default width and
/// group size, and GPTQModel's `dynamic` per-module overrides — a map from a regular expression
/// (matched at the start of the module name, as Python's `re.match`) to overrides such as
/// `{"bits": 3}`; a `-:` prefix skips matching modules (left unquantized), `+:` or no prefix
/// overrides. GPTQModel takes the first match in file order; JSON objects reach us unordered, so
/// two patterns that both match one module with different overrides are rejected as ambiguous
/// (pmq writes one exact pattern per module).
public struct QuantizationConfig: Sendable, Equatable {
    public struct Rule: Sendable, Equatable {
        public var pattern: String
        public var skip: Bool
        public var bits: Int?
        public var groupSize: Int?
    }

    public var method: String
    public var bits: Int
    public var groupSize: Int
    public var descAct: Bool
    public var checkpointFormat: String
    public var rules: [Rule]
    /// Experts removed at packing (width 0), by decoder layer: `pmq.removed_experts` (docs/FORMATS.md §5).
    public var removedExperts: [Int: [Int]] = [:]
    public let file: String

    /// `nil` when `config.json` has no `quantization_config` (a float model) or an FP8 one (`FP8Config`).
    public static func read(directory: String) throws -> QuantizationConfig? {
        guard let (path, section) = try section(directory: directory) else { return nil }
        func integer(_ key: String, in dictionary: [String: Any], default fallback: Int? = nil) throws -> Int {
            guard let raw = dictionary[key] else {
                if let fallback { return fallback }
                throw ModelFormatError(file: path, "quantization_config.\(key) is missing")
            }
            guard let number = jsonInteger(raw, in: -9_000_000_000_000_000...9_000_000_000_000_000) else {
                throw ModelFormatError(file: path, "quantization_config.\(key) must be an integer")
            }
            return number
        }
        let method = section["quant_method"] as? String ?? ""
        // Block-scaled FP8 checkpoints are float models to pmq: `FP8Config` reads them.
        if method == "fp8" { return nil }
        guard method == "gptq" else {
            throw ModelFormatError(
                file: path, "quantization_config.quant_method is \"\(method)\"; pmq runs GPTQ-packed models")
        }
        let bits = try integer("bits", in: section)
        let groupSize = try integer("group_size", in: section)
        var rules: [Rule] = []
        if let dynamic = section["dynamic"] {
            guard let map = dynamic as? [String: Any] else {
                throw ModelFormatError(file: path, "quantization_config.dynamic is not an object")
            }
            for (key, overrides) in map.sorted(by: { $0.key < $1.key }) {
                guard let overrides = overrides as? [String: Any] else {
                    throw ModelFormatError(file: path, "quantization_config.dynamic[\"\(key)\"] is not an object")
                }
                let skip = key.hasPrefix("-:")
                let pattern = key.hasPrefix("-:") || key.hasPrefix("+:") ? String(key.dropFirst(2)) : key
                guard (try? NSRegularExpression(pattern: pattern)) != nil else {
                    throw ModelFormatError(
                        file: path, "quantization_config.dynamic key \"\(key)\" is not a regular expression")
                }
                rules.append(
                    Rule(
                        pattern: pattern, skip: skip,
                        bits: overrides["bits"] == nil ? nil : try integer("bits", in: overrides),
                        groupSize: overrides["group_size"] == nil ? nil : try integer("group_size", in: overrides)))
            }
        }
        let descAct = (section["desc_act"] as? Bool) ?? false
        let format = section["checkpoint_format"] as? String ?? "gptq"
        var removed: [Int: [Int]] = [:]
        if let pmq = section["pmq"] as? [String: Any], let map = pmq["removed_experts"] {
            let field = "quantization_config.pmq.removed_experts"
            guard let map = map as? [String: Any] else {
                throw ModelFormatError(file: path, "\(field): expected an object of layer → expert list")
            }
            for (key, value) in map {
                guard let layer = Int(key), layer >= 0 else {
                    throw ModelFormatError(file: path, "\(field): key \"\(key)\" is not a layer index")
                }
                let experts = (value as? [Any] ?? []).compactMap(SafeTensorsHeader.exactInt)
                guard let list = value as? [Any], experts.count == list.count, experts.allSatisfy({ $0 >= 0 }),
                    Set(experts).count == experts.count
                else {
                    throw ModelFormatError(file: path, "\(field).\(key): expected a list of distinct expert indices")
                }
                removed[layer] = experts.sorted()
            }
        }
        return QuantizationConfig(
            method: method, bits: bits, groupSize: groupSize, descAct: descAct,
            checkpointFormat: format, rules: rules, removedExperts: removed, file: path)
    }

    /// `config.json`'s path and its `quantization_config` object; nil when there is none. GPTQ
    /// (`read`) and FP8 (`FP8Config.read`) configs are both read from it.
    static func section(directory: String) throws -> (path: String, section: [String: Any])? {
        let path = (directory as NSString).appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ModelFormatError(file: path, "cannot read a JSON object")
        }
        try StrictJSON.validate(data, file: path)
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ModelFormatError(file: path, "cannot read a JSON object")
        }
        guard let value = object["quantization_config"] else { return nil }
        guard let section = value as? [String: Any] else {
            throw ModelFormatError(file: path, "quantization_config is not an object")
        }
        return (path, section)
    }

    /// Width and group size of `module` (e.g. `model.layers.0.block_sparse_moe.experts.3.w1`), or
    /// nil when a `-:` rule leaves it unquantized.
    public func width(of module: String) throws -> (bits: Int, groupSize: Int)? {
        let range = NSRange(module.startIndex..., in: module)
        let matches = rules.filter { rule in
            let expression = try! NSRegularExpression(pattern: rule.pattern)
            return expression.firstMatch(in: module, options: .anchored, range: range) != nil
        }
        if matches.count > 1, Set(matches.map { "\($0.skip) \($0.bits ?? -1) \($0.groupSize ?? -1)" }).count > 1 {
            throw ModelFormatError(
                file: file,
                "quantization_config.dynamic: patterns \(matches.map(\.pattern)) all match \(module) with different "
                    + "overrides"
            )
        }
        guard let rule = matches.first else { return (bits, groupSize) }
        if rule.skip { return nil }
        return (rule.bits ?? bits, rule.groupSize ?? groupSize)
    }
}
