import Foundation

/// How a token's experts are picked and weighted.
public struct RoutingRule: Sendable, Equatable {
    /// Experts per token.
    public var topK: Int
    /// Renormalise the top-k softmax probabilities to sum to 1 (Mixtral always; Qwen/OLMoE if `norm_topk_prob`).
    public var normalizeTopK: Bool
}

/// A Hugging Face `config.json` for a supported MoE, normalised to one shape.
public struct MoEModelConfig: Sendable, Equatable {
    public var architecture: MoEArchitecture
    public var vocabSize: Int
    public var hiddenSize: Int
    public var layerCount: Int
    public var attentionHeads: Int
    public var keyValueHeads: Int
    public var headDim: Int
    public var ropeTheta: Double
    public var rmsNormEps: Double
    public var maxPositions: Int
    public var tieWordEmbeddings: Bool
    /// Routed experts per MoE layer.
    public var expertCount: Int
    /// Width of one routed expert's gate/up projections.
    public var expertIntermediateSize: Int
    public var routing: RoutingRule
    /// Dense MLP width for layers that are not MoE (Qwen `mlp_only_layers`, sparse step > 1).
    public var denseIntermediateSize: Int
    /// Qwen2-MoE's shared expert width (0 when there is none).
    public var sharedExpertIntermediateSize: Int
    /// Qwen2-MoE: q/k/v projections carry a bias.
    public var attentionBias: Bool
    /// RMSNorm on queries and keys: per head (Qwen3-MoE), over the whole projection (OLMoE), or none.
    public var qkNorm: QKNorm
    /// OLMoE's optional clamp of q/k/v activations.
    public var clipQKV: Double?
    /// Which decoder layers have an MoE block.
    public var moeLayers: [Bool]

    public enum QKNorm: String, Sendable {
        case none, perHead, fullProjection
    }

    public static func read(directory: String) throws -> MoEModelConfig {
        let path = (directory as NSString).appendingPathComponent("config.json")
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ModelFormatError(file: path, "cannot read: \((error as NSError).localizedDescription)")
        }
        return try parse(data, file: path)
    }

    public static func parse(_ data: Data, file: String) throws -> MoEModelConfig {
        let object: [String: Any]
        do {
            guard let parsed = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw ModelFormatError(file: file, "not a JSON object")
            }
            object = parsed
        } catch let error as ModelFormatError { throw error } catch {
            throw ModelFormatError(file: file, "not valid JSON")
        }
        let fields = ConfigFields(object: object, file: file)
        let modelType = try fields.string("model_type")
        guard let architecture = MoEArchitecture(rawValue: modelType) else {
            throw ModelFormatError(
                file: file,
                "unsupported architecture '\(modelType)' (pmq reads "
                    + "\(MoEArchitecture.allCases.map(\.rawValue).joined(separator: ", ")))"
            )
        }
        let hidden = try fields.positive("hidden_size")
        let heads = try fields.positive("num_attention_heads")
        let layers = try fields.positive("num_hidden_layers")
        var config = MoEModelConfig(
            architecture: architecture,
            vocabSize: try fields.positive("vocab_size"),
            hiddenSize: hidden,
            layerCount: layers,
            attentionHeads: heads,
            keyValueHeads: try fields.positive("num_key_value_heads", default: heads),
            headDim: try fields.positive("head_dim", default: hidden / heads),
            ropeTheta: try fields.ropeTheta(),
            rmsNormEps: try fields.number("rms_norm_eps", default: 1e-6),
            maxPositions: try fields.positive("max_position_embeddings", default: 4096),
            tieWordEmbeddings: try fields.bool("tie_word_embeddings", default: false),
            expertCount: 0, expertIntermediateSize: 0,
            routing: RoutingRule(topK: try fields.positive("num_experts_per_tok"), normalizeTopK: true),
            denseIntermediateSize: 0, sharedExpertIntermediateSize: 0,
            attentionBias: false, qkNorm: .none, clipQKV: nil,
            moeLayers: Array(repeating: true, count: layers))
        try architecture.definition.configure(&config, fields)
        guard config.routing.topK <= config.expertCount else {
            throw ModelFormatError(
                file: file, "num_experts_per_tok \(config.routing.topK) exceeds the \(config.expertCount) experts")
        }
        guard heads % config.keyValueHeads == 0 else {
            throw ModelFormatError(
                file: file,
                "num_attention_heads \(heads) is not a multiple of num_key_value_heads \(config.keyValueHeads)")
        }
        guard config.headDim % 2 == 0 else {
            throw ModelFormatError(file: file, "head_dim \(config.headDim) must be even for RoPE")
        }
        return config
    }
}

/// Typed access to config.json fields with errors that name the file and key.
struct ConfigFields {
    let object: [String: Any]
    let file: String

    func fail(_ key: String, _ problem: String) -> ModelFormatError {
        ModelFormatError(file: file, "\(key): \(problem)")
    }

    func value(_ key: String) -> Any? {
        guard let value = object[key], !(value is NSNull) else { return nil }
        return value
    }

    /// transformers 5 moved `rope_theta` into `rope_parameters`; read either.
    func ropeTheta() throws -> Double {
        if let parameters = value("rope_parameters") as? [String: Any], parameters["rope_theta"] != nil {
            return try ConfigFields(object: parameters, file: file).number("rope_theta", default: 10000)
        }
        return try number("rope_theta", default: 10000)
    }

    func string(_ key: String) throws -> String {
        guard let value = value(key) else { throw fail(key, "missing") }
        guard let text = value as? String else { throw fail(key, "expected a string") }
        return text
    }

    func integer(_ key: String, default fallback: Int? = nil) throws -> Int {
        guard let value = value(key) else {
            if let fallback { return fallback }
            throw fail(key, "missing")
        }
        guard !isJSONBoolean(value), let number = value as? NSNumber,
            number.doubleValue == number.doubleValue.rounded(),
            abs(number.doubleValue) < 1e15
        else { throw fail(key, "expected an integer") }
        return Int(number.doubleValue)
    }

    func positive(_ key: String, default fallback: Int? = nil) throws -> Int {
        let result = try integer(key, default: fallback)
        guard result > 0 else { throw fail(key, "must be > 0, got \(result)") }
        return result
    }

    func nonNegative(_ key: String, default fallback: Int? = nil) throws -> Int {
        let result = try integer(key, default: fallback)
        guard result >= 0 else { throw fail(key, "must be ≥ 0, got \(result)") }
        return result
    }

    func optionalNumber(_ key: String) throws -> Double? {
        guard let value = value(key) else { return nil }
        guard !isJSONBoolean(value), let number = value as? NSNumber, number.doubleValue.isFinite else {
            throw fail(key, "expected a number")
        }
        return number.doubleValue
    }

    func number(_ key: String, default fallback: Double) throws -> Double {
        guard let result = try optionalNumber(key) else { return fallback }
        guard result > 0 else { throw fail(key, "must be > 0, got \(result)") }
        return result
    }

    func bool(_ key: String, default fallback: Bool) throws -> Bool {
        guard let value = value(key) else { return fallback }
        guard isJSONBoolean(value), let flag = value as? Bool else { throw fail(key, "expected true or false") }
        return flag
    }

    func integers(_ key: String, default fallback: [Int]) throws -> [Int] {
        guard let value = value(key) else { return fallback }
        guard let list = value as? [Any] else { throw fail(key, "expected a list of integers") }
        return try list.map { item in
            guard !isJSONBoolean(item), let number = item as? NSNumber,
                number.doubleValue == number.doubleValue.rounded()
            else {
                throw fail(key, "expected a list of integers")
            }
            return Int(number.doubleValue)
        }
    }
}

/// JSONSerialization gives booleans as NSNumber too (so `1 is Bool` holds): tell them apart by type code.
func isJSONBoolean(_ value: Any) -> Bool {
    guard let number = value as? NSNumber else { return false }
    return String(cString: number.objCType) == "c"
}
