import ArgumentParser
import ExpertProfiler
import Foundation
import ModelFormat
import PMQSolver

extension PMQ {
    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Benchmarks (figures, not tests).",
            subcommands: [SolverBench.self]
        )
    }

    struct SolverBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "solver",
            abstract: "Time solve and sweep on Mixtral-8x7B- and DeepSeek-V3-shaped synthetic profiles (medians)."
        )

        @Option(help: "Runs per single solve (the median is reported).")
        var repeats: Int = 5

        @Option(name: .customLong("sweep-repeats"), help: "Runs per sweep (the median is reported).")
        var sweepRepeats: Int = 3

        @Option(help: "Points per sweep.")
        var points: Int = 31

        @Option(help: "Shapes to run, comma separated.")
        var shapes: String = "mixtral-8x7b,deepseek-v3"

        @Option(name: .customLong("write-profiles"), help: ArgumentHelp("Also write the profiles used here (for tools/pulp_bench.py).", valueName: "dir"))
        var writeProfiles: String?

        @Option(help: ArgumentHelp("Write the figures as JSON.", valueName: "file"))
        var json: String?

        struct Figure: Encodable {
            var shape: String
            var experts: Int
            var widths: [Int]
            var task: String
            var medianSeconds: Double
            var runs: [Double]
            var status: String
            var maxGap: Double
        }

        func run() throws {
            var figures: [Figure] = []
            print("CBC \(Allocator.cbcVersion); medians of \(repeats) solves / \(sweepRepeats) sweeps")
            print("shape          experts  widths   task                                    median s   status     max gap")
            for name in shapes.split(separator: ",").map(String.init) {
                guard let shape = SyntheticProfile.shapes[name] else { throw ValidationError("unknown shape \(name)") }
                let document = SyntheticProfile(shape: shape, seed: 1).document()
                let path = (writeProfiles ?? FileManager.default.temporaryDirectory.path) + "/synthetic-\(name).json"
                if let writeProfiles { try FileManager.default.createDirectory(atPath: writeProfiles, withIntermediateDirectories: true) }
                try document.write(to: path)
                let profile = try ProfileReader.read(path: path).profile
                if writeProfiles == nil { try? FileManager.default.removeItem(atPath: path) }

                let top = Double(shape.widths.max()!)
                let sweepTo = min(top, 3.5)
                let cases: [(String, CostModel, () throws -> (String, Double))] = [
                    ("solve global 2.5 bits", CostModel(), {
                        let result = try Allocator.solve(try CostModel().makeProblem(profile, budget: try Budget.parseBits("2.5")))
                        return (result.status.rawValue, result.gap)
                    }),
                    ("solve layer 2.5 bits", CostModel(scope: .layer), {
                        let result = try Allocator.solve(try CostModel(scope: .layer).makeProblem(profile, budget: try Budget.parseBits("2.5")))
                        return (result.status.rawValue, result.gap)
                    }),
                    ("sweep global 1.5→\(String(format: "%g", sweepTo)) bits, \(points) points", CostModel(), {
                        let budgets = try ParetoSweep.budgets(from: try Budget.parseBits("1.5"), to: try Budget.parseBits(String(sweepTo)), count: points)
                        let result = try ParetoSweep.run(profile: profile, profilePath: path, model: CostModel(), budgets: budgets, options: .init())
                        let statuses = Set(result.points.map(\.status))
                        return (statuses.count == 1 ? statuses.first! : statuses.sorted().joined(separator: "/"),
                                result.points.compactMap(\.gap).max() ?? 0)
                    }),
                ]
                for (task, _, body) in cases {
                    let runs = task.hasPrefix("sweep") ? sweepRepeats : repeats
                    var times: [Double] = []
                    var status = ""
                    var maxGap = 0.0
                    for _ in 0..<max(runs, 1) {
                        let start = ContinuousClock.now
                        let (runStatus, gap) = try body()
                        let elapsed = ContinuousClock.now - start
                        times.append(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
                        status = runStatus
                        maxGap = max(maxGap, gap)
                    }
                    let median = times.sorted()[times.count / 2]
                    figures.append(Figure(shape: name, experts: profile.expertCount, widths: profile.widths, task: task,
                                          medianSeconds: median, runs: times, status: status, maxGap: maxGap))
                    print([name.padding(toLength: 14, withPad: " ", startingAt: 0),
                           String(profile.expertCount).padding(toLength: 8, withPad: " ", startingAt: 0),
                           profile.widths.map(String.init).joined(separator: ",").padding(toLength: 8, withPad: " ", startingAt: 0),
                           task.padding(toLength: 39, withPad: " ", startingAt: 0),
                           String(format: "%-10.3f", median), status.padding(toLength: 10, withPad: " ", startingAt: 0),
                           String(format: "%.1e", maxGap)].joined(separator: " "))
                }
            }
            if let json { try AtomicFile.writeJSON(figures, to: json) }
        }
    }
}
