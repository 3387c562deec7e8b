import ArgumentParser
import ModelFormat
import PMQSolver

extension CostModel.Scope: ExpressibleByArgument {}

enum ImportanceChoice: String, ExpressibleByArgument, CaseIterable {
    case output, measured, frequency, random
}

/// Flags shared by `solve` and `sweep`: how experts are scored and how CBC is run.
struct AllocationOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Profile JSON (format pmq-profile v1).", valueName: "file"))
    var profile: String

    @Option(
        help: ArgumentHelp("Candidate widths, a subset of the profile's (default: all of them).", valueName: "w,w,…"),
        transform: parseWidths)
    var widths: [Int]?

    @Option(help: "global: one budget for the whole model; layer: the budget applies to every layer (MC-MoE).")
    var scope: CostModel.Scope = .global

    @Option(help: "Exponent on frequency in the significance and on the error in the cost.")
    var alpha: Double = 1

    @Option(help: "Exponent on routing mass in the significance s = freq^α · mass^β.")
    var beta: Double = 1.5

    @Flag(
        name: .customLong("mc-diversity"),
        help: "In every layer keep at least one expert at the top width and one at the next (MC-MoE's rule).")
    var diversity = false

    @Option(
        help: ArgumentHelp(
            "output: PMQ (each expert's routing-weighted output error, priced by its layer's measured loss at "
                + "that width; profiles without outputError fall back to measured); measured: MC-MoE's "
                + "freq^α·mass^β·err^α; frequency or random: size-matched baselines that ignore the measured "
                + "errors (cost freq·params·4^-b, or a seeded random weight instead of freq).",
            valueName: "output|measured|frequency|random"))
    var importance: ImportanceChoice = .output

    @Flag(
        name: .customLong("no-layer-sensitivity"),
        help:
            "Ignore the profile's measured layer sensitivities (global scope compares layer-local errors as they are).")
    var noLayerSensitivity = false

    @Flag(
        name: .customLong("uniform-layers"),
        help: ArgumentHelp(
            "One width for all experts of each layer (servable by GPTQModel/vLLM-style loaders, which take one "
                + "format per MoE layer).")
    )
    var uniformLayers = false

    @Option(help: "Seed of --importance random.")
    var seed: UInt64 = 1

    @Option(name: .customLong("time-limit"), help: ArgumentHelp("CBC time limit per solve.", valueName: "seconds"))
    var timeLimit: Double?

    @Option(help: "Relative optimality gap at which CBC may stop.")
    var gap: Double = 1e-6

    @Option(help: "Threads for CBC's branch and bound.")
    var threads: Int = 1

    @Flag(
        name: .customLong("no-reduced-cost-fixing"),
        help: "Hand CBC the whole program instead of the core left by reduced-cost fixing (for comparison).")
    var noReducedCostFixing = false

    @Flag(help: "Show CBC's log (on stdout).")
    var verbose = false

    var costModel: CostModel {
        let choice: CostModel.Importance
        switch importance {
        case .output: choice = .output
        case .measured: choice = .measured
        case .frequency: choice = .frequency
        case .random: choice = .random(seed: seed)
        }
        return CostModel(
            alpha: alpha, beta: beta, scope: scope, diversity: diversity, widths: widths, importance: choice,
            layerSensitivity: !noLayerSensitivity, uniformLayers: uniformLayers)
    }

    var solveOptions: SolveOptions {
        SolveOptions(
            timeLimit: timeLimit, relativeGap: gap, verbose: verbose, threads: threads,
            reducedCostFixing: !noReducedCostFixing)
    }

    func validate() throws {
        if let timeLimit, !(timeLimit > 0 && timeLimit.isFinite) {
            throw ValidationError("--time-limit must be a positive number of seconds")
        }
        guard gap >= 0, gap.isFinite else { throw ValidationError("--gap must be a finite number ≥ 0") }
        guard alpha > 0, alpha <= 10 else { throw ValidationError("--alpha must be > 0 and at most 10") }
        guard beta >= 0, beta <= 10 else { throw ValidationError("--beta must be from 0 to 10") }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
    }

    /// Reads the profile and prints its warnings on stderr.
    func loadProfile() throws -> ModelFormat.Profile {
        let result = try ProfileReader.read(path: profile)
        for warning in result.warnings.prefix(10) { printError("warning: \(warning)") }
        if result.warnings.count > 10 {
            printError("warning: … and \(result.warnings.count - 10) more experts whose error grows with width")
        }
        return result.profile
    }
}

func parseWidths(_ text: String) throws -> [Int] {
    let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
    let widths = try parts.map { part -> Int in
        guard let width = Int(part), width >= 0 else { throw ValidationError("--widths: '\(part)' is not a bit width") }
        return width
    }
    guard !widths.isEmpty else { throw ValidationError("--widths must name at least one width") }
    return widths
}
