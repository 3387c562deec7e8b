import ArgumentParser

/// Calibration tokens and GPTQ settings shared by `profile` and `quantize`.
struct CalibrationOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Calibration token file (little-endian u32).", valueName: "file"))
    var calib: String

    @Option(help: "Calibration windows.")
    var samples: Int = 128

    @Option(name: .customLong("seq-len"), help: "Tokens per window.")
    var seqLen: Int = 512

    @Option(help: "GPTQ damping, as a fraction of the Hessian's mean diagonal.")
    var dampening: Double = 0.01

    @Flag(name: .customLong("act-order"), help: "GPTQ columns in order of decreasing Hessian diagonal (desc_act).")
    var actOrder = false

    @Flag(help: "Search a clipped range per group for the least squared error.")
    var clip = false

    func validate() throws {
        guard samples >= 1, seqLen >= 2 else { throw ValidationError("--samples must be ≥ 1 and --seq-len ≥ 2") }
        guard (1e-9...100).contains(dampening) else {
            throw ValidationError("--dampening must be from 1e-9 to 100 (a fraction of the Hessian's mean diagonal)")
        }
    }
}
