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
    /// The router: `[experts, hidden]`.
    case router(layer: Int)
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
            let .sharedExpertGate(l), let .sharedExpertUp(l), let .sharedExpertDown(l), let .sharedExpertScale(l),
            let .denseGate(l), let .denseUp(l), let .denseDown(l):
            return l
        case let .expertGate(l, _), let .expertUp(l, _), let .expertDown(l, _): return l
        }
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
        case let .router(l): return "\(layer(l)).\(moe).gate.weight"
        case let .expertGate(l, e): return expert(l, e, linears.gate)
        case let .expertUp(l, e): return expert(l, e, linears.up)
        case let .expertDown(l, e): return expert(l, e, linears.down)
        case let .sharedExpertGate(l): return shared(l, "gate_proj")
        case let .sharedExpertUp(l): return shared(l, "up_proj")
        case let .sharedExpertDown(l): return shared(l, "down_proj")
        case let .sharedExpertScale(l):
            return "\(layer(l)).mlp.\(definition.sharedExpert?.gate ?? "shared_expert_gate").weight"
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
            result += [
                (.attentionNorm(layer: l), [hidden]), (.mlpNorm(layer: l), [hidden]),
                (.query(layer: l), [qWidth, hidden]), (.key(layer: l), [kvWidth, hidden]),
                (.value(layer: l), [kvWidth, hidden]), (.output(layer: l), [hidden, qWidth]),
            ]
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
                        (.sharedExpertDown(layer: l), [hidden, shared]), (.sharedExpertScale(layer: l), [1, hidden]),
                    ]
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
}
