/// OLMoE (transformers' `modeling_olmoe.py`): RMSNorm over the whole query and key projections
/// (`q_norm` of width heads × head_dim, `k_norm` of kv-heads × head_dim); an optional clamp of
/// q/k/v (`clip_qkv`); top-k probabilities not renormalised unless `norm_topk_prob`; every
/// layer MoE, no shared expert.
///
/// config.json: `num_experts`, `intermediate_size` (the expert width), `norm_topk_prob`,
/// `attention_bias`, `clip_qkv`.
/// Tensors: `model.layers.N.mlp.gate`, `mlp.experts.E.{gate,up,down}_proj`, `self_attn.{q,k}_norm`.
enum OLMoE: ArchitectureDefinition {
    static func configure(_ config: inout MoEModelConfig, _ fields: ConfigFields) throws {
        config.expertCount = try fields.positive("num_experts")
        config.expertIntermediateSize = try fields.positive("intermediate_size")
        config.denseIntermediateSize = config.expertIntermediateSize
        config.routing.normalizeTopK = try fields.bool("norm_topk_prob", default: false)
        config.attentionBias = try fields.bool("attention_bias", default: false)
        config.qkNorm = .fullProjection
        config.clipQKV = try fields.optionalNumber("clip_qkv")
    }
}
