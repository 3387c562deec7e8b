/// What a checkpoint tensor is, independent of how an architecture names it.
public enum TensorRole: Hashable, Sendable {
    case embeddings
    case finalNorm
    case lmHead
    case attentionNorm(layer: Int)
    case mlpNorm(layer: Int)
    case query(layer: Int), key(layer: Int), value(layer: Int), output(layer: Int)
    case queryBias(layer: Int), keyBias(layer: Int), valueBias(layer: Int)
    case queryNorm(layer: Int), keyNorm(layer: Int)
    /// Multi-head latent attention (DeepSeek): the query bottleneck `q_a_proj`, its norm and
    /// `q_b_proj`; the latent-and-rotary-key projection `kv_a_proj_with_mqa`, the latent's norm
    /// and `kv_b_proj` (latent → per-head key and value).
    case queryA(layer: Int), queryANorm(layer: Int), queryB(layer: Int)
    case keyValueA(layer: Int), keyValueANorm(layer: Int), keyValueB(layer: Int)
    /// The router: `[experts, hidden]`.
    case router(layer: Int)
    /// DeepSeek-V3's `e_score_correction_bias` `[experts]`: added to the scores for choosing.
    case routerBias(layer: Int)
    case expertGate(layer: Int, expert: Int), expertUp(layer: Int, expert: Int), expertDown(layer: Int, expert: Int)
    case sharedExpertGate(layer: Int), sharedExpertUp(layer: Int), sharedExpertDown(layer: Int)
    /// Qwen2-MoE's sigmoid gate on the shared expert: `[1, hidden]`.
    case sharedExpertScale(layer: Int)
    /// A dense MLP in a non-MoE layer.
    case denseGate(layer: Int), denseUp(layer: Int), denseDown(layer: Int)
}

extension TensorRole {
    /// The decoder layer a tensor belongs to (nil for embeddings, final norm, head).
    public var layer: Int? {
        switch self {
        case .embeddings, .finalNorm, .lmHead: return nil
        case let .attentionNorm(l), let .mlpNorm(l), let .query(l), let .key(l), let .value(l), let .output(l),
            let .queryBias(l), let .keyBias(l), let .valueBias(l), let .queryNorm(l), let .keyNorm(l), let .router(l),
            let .queryA(l), let .queryANorm(l), let .queryB(l), let .keyValueA(l), let .keyValueANorm(l),
            let .keyValueB(l), let .routerBias(l),
            let .sharedExpertGate(l), let .sharedExpertUp(l), let .sharedExpertDown(l), let .sharedExpertScale(l),
            let .denseGate(l), let .denseUp(l), let .denseDown(l):
            return l
        case let .expertGate(l, _), let .expertUp(l, _), let .expertDown(l, _): return l
        }
    }

    /// A layer's attention matrices: q, k, v, o, or MLA's projections.
    public static func attentionMatrices(_ config: MoEModelConfig, layer l: Int) -> [TensorRole] {
        guard let latent = config.latentAttention else {
            return [.query(layer: l), .key(layer: l), .value(layer: l), .output(layer: l)]
        }
        let queries: [TensorRole] =
            latent.queryRank == nil ? [.query(layer: l)] : [.queryA(layer: l), .queryB(layer: l)]
        return queries + [.keyValueA(layer: l), .keyValueB(layer: l), .output(layer: l)]
    }

    /// An expert's three linears: gate, up, down.
    public static func expertLinears(layer: Int, expert: Int) -> [TensorRole] {
        [
            .expertGate(layer: layer, expert: expert), .expertUp(layer: layer, expert: expert),
            .expertDown(layer: layer, expert: expert),
        ]
    }
}

/// Tensor names on disk (as `save_pretrained` writes them): the common names here, what differs
/// per architecture from its definition (`Architectures/`).
public struct ArchitectureMap: Sendable {
    public let architecture: MoEArchitecture

    public init(_ architecture: MoEArchitecture) { self.architecture = architecture }

    /// The module a weight belongs to: its tensor name without `.weight`
    /// (`model.layers.0.block_sparse_moe.experts.3.w1`), what a packed linear's tensors are named after.
    public func moduleName(_ role: TensorRole) -> String {
        let name = name(role)
        return name.hasSuffix(".weight") ? String(name.dropLast(".weight".count)) : name
    }

    public func name(_ role: TensorRole) -> String {
        let definition = architecture.definition
        let moe = definition.moeBlock, linears = definition.expertLinears
        func layer(_ index: Int) -> String { "model.layers.\(index)" }
        func expert(_ l: Int, _ e: Int, _ linear: String) -> String {
            "\(layer(l)).\(moe).experts.\(e).\(linear).weight"
        }
        func shared(_ l: Int, _ linear: String) -> String {
            "\(layer(l)).mlp.\(definition.sharedExpert?.module ?? "shared_expert").\(linear).weight"
        }
        func attention(_ l: Int, _ module: String) -> String { "\(layer(l)).self_attn.\(module).weight" }
        switch role {
        case .embeddings: return "model.embed_tokens.weight"
        case .finalNorm: return "model.norm.weight"
        case .lmHead: return "lm_head.weight"
        case let .attentionNorm(l): return "\(layer(l)).input_layernorm.weight"
        case let .mlpNorm(l): return "\(layer(l)).post_attention_layernorm.weight"
        case let .query(l): return "\(layer(l)).self_attn.q_proj.weight"
        case let .key(l): return "\(layer(l)).self_attn.k_proj.weight"
        case let .value(l): return "\(layer(l)).self_attn.v_proj.weight"
        case let .output(l): return "\(layer(l)).self_attn.o_proj.weight"
        case let .queryBias(l): return "\(layer(l)).self_attn.q_proj.bias"
        case let .keyBias(l): return "\(layer(l)).self_attn.k_proj.bias"
        case let .valueBias(l): return "\(layer(l)).self_attn.v_proj.bias"
        case let .queryNorm(l): return "\(layer(l)).self_attn.q_norm.weight"
        case let .keyNorm(l): return "\(layer(l)).self_attn.k_norm.weight"
        case let .queryA(l): return attention(l, "q_a_proj")
        case let .queryANorm(l): return attention(l, "q_a_layernorm")
        case let .queryB(l): return attention(l, "q_b_proj")
        case let .keyValueA(l): return attention(l, "kv_a_proj_with_mqa")
        case let .keyValueANorm(l): return attention(l, "kv_a_layernorm")
        case let .keyValueB(l): return attention(l, "kv_b_proj")
        case let .router(l): return "\(layer(l)).\(moe).gate.weight"
        case let .routerBias(l): return "\(layer(l)).\(moe).gate.e_score_correction_bias"
        case let .expertGate(l, e): return expert(l, e, linears.gate)
        case let .expertUp(l, e): return expert(l, e, linears.up)
        case let .expertDown(l, e): return expert(l, e, linears.down)
        case let .sharedExpertGate(l): return shared(l, "gate_proj")
        case let .sharedExpertUp(l): return shared(l, "up_proj")
        case let .sharedExpertDown(l): return shared(l, "down_proj")
        case let .sharedExpertScale(l):
            return "\(layer(l)).mlp.\((definition.sharedExpert?.gate ?? nil) ?? "shared_expert_gate").weight"
        case let .denseGate(l): return "\(layer(l)).mlp.gate_proj.weight"
        case let .denseUp(l): return "\(layer(l)).mlp.up_proj.weight"
        case let .denseDown(l): return "\(layer(l)).mlp.down_proj.weight"
        }
    }

    /// Every tensor the model needs, with its expected shape.
    public func expectedTensors(_ config: MoEModelConfig) -> [(role: TensorRole, shape: [Int])] {
        let hidden = config.hiddenSize
        let qWidth = config.attentionHeads * config.headDim
        let kvWidth = config.keyValueHeads * config.headDim
        var result: [(TensorRole, [Int])] = [(.embeddings, [config.vocabSize, hidden]), (.finalNorm, [hidden])]
        if !config.tieWordEmbeddings { result.append((.lmHead, [config.vocabSize, hidden])) }
        for l in 0..<config.layerCount {
            result += [(.attentionNorm(layer: l), [hidden]), (.mlpNorm(layer: l), [hidden])]
            if let latent = config.latentAttention {
                result += latentAttentionTensors(config, latent, layer: l)
            } else {
                result += [
                    (.query(layer: l), [qWidth, hidden]), (.key(layer: l), [kvWidth, hidden]),
                    (.value(layer: l), [kvWidth, hidden]), (.output(layer: l), [hidden, qWidth]),
                ]
            }
            if config.attentionBias {
                result += [
                    (.queryBias(layer: l), [qWidth]), (.keyBias(layer: l), [kvWidth]),
                    (.valueBias(layer: l), [kvWidth]),
                ]
            }
            switch config.qkNorm {
            case .none: break
            case .perHead: result += [(.queryNorm(layer: l), [config.headDim]), (.keyNorm(layer: l), [config.headDim])]
            case .fullProjection: result += [(.queryNorm(layer: l), [qWidth]), (.keyNorm(layer: l), [kvWidth])]
            }
            if config.moeLayers[l] {
                let width = config.expertIntermediateSize
                result.append((.router(layer: l), [config.expertCount, hidden]))
                if config.routing.correctionBias { result.append((.routerBias(layer: l), [config.expertCount])) }
                for e in 0..<config.expertCount {
                    result += [
                        (.expertGate(layer: l, expert: e), [width, hidden]),
                        (.expertUp(layer: l, expert: e), [width, hidden]),
                        (.expertDown(layer: l, expert: e), [hidden, width]),
                    ]
                }
                if config.sharedExpertIntermediateSize > 0 {
                    let shared = config.sharedExpertIntermediateSize
                    result += [
                        (.sharedExpertGate(layer: l), [shared, hidden]), (.sharedExpertUp(layer: l), [shared, hidden]),
                        (.sharedExpertDown(layer: l), [hidden, shared]),
                    ]
                    if config.sharedExpertGated { result.append((.sharedExpertScale(layer: l), [1, hidden])) }
                }
            } else {
                let width = config.denseIntermediateSize
                result += [
                    (.denseGate(layer: l), [width, hidden]), (.denseUp(layer: l), [width, hidden]),
                    (.denseDown(layer: l), [hidden, width]),
                ]
            }
        }
        return result
    }

    /// MLA's tensors in one layer: queries direct or through the `queryRank` bottleneck, the
    /// latent-and-rotary-key projection, the latent's norm, its expansion to every head's key
    /// (nope part) and value, and the output projection.
    func latentAttentionTensors(
        _ config: MoEModelConfig, _ latent: LatentAttention, layer l: Int
    ) -> [(role: TensorRole, shape: [Int])] {
        let hidden = config.hiddenSize, heads = config.attentionHeads
        var result: [(role: TensorRole, shape: [Int])] = []
        if let rank = latent.queryRank {
            result += [
                (.queryA(layer: l), [rank, hidden]), (.queryANorm(layer: l), [rank]),
                (.queryB(layer: l), [heads * config.keyHeadDim, rank]),
            ]
        } else {
            result.append((.query(layer: l), [heads * config.keyHeadDim, hidden]))
        }
        result += [
            (.keyValueA(layer: l), [latent.latentRank + latent.ropeDim, hidden]),
            (.keyValueANorm(layer: l), [latent.latentRank]),
            (.keyValueB(layer: l), [heads * (latent.nopeDim + latent.valueDim), latent.latentRank]),
            (.output(layer: l), [hidden, heads * latent.valueDim]),
        ]
        return result
    }
}
