import Foundation
import ModelFormat
import Kernels

/// One tensor of a stored OTP gate: its name after `model.layers.N.<moe block>.`, shape, values.
public typealias OTPTensor = (suffix: String, shape: [Int], values: [Float])

/// MC#'s Online Top-any Pruning gate for one MoE layer (MC# does not publish its gate; this is
/// pmq's design). After the router picks its top-k, the top-1 expert always runs and each later
/// slot j (rank 1 … k−1) runs when
///
///     z_j = w_jᵀ·h + a_j · log(p_j / p_1) + b_j + c_{e_j} > 0
///
/// with `h` the token's MoE input, `p` the router's softmax probabilities and `e_j` the slot's expert.
/// - **Top-1 always runs**: dropping it is rarely right and would let a token run nothing.
/// - **`a_j · log(p_j/p_1)`**: the router's own confidence, the signal ODP thresholds on. With
///   `w = 0`, `c = 0`, `a_j > 0` the gate *is* ODP (`p_j/p_1 > exp(−b_j/a_j)`); training starts
///   there, so it can only learn to do better than the baseline on its training set.
/// - **`w_jᵀ·h`, one vector per slot rank, not per expert**: the harm of dropping an expert
///   depends on what the token is, which a linear read of `h` can see (the router's logits are
///   themselves linear in `h`); one vector per rank keeps parameters at (k−1)·H — all tokens
///   train every vector, where per-expert vectors would see 1/E of the data each (E× the
///   parameters, E× the overfitting) for a mostly redundant gain.
/// - **`c_e`, a bias per expert**: what per-expert vectors would mostly add — some experts' outputs
///   matter more than others' — for E numbers.
/// - **Deterministic** at inference: `z > 0`, no noise, no threshold beyond the bias.
///
/// Stored in the packed model next to the router as four float tensors:
/// `otp_gate.weight` `[k−1, H]` (w), `otp_gate.ratio_scale` `[k−1]` (a),
/// `otp_gate.bias` `[k−1]` (b), `otp_gate.expert_bias` `[E]` (c).
public struct OTPGate: Sendable, Equatable {
    public static let weightSuffix = "otp_gate.weight"
    public static let ratioScaleSuffix = "otp_gate.ratio_scale"
    public static let biasSuffix = "otp_gate.bias"
    public static let expertBiasSuffix = "otp_gate.expert_bias"
    /// `log(p_j/p_1)` is clamped below at this value (a probability that underflowed to 0).
    public static let minimumLogRatio: Float = -40

    /// Hidden size `H`.
    public let hiddenSize: Int
    /// Top-k `k`; the gate decides slots 1..<k.
    public let slots: Int
    /// Experts in the layer `E`.
    public let expertCount: Int
    /// `w`, `[k−1, H]`.
    public var weight: [Float]
    /// `a`, `[k−1]`.
    public var ratioScale: [Float]
    /// `b`, `[k−1]`.
    public var bias: [Float]
    /// `c`, `[E]`.
    public var expertBias: [Float]

    public init(
        hiddenSize: Int, slots: Int, expertCount: Int, weight: [Float], ratioScale: [Float], bias: [Float],
        expertBias: [Float]
    ) {
        precondition(slots >= 2 && hiddenSize >= 1 && expertCount >= slots)
        precondition(
            weight.count == (slots - 1) * hiddenSize && ratioScale.count == slots - 1 && bias.count == slots - 1
                && expertBias.count == expertCount)
        self.hiddenSize = hiddenSize
        self.slots = slots
        self.expertCount = expertCount
        self.weight = weight
        self.ratioScale = ratioScale
        self.bias = bias
        self.expertBias = expertBias
    }

    /// MC-MoE's ODP rule as a gate: slot j runs when `p_j/p_1 > β` (`w = 0`, `a = 1`, `b = −log β`,
    /// `c = 0`; β ≤ 0 keeps every slot, as ODP does).
    public init(odpBeta beta: Float, hiddenSize: Int, slots: Int, expertCount: Int) {
        let bias = beta > 0 ? -log(beta) : 1 - Self.minimumLogRatio
        self.init(
            hiddenSize: hiddenSize, slots: slots, expertCount: expertCount,
            weight: [Float](repeating: 0, count: (slots - 1) * hiddenSize),
            ratioScale: [Float](repeating: 1, count: slots - 1), bias: [Float](repeating: bias, count: slots - 1),
            expertBias: [Float](repeating: 0, count: expertCount))
    }

    /// `log(p_j / p_1)`, clamped (`minimumLogRatio`).
    @inline(__always)
    public static func logRatio(_ pj: Float, _ p1: Float) -> Float {
        guard pj > 0, p1 > 0 else { return minimumLogRatio }
        return max(log(pj / p1), minimumLogRatio)
    }

    /// `z_j` for rank `slot` (1..<k) holding `expert`, for MoE input `hidden` (`[H]`).
    @inline(__always)
    public func logit(slot: Int, hidden: UnsafePointer<Float>, logRatio: Float, expert: Int) -> Float {
        let r = slot - 1
        let wh = weight.withUnsafeBufferPointer { Kernels.dot($0.baseAddress! + r * hiddenSize, hidden, hiddenSize) }
        return wh + ratioScale[r] * logRatio + bias[r] + expertBias[expert]
    }

    /// Which of the top-k slots run: the top-1, and slot j when `z_j > 0`.
    public func keep(hidden: UnsafePointer<Float>, probabilities: [Float], experts: [Int]) -> [Bool] {
        precondition(
            experts.count == slots, "the OTP gate was trained for top-\(slots), the router chose \(experts.count)")
        let p1 = probabilities[experts[0]]
        var mask = [Bool](repeating: true, count: slots)
        for j in 1..<slots {
            mask[j] =
                logit(
                    slot: j, hidden: hidden, logRatio: Self.logRatio(probabilities[experts[j]], p1), expert: experts[j])
                > 0
        }
        return mask
    }

    /// The gate as stored tensors (suffixes after the MoE block's prefix).
    public var tensors: [OTPTensor] {
        [
            (Self.weightSuffix, [slots - 1, hiddenSize], weight),
            (Self.ratioScaleSuffix, [slots - 1], ratioScale),
            (Self.biasSuffix, [slots - 1], bias),
            (Self.expertBiasSuffix, [expertCount], expertBias),
        ]
    }

    /// Reads a gate back from its four tensors; `file` names the source in errors. Throws when one
    /// is missing, repeated or unknown, when shapes disagree with each other or with the value
    /// counts, or when a value is not finite.
    public init(tensors: [OTPTensor], file: String) throws {
        var found: [String: OTPTensor] = [:]
        let names = [Self.weightSuffix, Self.ratioScaleSuffix, Self.biasSuffix, Self.expertBiasSuffix]
        for tensor in tensors {
            guard names.contains(tensor.suffix) else {
                throw ModelFormatError(
                    file: file,
                    "unexpected OTP gate tensor '\(tensor.suffix)' (expected \(names.joined(separator: ", ")))")
            }
            guard found[tensor.suffix] == nil else {
                throw ModelFormatError(file: file, "OTP gate tensor '\(tensor.suffix)' appears twice")
            }
            guard tensor.shape.allSatisfy({ $0 >= 0 }), tensor.shape.reduce(1, *) == tensor.values.count else {
                throw ModelFormatError(
                    file: file,
                    "OTP gate tensor '\(tensor.suffix)' has shape \(tensor.shape) but \(tensor.values.count) values")
            }
            guard tensor.values.allSatisfy({ $0.isFinite }) else {
                throw ModelFormatError(
                    file: file, "OTP gate tensor '\(tensor.suffix)' holds a value that is not finite")
            }
            found[tensor.suffix] = tensor
        }
        for name in names where found[name] == nil {
            throw ModelFormatError(file: file, "OTP gate tensor '\(name)' is missing")
        }
        let w = found[Self.weightSuffix]!, a = found[Self.ratioScaleSuffix]!, b = found[Self.biasSuffix]!,
            c = found[Self.expertBiasSuffix]!
        guard w.shape.count == 2, w.shape[0] >= 1, w.shape[1] >= 1 else {
            throw ModelFormatError(
                file: file,
                "OTP gate '\(Self.weightSuffix)' must be [k−1, hidden] with both at least 1, not \(w.shape)")
        }
        let ranks = w.shape[0]
        for t in [a, b] where t.shape != [ranks] {
            throw ModelFormatError(
                file: file,
                "OTP gate '\(t.suffix)' must be [\(ranks)] to match '\(Self.weightSuffix)' \(w.shape), not \(t.shape)")
        }
        guard c.shape.count == 1, c.shape[0] >= ranks + 1 else {
            throw ModelFormatError(
                file: file,
                "OTP gate '\(Self.expertBiasSuffix)' must be [experts] with at least top-k = \(ranks + 1) experts, "
                    + "not \(c.shape)"
            )
        }
        self.init(
            hiddenSize: w.shape[1], slots: ranks + 1, expertCount: c.shape[0],
            weight: w.values, ratioScale: a.values, bias: b.values, expertBias: c.values)
    }
}

/// Online Top-any Pruning: one learned `OTPGate` per MoE layer (layers without one run every slot).
public final class OTPPruner: ExpertPruner, Sendable {
    public let gates: [Int: OTPGate]

    public init(gates: [Int: OTPGate]) { self.gates = gates }

    /// Gates from each layer's stored tensors (`tensors(layer:)`); `file` names the source in errors.
    public convenience init(tensors: [Int: [OTPTensor]], file: String) throws {
        var gates: [Int: OTPGate] = [:]
        for (layer, list) in tensors {
            do { gates[layer] = try OTPGate(tensors: list, file: file) } catch let error as ModelFormatError {
                throw ModelFormatError(file: error.file, "layer \(layer): \(error.problem)")
            }
        }
        self.init(gates: gates)
    }

    /// Layer `layer`'s gate as tensors to store (empty when the layer has none).
    public func tensors(layer: Int) -> [OTPTensor] { gates[layer]?.tensors ?? [] }

    /// Checks the gates against the model they will run in, before the first token (`keep` traps on
    /// a mismatch): each gated layer must be one of `moeLayers`, with the model's hidden size,
    /// expert count and top-k.
    public func validate(hiddenSize: Int, expertCount: Int, topK: Int, moeLayers: Set<Int>, file: String) throws {
        for (layer, gate) in gates.sorted(by: { $0.key < $1.key }) {
            guard moeLayers.contains(layer) else {
                throw ModelFormatError(
                    file: file, "OTP gate for layer \(layer), which is not an MoE layer of the model")
            }
            guard gate.hiddenSize == hiddenSize, gate.expertCount == expertCount, gate.slots == topK else {
                throw ModelFormatError(
                    file: file,
                    "layer \(layer): OTP gate is for hidden \(gate.hiddenSize), \(gate.expertCount) experts, "
                        + "top-\(gate.slots); the model has hidden \(hiddenSize), \(expertCount) experts, top-\(topK)"
                )
            }
        }
    }

    public func keep(
        layer: Int, hidden: UnsafeBufferPointer<Float>, probabilities: [Float], experts: [Int], weights: [Float]
    ) -> [Bool] {
        guard let gate = gates[layer] else { return Array(repeating: true, count: experts.count) }
        precondition(
            hidden.count == gate.hiddenSize, "OTP gate of layer \(layer) expects hidden size \(gate.hiddenSize)")
        return gate.keep(hidden: hidden.baseAddress!, probabilities: probabilities, experts: experts)
    }
}
