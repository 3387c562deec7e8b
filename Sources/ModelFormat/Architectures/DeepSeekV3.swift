/// DeepSeek-V3, R1, Moonlight, Kimi-K2: sigmoid scores; `e_score_correction_bias` added for
/// choosing only; a group's score is the sum of its best two; weights normalised if
/// `norm_topk_prob`, then scaled; `rope_interleave`; the multi-token-prediction layers
/// (`num_nextn_predict_layers`) are skipped.
enum DeepSeekV3: ArchitectureDefinition {
    static func configure(_ config: inout MoEModelConfig, _ fields: ConfigFields) throws {
        try DeepSeek.configure(&config, fields)
        config.routing.scoring = .sigmoid
        config.routing.correctionBias = true
        config.routing.normalizeTopK = try fields.bool("norm_topk_prob", default: true)
        config.routing.scaleAfterNormalizing = true
        if fields.value("routed_scaling_factor") == nil { config.routing.scale = 2.5 }
        if let scoring = fields.value("scoring_func") {
            guard scoring as? String == "sigmoid" else { throw fields.fail("scoring_func", "V3 routes by sigmoid") }
        }
        if let method = fields.value("topk_method") {
            guard method as? String == "noaux_tc" else { throw fields.fail("topk_method", "V3 routes by noaux_tc") }
        }
        try DeepSeek.groups(&config, fields, defaultGroups: 8, defaultKept: 4)
        guard config.expertCount / config.routing.groups >= 2 else {
            throw fields.fail("n_group", "groups of one expert (V3 scores a group by its best two)")
        }
        config.routing.groupScore = .topTwoSum
        config.latentAttention?.interleaved = try fields.bool("rope_interleave", default: true)
        config.trailingLayers = try fields.nonNegative("num_nextn_predict_layers", default: 0)
    }

    static var sharedExpert: (module: String, gate: String?)? { ("shared_experts", nil) }
}
