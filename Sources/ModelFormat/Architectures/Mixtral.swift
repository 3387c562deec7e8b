/// Mixtral (transformers' `modeling_mixtral.py`): every layer is MoE; the router's softmax
/// probabilities of the top-k experts are always renormalised to sum to 1; no QK norm, no
/// attention bias, no shared expert.
///
/// config.json: `num_local_experts`, `intermediate_size` (the expert width).
/// Tensors: `model.layers.N.block_sparse_moe.gate` (router) and
/// `….block_sparse_moe.experts.E.{w1 (gate), w3 (up), w2 (down)}`.
enum Mixtral: ArchitectureDefinition {
    static func configure(_ config: inout MoEModelConfig, _ fields: ConfigFields) throws {
        config.expertCount = try fields.positive("num_local_experts")
        config.expertIntermediateSize = try fields.positive("intermediate_size")
        config.denseIntermediateSize = config.expertIntermediateSize
    }

    static var moeBlock: String { "block_sparse_moe" }
    static var expertLinears: (gate: String, up: String, down: String) { ("w1", "w3", "w2") }
}
