import ArgumentParser
import Foundation
import PMQSolver

extension PMQ {
    struct Sweep: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Solve a range of budgets and write the size/loss Pareto front (JSON, CSV, SVG).",
            discussion: """
                --from and --to are both average bits (1.5, 3.0) or both sizes (10GB, 20GB). Each solve \
                starts from the previous solution. Writes DIR/front.json, DIR/front.csv and DIR/front.svg.
                """
        )

        @OptionGroup var allocation: AllocationOptions

        @Option(help: ArgumentHelp("Lowest budget: bits (1.5) or a size (10GB).", valueName: "budget"))
        var from: String

        @Option(help: ArgumentHelp("Highest budget, same kind as --from.", valueName: "budget"))
        var to: String

        @Option(help: "Number of budgets, evenly spaced, ends included.")
        var points: Int = 31

        @Option(help: ArgumentHelp("Output directory.", valueName: "dir"))
        var out: String

        @Flag(
            name: .customLong("save-allocations"),
            help: "Also write each point's allocation report to DIR/allocations/.")
        var saveAllocations = false

        @Flag(help: "No progress on stderr.")
        var quiet = false

        func validate() throws {
            guard (1...100_000).contains(points) else { throw ValidationError("--points must be 1 to 100,000") }
        }

        func run() throws {
            func parse(_ text: String) throws -> Budget {
                text.last?.isLetter == true ? try Budget.parseSize(text) : try Budget.parseBits(text)
            }
            let budgets = try ParetoSweep.budgets(from: try parse(from), to: try parse(to), count: points)
            let profile = try allocation.loadProfile()
            let model = allocation.costModel
            let progress = Progress("sweep", quiet: quiet)
            let result = try ParetoSweep.run(
                profile: profile, profilePath: allocation.profile, model: model,
                budgets: budgets, options: allocation.solveOptions
            ) { done, total, point in
                progress.update(
                    done: done, total: total,
                    detail: "budget \(String(format: "%.4g", point.budget)) \(point.budgetKind): \(point.status)")
            }
            progress.finish()
            try FrontWriters.write(
                result, profile: profile, profilePath: allocation.profile, model: model,
                directory: out, saveAllocations: saveAllocations)
            print(
                "\(profile.model.name): \(points) budgets, scope \(model.scope.rawValue), "
                    + "\(String(format: "%.2f", result.seconds)) s"
            )
            print(
                "budget      status      avg bits  eff bits  size          loss          gap       removed  dominated")
            for point in result.points {
                let cells = [
                    String(format: "%-11.5g", point.budget),
                    point.status.padding(toLength: 11, withPad: " ", startingAt: 0),
                    point.averageBits.map { String(format: "%-9.4f", $0) } ?? "-        ",
                    point.effectiveBits.map { String(format: "%-9.4f", $0) } ?? "-        ",
                    (point.bytes.map(formatGB) ?? "-").padding(toLength: 13, withPad: " ", startingAt: 0),
                    point.objective.map { String(format: "%-13.6g", $0) } ?? "-            ",
                    point.gap.map { String(format: "%-9.1e", $0) } ?? "-        ",
                    (point.removed.map(String.init) ?? "-").padding(toLength: 8, withPad: " ", startingAt: 0),
                    point.dominated ? "yes" : "",
                ]
                print(cells.joined(separator: " "))
            }
            print("front: \(out)/front.json, \(out)/front.csv, \(out)/front.svg")
        }
    }
}
