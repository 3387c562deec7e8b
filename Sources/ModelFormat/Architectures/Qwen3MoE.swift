/// Qwen3-MoE (transformers' `modeling_qwen3_moe.py`): RMSNorm on each query and key head
/// (`q_norm`, `k_norm` of width `head_dim`); top-k probabilities renormalised unless
/// `norm_topk_prob` is false; no shared expert; dense layers as in Qwen2-MoE.
///
/// config.json: Qwen2-MoE's expert keys (see `QwenMoE`), `attention_bias` (default false).
/// Tensors: `model.layers.N.mlp.gate`, `mlp.experts.E.{gate,up,down}_proj`,
/// `self_attn.{q,k}_norm`.
enum Qwen3MoE: ArchitectureDefinition {
    static func configure(_ config: inout MoEModelConfig, _ fields: ConfigFields) throws {
        try QwenMoE.configure(&config, fields, normalizeTopKByDefault: true)
        config.attentionBias = try fields.bool("attention_bias", default: false)
        config.qkNorm = .perHead
    }
}
