import ArgumentParser
import Foundation
import Fuzzing
import ModelFormat

extension PMQ {
    struct Fuzz: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Feed seeded mutations of every input format to pmq's readers; any trap or hang is a finding.",
            discussion: """
                Each case mutates a valid seed of one format (profile, allocation, config.json, tokenizer.json, \
                safetensors, shard index, token file, packed and FP8 quantization configs, cache manifest, \
                pruning file) and reads it in this process: it must be accepted or refused. A trap prints the case \
                and ends the run with a non-zero status; save it with --case N --save FILE and commit it under \
                Tests/Fixtures/fuzz/FORMAT/ (a regression test replays every file there). A case still running after \
                --timeout seconds is reported the same way.
                """
        )

        @Option(help: "Cases per format.")
        var cases: Int = 2000

        @Option(help: "Seed of the run.")
        var seed: UInt64 = 1

        @Option(help: ArgumentHelp("Only this format (default: all).", valueName: "name"))
        var format: String?

        @Option(name: .customLong("case"), help: "With --save: the case to write out instead of running.")
        var caseIndex: Int?

        @Option(help: ArgumentHelp("With --case: write that case's bytes here.", valueName: "file"))
        var save: String?

        @Option(help: "A case still running after this many seconds ends the run as a hang, naming the case.")
        var timeout: Double = 30

        @Flag(help: "No progress on stderr.")
        var quiet = false

        func validate() throws {
            guard (1...100_000_000).contains(cases) else { throw ValidationError("--cases must be 1 to 100,000,000") }
            guard (caseIndex == nil) == (save == nil) else { throw ValidationError("--case and --save go together") }
            guard timeout.isFinite, (0.01...3600).contains(timeout) else {
                throw ValidationError("--timeout must be 0.01 to 3600 seconds")
            }
            if let format, FuzzTarget.named(format) == nil {
                throw ValidationError(
                    "--format must be one of \(FuzzTarget.all.map(\.name).joined(separator: ", "))")
            }
            if let caseIndex, caseIndex < 0 { throw ValidationError("--case must be ≥ 0") }
        }

        func run() throws {
            let targets = format.map { [FuzzTarget.named($0)].compactMap { $0 } } ?? FuzzTarget.all
            if let caseIndex, let save {
                guard targets.count == 1 else { throw ValidationError("--case needs --format") }
                try AtomicFile.write(
                    Data(Fuzzer.input(target: targets[0], seed: seed, index: caseIndex)), to: save)
                print("\(save): case \(caseIndex) of \(targets[0].name), seed \(seed)")
                return
            }
            var options = Fuzzer.Options()
            options.cases = cases
            options.seed = seed
            options.formats = targets
            options.timeoutSeconds = timeout
            let progress = StagedProgress("fuzz", quiet: quiet)
            let start = ContinuousClock.now
            let reports = try Fuzzer(options: options).run(progress: progress.update)
            progress.finish()
            print("format           cases      accepted   refused    hangs  slowest ms")
            for report in reports {
                print(
                    report.format.padding(toLength: 16, withPad: " ", startingAt: 0)
                        + String(
                            format: " %-10d %-10d %-10d %-6d %.2f", report.cases, report.accepted, report.refused,
                            report.hangs, report.slowestSeconds * 1000))
            }
            let total = reports.reduce(0) { $0 + $1.cases }, hangs = reports.reduce(0) { $0 + $1.hangs }
            print(
                String(
                    format: "%d cases in %.1f s (seed %llu): 0 crashes, %d hangs", total, seconds(since: start), seed,
                    hangs))
            if hangs > 0 { throw ExitCode(3) }
        }
    }
}
