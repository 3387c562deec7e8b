import ArgumentParser

@main
struct PMQ: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pmq",
        abstract: "Mixed-precision compression of Mixture-of-Experts models (MC-MoE / MC# recipe).",
        discussion: """
        profile → allocate → pack → run. Today: allocate bit widths per expert with an integer \
        program solved by COIN-OR CBC (solve, sweep), synthetic profiles, and solver benchmarks.
        """,
        version: "0.1.0",
        subcommands: [Profile.self, Solve.self, Sweep.self, Eval.self, Generate.self, Tokenize.self, SynthProfile.self, Bench.self]
    )
}
