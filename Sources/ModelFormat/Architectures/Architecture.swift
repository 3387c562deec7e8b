/// The MoE architectures pmq reads, by `config.json`'s `model_type`. Each is described in one file
/// of this folder (`Mixtral.swift`, …): the config keys it reads, its tensor names and which of the
/// shared building blocks it uses (QK norm, attention bias, router renormalisation, shared expert).
/// Adding an architecture means one file, a case here, and its test fixture.
public enum MoEArchitecture: String, Sendable, CaseIterable {
    case mixtral
    case qwen2MoE = "qwen2_moe"
    case qwen3MoE = "qwen3_moe"
    case olmoe
    case deepseekV2 = "deepseek_v2"
    case deepseekV3 = "deepseek_v3"

    /// Other `model_type`s that are one of these: Kimi-K2's config says `kimi_k2` and loads as
    /// `DeepseekV3ForCausalLM`.
    static let aliases: [String: MoEArchitecture] = ["kimi_k2": .deepseekV3]

    var definition: any ArchitectureDefinition.Type {
        switch self {
        case .mixtral: return Mixtral.self
        case .qwen2MoE: return Qwen2MoE.self
        case .qwen3MoE: return Qwen3MoE.self
        case .olmoe: return OLMoE.self
        case .deepseekV2: return DeepSeekV2.self
        case .deepseekV3: return DeepSeekV3.self
        }
    }
}

/// What one architecture says about itself. The common `config.json` keys (vocabulary, hidden
/// size, layers, heads, RoPE, norms, top-k) and the common tensor names (`model.layers.N.self_attn.*`,
/// norms, embeddings, head) are read by `MoEModelConfig.parse` and `ArchitectureMap`; a
/// definition adds what differs.
protocol ArchitectureDefinition {
    /// Reads the architecture's own keys: expert count and width, which layers are MoE, and
    /// the flags of the building blocks it uses.
    static func configure(_ config: inout MoEModelConfig, _ fields: ConfigFields) throws
    /// The MoE block's module under `model.layers.N.` (holding `gate`, the router, and `experts`).
    static var moeBlock: String { get }
    /// An expert's gate, up and down projections under `….experts.E.`.
    static var expertLinears: (gate: String, up: String, down: String) { get }
    /// The shared expert's module under `model.layers.N.mlp.` and its sigmoid gate's, if it has
    /// one (Qwen2-MoE gates it; DeepSeek adds its shared experts, fused as one MLP, ungated).
    static var sharedExpert: (module: String, gate: String?)? { get }
}

extension ArchitectureDefinition {
    static var moeBlock: String { "mlp" }
    static var expertLinears: (gate: String, up: String, down: String) { ("gate_proj", "up_proj", "down_proj") }
    static var sharedExpert: (module: String, gate: String?)? { nil }
}
