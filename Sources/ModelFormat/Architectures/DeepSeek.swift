/// What DeepSeek-V2 and DeepSeek-V3 share (transformers' `modeling_deepseek_v2/v3`): multi-head
/// latent attention (`LatentAttention`), dense MLPs in the first `first_k_dense_replace` layers,
/// `n_shared_experts` shared experts fused into one ungated MLP of `n_shared_experts ·
/// moe_intermediate_size` on every token, routed weights multiplied by `routed_scaling_factor`,
/// and group-limited top-k over `n_group` groups of which `topk_group` compete.
///
/// config.json: `n_routed_experts`, `moe_intermediate_size`, `intermediate_size` (dense layers),
/// `n_shared_experts`, `first_k_dense_replace`, `q_lora_rank` (null: `q_proj`), `kv_lora_rank`,
/// `qk_nope_head_dim`, `qk_rope_head_dim`, `v_head_dim`, `routed_scaling_factor`, `n_group`,
/// `topk_group`, `norm_topk_prob`, `rope_scaling` (YaRN).
/// Tensors: `model.layers.N.self_attn.{q_proj | q_a_proj, q_a_layernorm, q_b_proj}`,
/// `self_attn.{kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj}`, `mlp.gate` (router),
/// `mlp.experts.E.{gate,up,down}_proj`, `mlp.shared_experts.{gate,up,down}_proj`, and in dense
/// layers `mlp.{gate,up,down}_proj`.
enum DeepSeek {
    static func configure(_ config: inout MoEModelConfig, _ fields: ConfigFields) throws {
        config.expertCount = try fields.positive("n_routed_experts")
        config.expertIntermediateSize = try fields.positive("moe_intermediate_size")
        config.denseIntermediateSize = try fields.positive("intermediate_size")
        let (shared, overflow) = try fields.nonNegative("n_shared_experts", default: 0)
            .multipliedReportingOverflow(by: config.expertIntermediateSize)
        guard !overflow, shared <= 1 << 40 else {
            throw fields.fail("n_shared_experts", "times moe_intermediate_size is not a plausible width")
        }
        config.sharedExpertIntermediateSize = shared
        let firstDense = try fields.nonNegative("first_k_dense_replace", default: 0)
        guard firstDense <= config.layerCount else {
            throw fields.fail(
                "first_k_dense_replace", "\(firstDense) exceeds num_hidden_layers \(config.layerCount)")
        }
        guard try fields.positive("moe_layer_freq", default: 1) == 1 else {
            throw fields.fail("moe_layer_freq", "only 1 is supported (every layer after the dense ones is MoE)")
        }
        config.moeLayers = (0..<config.layerCount).map { $0 >= firstDense }
        guard try !fields.bool("attention_bias", default: false) else {
            throw fields.fail("attention_bias", "true is not supported for multi-head latent attention")
        }
        let nope = try fields.positive("qk_nope_head_dim"), rope = try fields.positive("qk_rope_head_dim")
        config.latentAttention = LatentAttention(
            queryRank: fields.value("q_lora_rank") == nil ? nil : try fields.positive("q_lora_rank"),
            latentRank: try fields.positive("kv_lora_rank"), nopeDim: nope, ropeDim: rope,
            valueDim: try fields.positive("v_head_dim"), interleaved: true)
        config.headDim = nope + rope
        config.keyValueHeads = config.attentionHeads
        config.routing.scale = try fields.number("routed_scaling_factor", default: 1)
    }

    /// `n_group` groups of which `topk_group` compete; refuses shapes the router cannot route.
    static func groups(
        _ config: inout MoEModelConfig, _ fields: ConfigFields, defaultGroups: Int, defaultKept: Int
    ) throws {
        let groups = try fields.positive("n_group", default: defaultGroups)
        let kept = try fields.positive("topk_group", default: defaultKept)
        guard kept <= groups else { throw fields.fail("topk_group", "\(kept) exceeds n_group \(groups)") }
        guard config.expertCount % groups == 0 else {
            throw fields.fail("n_group", "\(groups) groups do not divide the \(config.expertCount) routed experts")
        }
        let perGroup = config.expertCount / groups
        guard config.routing.topK <= kept * perGroup else {
            throw fields.fail(
                "num_experts_per_tok",
                "\(config.routing.topK) exceeds the \(kept * perGroup) experts of the topk_group \(kept) groups")
        }
        config.routing.groups = groups
        config.routing.groupsKept = kept
    }
}
