import ArgumentParser
import Foundation
import MoERuntime

/// The runtime's kernel path, shared by `generate` and `bench runtime` (docs/KERNELS.md, "Int8
/// activations"): int8 activations and 8-bit attention for packed models unless told otherwise.
struct RuntimePathOptions: ParsableArguments {
    @Flag(
        name: .customLong("exact-activations"),
        help: "Multiply packed linears with float activations (bit-exact kernels) instead of int8 ones.")
    var exactActivations = false

    @Option(
        name: .customLong("attention-bits"),
        help: ArgumentHelp(
            "Hold attention projections and an untied head as packed linears of this width (8, 4 or 2; round to "
                + "nearest, groups of 128), or 16: as stored. Default: 8 for packed models, as stored otherwise.",
            valueName: "bits"))
    var attentionBits: Int?

    func validate() throws {
        if let attentionBits, ![2, 4, 8, 16].contains(attentionBits) {
            throw ValidationError("--attention-bits must be 16, 8, 4 or 2")
        }
    }

    /// The width attention is held at for `model`: the option's (16: as stored), else 8 for a packed
    /// model (its experts quantized; a measured ±0.02% perplexity), as stored otherwise; nil: as stored.
    func attentionWidth(for model: MoEModel) -> Int? {
        let bits = attentionBits ?? (model.quantization != nil ? 8 : 16)
        return bits < 16 ? bits : nil
    }
}
