import ArgumentParser
import Benchmarks
import Foundation

extension PMQ {
    struct ObjectiveBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "objective",
            abstract: "Does the allocation objective predict the loss? Spearman ρ of objective vs measured ΔNLL.",
            discussion: """
                Profiles the model (keeping every expert's GPTQ weights at every width), then at each budget \
                builds size-matched allocations: each objective's solver optimum, one budget per layer, one width \
                per layer, the frequency baseline, PMQ's widths re-dealt by frequency inside each layer or \
                shuffled across the model, and seeded random ones. Each is assembled from the quantized experts \
                and evaluated on held-out tokens; ΔNLL is against the float model on the same tokens.
                """
        )

        @Option(help: ArgumentHelp("Model directory.", valueName: "dir"))
        var model: String = "examples/model"

        @Option(help: ArgumentHelp("Calibration tokens (default: the model's calib.u32).", valueName: "file"))
        var calib: String?

        @Option(help: ArgumentHelp("Held-out tokens (default: the model's eval.u32).", valueName: "file"))
        var tokens: String?

        @Option(
            name: .customLong("max-tokens"), help: "Held-out tokens evaluated per allocation (the first ones).")
        var maxTokens: Int = 32768

        @Option(
            name: .customLong("budget"),
            help: ArgumentHelp(
                "A budget and its widths, repeatable (default: 2.0:1,2,3  2.5:1,2,3  3.0:2,3,4).",
                valueName: "bits:w,w,…"))
        var budgets: [String] = []

        @Option(name: .customLong("random-draws"), help: "Seeded random allocations per budget.")
        var randomDraws: Int = 3

        @Option(name: .customLong("shuffle-draws"), help: "Shuffles of PMQ's widths per budget.")
        var shuffleDraws: Int = 2

        @Option(help: ArgumentHelp("Write the figures as JSON.", valueName: "file"))
        var json: String?

        @Option(help: ArgumentHelp("Also write the profile it measured.", valueName: "file"))
        var profile: String?

        func validate() throws {
            guard maxTokens >= 2 else { throw ValidationError("--max-tokens must be at least 2") }
            guard randomDraws >= 0, shuffleDraws >= 0 else { throw ValidationError("draws must be ≥ 0") }
            _ = try parsedBudgets()
        }

        func parsedBudgets() throws -> [ObjectiveBenchmark.Budget] {
            try budgets.map { text in
                let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
                guard parts.count == 2, Double(parts[0]) != nil else {
                    throw ValidationError("--budget '\(text)': expected bits:widths, e.g. 2.5:1,2,3")
                }
                let widths = try parseWidths(parts[1])
                for width in widths where ![1, 2, 3, 4, 8].contains(width) {
                    throw ValidationError("--budget '\(text)': width \(width) is not one of 1, 2, 3, 4, 8")
                }
                guard let bits = Double(parts[0]), bits.isFinite, bits >= Double(widths.min()!) else {
                    throw ValidationError(
                        "--budget '\(text)': \(parts[0]) bits is below the smallest width \(widths.min()!)")
                }
                return .init(bits: parts[0], widths: widths)
            }
        }

        func run() throws {
            var benchmark = ObjectiveBenchmark()
            let directory = model.hasSuffix("/") ? String(model.dropLast()) : model
            benchmark.modelPath = directory
            benchmark.calibrationPath = calib ?? directory + "/calib.u32"
            benchmark.evaluationPath = tokens ?? directory + "/eval.u32"
            benchmark.evaluationTokens = maxTokens
            let parsed = try parsedBudgets()
            if !parsed.isEmpty { benchmark.budgets = parsed }
            benchmark.randomDraws = randomDraws
            benchmark.shuffleDraws = shuffleDraws
            benchmark.json = json
            benchmark.profileOut = profile
            try checkedOptions { _ = try benchmark.run(emit: emit) }
        }
    }
}
