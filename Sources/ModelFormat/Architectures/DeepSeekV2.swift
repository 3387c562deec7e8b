/// DeepSeek-V2, V2-Lite, DeepSeek-VL2's language model: softmax scores, `topk_method`
/// `greedy` or `group_limited_greedy` (a group's score is its best expert's), weights
/// normalised if `norm_topk_prob` (transformers ignores the flag; DeepSeek's code and every
/// published config agree on false), else scaled; MLA with the rotary pairs adjacent.
enum DeepSeekV2: ArchitectureDefinition {
    static func configure(_ config: inout MoEModelConfig, _ fields: ConfigFields) throws {
        try DeepSeek.configure(&config, fields)
        config.routing.scoring = .softmax
        config.routing.normalizeTopK = try fields.bool("norm_topk_prob", default: false)
        if let scoring = fields.value("scoring_func") {
            guard scoring as? String == "softmax" else { throw fields.fail("scoring_func", "V2 routes by softmax") }
        }
        let method = fields.value("topk_method") == nil ? "greedy" : try fields.string("topk_method")
        switch method {
        case "greedy": break
        case "group_limited_greedy":
            try DeepSeek.groups(&config, fields, defaultGroups: 1, defaultKept: 1)
            config.routing.groupScore = .max
        default:
            throw fields.fail("topk_method", "'\(method)' (V2 routes by greedy or group_limited_greedy)")
        }
    }

    static var sharedExpert: (module: String, gate: String?)? { ("shared_experts", nil) }
}
