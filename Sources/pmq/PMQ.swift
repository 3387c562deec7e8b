import ArgumentParser

@main
struct PMQ: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pmq",
        abstract: "Mixed-precision compression of Mixture-of-Experts models (MC-MoE / MC# recipe).",
        discussion: """
            profile → allocate → pack → run: measure every expert (profile), allocate a bit width per \
            expert with an integer program solved by COIN-OR CBC (solve, sweep), GPTQ-quantize and pack \
            (quantize), learn per-token expert pruning (otp train), and run the packed model (eval, generate).
            """,
        version: "0.1.0",
        subcommands: [
            Profile.self, Solve.self, Sweep.self, Quantize.self, Assemble.self, OTP.self, Eval.self, Table.self,
            Generate.self,
            Tokenize.self, SynthProfile.self, Bench.self, Fuzz.self,
        ]
    )
}
