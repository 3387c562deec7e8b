import Foundation

/// How a token's experts are picked and weighted.
public struct RoutingRule: Sendable, Equatable {
    /// Experts per token.
    public var topK: Int
    /// Renormalise the top-k softmax probabilities to sum to 1 (Mixtral always; Qwen/OLMoE if `norm_topk_prob`).
    public var normalizeTopK: Bool
    /// How router logits become scores: softmax over the experts, or a sigmoid each (DeepSeek-V3).
    public var scoring: Scoring = .softmax
    /// Group-limited routing (DeepSeek): experts in `groups` equal groups, only the best
    /// `groupsKept` groups (by `groupScore`) compete for the top-k. 1: plain top-k.
    public var groups: Int = 1
    public var groupsKept: Int = 1
    public var groupScore: GroupScore = .max
    /// DeepSeek-V3: `e_score_correction_bias` is added to the scores for choosing, not for weighting.
    public var correctionBias: Bool = false
    /// DeepSeek's `routed_scaling_factor`: the chosen experts' weights are multiplied by it.
    public var scale: Double = 1
    /// DeepSeek-V2 scales only unnormalised weights; V3 normalises, then scales.
    public var scaleAfterNormalizing: Bool = false

    public enum Scoring: String, Sendable { case softmax, sigmoid }
    /// A group's score: its best expert's (V2 `group_limited_greedy`) or its best two's sum (V3).
    public enum GroupScore: String, Sendable { case max, topTwoSum }
}

/// DeepSeek's multi-head latent attention (`modeling_deepseek_v2`): queries from `q_proj`, or
/// through a `queryRank` bottleneck (`q_a_proj` → `q_a_layernorm` → `q_b_proj`); keys and values
/// from one `latentRank` latent per token (`kv_a_proj_with_mqa` → `kv_a_layernorm` →
/// `kv_b_proj`) plus one rotary key of `ropeDim` shared by every head.
public struct LatentAttention: Sendable, Equatable {
    public var queryRank: Int?
    public var latentRank: Int
    /// Per head: the query/key part without position (`qk_nope_head_dim`), the rotary part
    /// (`qk_rope_head_dim`) and the value width (`v_head_dim`).
    public var nopeDim: Int
    public var ropeDim: Int
    public var valueDim: Int
    /// The rotary part's pairs are adjacent (`x0, x1`), not split halves: always in V2 (complex
    /// rotation), V3's `rope_interleave`.
    public var interleaved: Bool
}

/// A Hugging Face `config.json` for a supported MoE, normalised to one shape.
public struct MoEModelConfig: Sendable, Equatable {
    /// Bounds on what a `config.json` may declare (docs/FORMATS.md §7.1), far above any released MoE
    /// (DeepSeek-V3: 61 layers of 256 experts; Kimi-K2: 384), so that what is sized by them fits.
    public static let maximumLayers = 4096
    public static let maximumExperts = 65_536
    public static let maximumExpertsInModel = 1 << 20
    public var architecture: MoEArchitecture
    public var vocabSize: Int
    public var hiddenSize: Int
    public var layerCount: Int
    public var attentionHeads: Int
    public var keyValueHeads: Int
    public var headDim: Int
    public var rope: RopeParameters
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
    /// DeepSeek's multi-head latent attention; nil for grouped-query attention.
    public var latentAttention: LatentAttention?
    /// The shared expert has a sigmoid gate (Qwen2-MoE) or is simply added (DeepSeek): the
    /// architecture's definition says which.
    public var sharedExpertGated: Bool { architecture.definition.sharedExpert?.gate != nil }
    /// DeepSeek-V3's multi-token-prediction layers, stored after the last decoder layer
    /// (`model.layers.L…`): not part of the model pmq runs, their tensors are skipped.
    public var trailingLayers: Int = 0

    /// Width of one head's query and key (GQA: `head_dim`; MLA: nope + rope).
    public var keyHeadDim: Int { latentAttention.map { $0.nopeDim + $0.ropeDim } ?? headDim }
    /// Width of one head's value (GQA: `head_dim`; MLA: `v_head_dim`).
    public var valueHeadDim: Int { latentAttention?.valueDim ?? headDim }
    /// Key/value heads as the attention sees them (MLA expands the latent to every head).
    public var attentionKVHeads: Int { latentAttention == nil ? keyValueHeads : attentionHeads }
    /// The softmax scale: `1/√d`, times DeepSeek's YaRN mscale² under MLA.
    public var attentionScale: Float {
        let base = 1 / Double(keyHeadDim).squareRoot()
        return Float(latentAttention == nil ? base : base * rope.softmaxScaleMultiplier)
    }
    public var ropeTheta: Double { rope.theta }

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
        try StrictJSON.validate(data, file: file)
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
        guard let architecture = MoEArchitecture(rawValue: modelType) ?? MoEArchitecture.aliases[modelType] else {
            throw ModelFormatError(
                file: file,
                "unsupported architecture '\(modelType)' (pmq reads "
                    + "\(MoEArchitecture.allCases.map(\.rawValue).joined(separator: ", ")))"
            )
        }
        let hidden = try fields.positive("hidden_size")
        let heads = try fields.positive("num_attention_heads")
        let layers = try fields.positive("num_hidden_layers", maximum: MoEModelConfig.maximumLayers)
        let maxPositions = try fields.positive("max_position_embeddings", default: 4096)
        var config = MoEModelConfig(
            architecture: architecture,
            vocabSize: try fields.positive("vocab_size"),
            hiddenSize: hidden,
            layerCount: layers,
            attentionHeads: heads,
            keyValueHeads: try fields.positive("num_key_value_heads", default: heads),
            headDim: try fields.positive("head_dim", default: hidden / heads),
            rope: try fields.rope(maxPositions: maxPositions),
            rmsNormEps: try fields.number("rms_norm_eps", default: 1e-6),
            maxPositions: maxPositions,
            tieWordEmbeddings: try fields.bool("tie_word_embeddings", default: false),
            expertCount: 0, expertIntermediateSize: 0,
            routing: RoutingRule(topK: try fields.positive("num_experts_per_tok"), normalizeTopK: true),
            denseIntermediateSize: 0, sharedExpertIntermediateSize: 0,
            attentionBias: false, qkNorm: .none, clipQKV: nil,
            moeLayers: Array(repeating: true, count: layers))
        try architecture.definition.configure(&config, fields)
        // What pmq does not implement is refused, not ignored.
        if let activation = fields.value("hidden_act") {
            guard activation as? String == "silu" else {
                throw fields.fail("hidden_act", "pmq runs SiLU-gated experts (SwiGLU), got \(activation)")
            }
        }
        if try fields.bool("use_sliding_window", default: false) {
            throw fields.fail("use_sliding_window", "true is not supported: pmq attends to every earlier position")
        }
        if architecture == .mixtral, fields.value("sliding_window") != nil {
            let window = try fields.positive("sliding_window")
            guard window >= maxPositions else {
                throw fields.fail(
                    "sliding_window", "\(window) is not supported: pmq attends to every earlier position")
            }
        }
        guard config.expertCount <= Self.maximumExperts,
            config.expertCount * layers <= Self.maximumExpertsInModel
        else {
            throw ModelFormatError(
                file: file,
                "\(config.expertCount) experts in each of \(layers) layers: pmq reads at most \(Self.maximumExperts) "
                    + "per layer and \(Self.maximumExpertsInModel) in all")
        }
        guard config.routing.topK <= config.expertCount else {
            throw ModelFormatError(
                file: file, "num_experts_per_tok \(config.routing.topK) exceeds the \(config.expertCount) experts")
        }
        guard config.latentAttention != nil || heads % config.keyValueHeads == 0 else {
            throw ModelFormatError(
                file: file,
                "num_attention_heads \(heads) is not a multiple of num_key_value_heads \(config.keyValueHeads)")
        }
        if let latent = config.latentAttention {
            guard latent.ropeDim % 2 == 0 else {
                throw ModelFormatError(file: file, "qk_rope_head_dim: \(latent.ropeDim) must be even for RoPE")
            }
        } else if config.headDim % 2 != 0 {
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
        guard let number = jsonInteger(value, in: -999_999_999_999_999...999_999_999_999_999) else {
            throw fail(key, "expected an integer")
        }
        return number
    }

    /// A positive integer of at most `maximum` (2^24 by default: sizes multiplied together must not
    /// overflow, and arrays sized by them must fit in memory; docs/FORMATS.md §7.1).
    func positive(_ key: String, default fallback: Int? = nil, maximum: Int = 1 << 24) throws -> Int {
        let result = try integer(key, default: fallback)
        guard result > 0 else { throw fail(key, "must be > 0, got \(result)") }
        guard result <= maximum else { throw fail(key, "must be at most \(maximum), got \(result)") }
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
            // Bounded as `integer` is: `Int(1e300)` trapped here.
            guard let number = jsonInteger(item, in: -999_999_999_999_999...999_999_999_999_999) else {
                throw fail(key, "expected a list of integers")
            }
            return number
        }
    }
}

/// JSONSerialization gives booleans as NSNumber too (so `1 is Bool` holds): tell them apart by type code.
/// A JSON number (from `JSONSerialization`) that is an integer within `range`; nil for booleans
/// (which bridge to 0 and 1), fractions, strings and values out of range.
public func jsonInteger(_ value: Any?, in range: ClosedRange<Int>) -> Int? {
    guard let value, !isJSONBoolean(value), let number = value as? NSNumber else { return nil }
    let double = number.doubleValue
    guard double.isFinite, double == double.rounded(), double >= Double(range.lowerBound),
        double <= Double(range.upperBound), abs(double) < 9.0e15
    else { return nil }
    return Int(double)
}

func isJSONBoolean(_ value: Any) -> Bool {
    guard let number = value as? NSNumber else { return false }
    return String(cString: number.objCType) == "c"
}
