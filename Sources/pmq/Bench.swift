import ArgumentParser
import Benchmarks
import Foundation

extension PMQ {
    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Benchmarks (figures, not tests).",
            subcommands: [SolverBench.self, RuntimeBench.self, GPTQBench.self, PackedBench.self, ObjectiveBench.self]
        )
    }

    struct SolverBench: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "solver",
            abstract: "Time profile reading, solve, sweep and report writing on Mixtral-8x7B and DeepSeek-V3 shapes.",
            discussion: """
                Each task runs with pmq's full pipeline (exact capacity strengthening, greedy LP start, \
                reduced-cost fixing, CBC) and, as the baseline side by side, with CBC on the whole program \
                (strengthening and the greedy MIP start kept, fixing off).
                """
        )

        @Option(help: "Runs per single solve (the median is reported).")
        var repeats: Int = 5

        @Option(name: .customLong("sweep-repeats"), help: "Runs per sweep (the median is reported).")
        var sweepRepeats: Int = 3

        @Option(help: "Points per sweep.")
        var points: Int = 31

        @Option(help: "Shapes to run, comma separated.")
        var shapes: String = "mixtral-8x7b,deepseek-v3"

        @Option(name: .customLong("time-limit"), help: "CBC time limit per solve, for pmq and the baseline alike.")
        var timeLimit: Double = 10

        @Option(
            name: .customLong("write-profiles"),
            help: ArgumentHelp("Also write the profiles used here (for tools/pulp_bench.py).", valueName: "dir"))
        var writeProfiles: String?

        @Option(help: ArgumentHelp("Write the figures as JSON.", valueName: "file"))
        var json: String?

        func run() throws {
            var benchmark = SolverBenchmark()
            benchmark.repeats = repeats
            benchmark.sweepRepeats = sweepRepeats
            benchmark.points = points
            benchmark.shapes = shapes
            benchmark.timeLimit = timeLimit
            benchmark.writeProfiles = writeProfiles
            benchmark.json = json
            try checkedOptions { try benchmark.run(emit: emit) }
        }
    }
}

/// Runs a benchmark (or part of one), reporting a `BenchmarkError` as an error in the options.
func checkedOptions(_ body: () throws -> Void) throws {
    do { try body() } catch let error as BenchmarkError { throw ValidationError(error.message) }
}
