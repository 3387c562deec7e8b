import ArgumentParser
import Foundation

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

extension PMQ {
    /// Parses and runs a command. A refusal (a bad option, a bad file) is one line on stderr,
    /// `Error: …`, with a non-zero exit; `--help` and `--version` print as usual.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            if exitCode(for: error) == .success { exit(withError: error) }
            let message = self.message(for: error).split(whereSeparator: \.isNewline).joined(separator: " ")
            FileHandle.standardError.write(Data("Error: \(message)\n".utf8))
            Foundation.exit(exitCode(for: error).rawValue)
        }
    }
}
