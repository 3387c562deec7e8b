/// Qwen2-MoE (transformers' `modeling_qwen2_moe.py`): q/k/v projections with bias; top-k
/// probabilities renormalised only if `norm_topk_prob` (default false); a shared expert on every
/// token, scaled by a sigmoid gate (`[1, hidden]`); dense MLP layers where `mlp_only_layers` or
/// `decoder_sparse_step` say so.
///
/// config.json: `num_experts` (transformers 5: `num_local_experts`), `moe_intermediate_size`,
/// `intermediate_size` (dense layers), `shared_expert_intermediate_size`, `qkv_bias`.
/// Tensors: `model.layers.N.mlp.gate`, `mlp.experts.E.{gate,up,down}_proj`,
/// `mlp.shared_expert.{gate,up,down}_proj`, `mlp.shared_expert_gate`.
enum Qwen2MoE: ArchitectureDefinition {
    static func configure(_ config: inout MoEModelConfig, _ fields: ConfigFields) throws {
        try QwenMoE.configure(&config, fields, normalizeTopKByDefault: false)
        config.sharedExpertIntermediateSize = try fields.nonNegative("shared_expert_intermediate_size", default: 0)
        config.attentionBias = try fields.bool("qkv_bias", default: true)
    }

    static var sharedExpert: (module: String, gate: String?)? { ("shared_expert", "shared_expert_gate") }
}

/// The keys Qwen2-MoE and Qwen3-MoE share: experts, widths, and which layers are MoE.
enum QwenMoE {
    static func configure(_ config: inout MoEModelConfig, _ fields: ConfigFields, normalizeTopKByDefault: Bool) throws {
        // transformers 5 writes Qwen3-MoE's expert count as num_local_experts.
        config.expertCount = try fields.positive(
            fields.value("num_experts") == nil ? "num_local_experts" : "num_experts")
        config.expertIntermediateSize = try fields.positive("moe_intermediate_size")
        config.denseIntermediateSize = try fields.positive("intermediate_size", default: config.expertIntermediateSize)
        config.routing.normalizeTopK = try fields.bool("norm_topk_prob", default: normalizeTopKByDefault)
        let step = try fields.positive("decoder_sparse_step", default: 1)
        let denseOnly = Set(try fields.integers("mlp_only_layers", default: []))
        config.moeLayers = (0..<config.layerCount).map { !denseOnly.contains($0) && ($0 + 1) % step == 0 }
    }
}
