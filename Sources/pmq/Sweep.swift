import ArgumentParser
import FrontEvaluation
import Foundation
import ModelFormat
import PMQSolver
import QuantEngine

extension PMQ {
    struct Sweep: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Solve a range of budgets and write the size/loss Pareto front (JSON, CSV, SVG).",
            discussion: """
                --from and --to are both average bits (1.5, 3.0) or both sizes (10GB, 20GB). Each solve \
                starts from the previous solution. Writes DIR/front.json, DIR/front.csv and DIR/front.svg.

                With --evaluate TOKENS --model DIR --cache DIR, every point's model is assembled in memory \
                from the quantization cache of `pmq profile --cache` and measured on the held-out tokens \
                (perplexity, ΔNLL and mean KL to the float model), as are the uniform-width models; the \
                measurements go beside the predicted loss in front.json and front.csv, and front.svg draws \
                both. Finished points are kept in DIR.partial/, so a killed run resumes where it stopped.
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

        @Option(
            help: ArgumentHelp(
                "Held-out tokens (uint32 file) to measure every point on; needs --model and --cache.",
                valueName: "file"))
        var evaluate: String?

        @Option(help: ArgumentHelp("With --evaluate: the float Hugging Face model directory.", valueName: "dir"))
        var model: String?

        @Option(help: ArgumentHelp("With --evaluate: the quantization cache of the profile.", valueName: "dir"))
        var cache: String?

        @Option(name: .customLong("max-tokens"), help: "With --evaluate: measure on at most this many tokens.")
        var maxTokens: Int?

        @Option(name: .customLong("seq-len"), help: "With --evaluate: window length.")
        var seqLen: Int = 512

        @Flag(
            name: .customLong("save-models"),
            help: "With --evaluate: also write each point's packed model to DIR/models/point-NNN/.")
        var saveModels = false

        @Option(
            help: ArgumentHelp(
                "With --evaluate: measure only shard I of N of the models (one task of an array, e.g. "
                    + "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT) into DIR.partial/; a run without --shard then "
                    + "writes the front from them.", valueName: "I/N"),
            transform: parseShard)
        var shard: Shard?

        @Flag(help: "No progress on stderr.")
        var quiet = false

        func validate() throws {
            guard (1...100_000).contains(points) else { throw ValidationError("--points must be 1 to 100,000") }
            if evaluate != nil {
                guard model != nil, cache != nil else { throw ValidationError("--evaluate needs --model and --cache") }
            } else if model != nil || cache != nil || maxTokens != nil || saveModels || shard != nil {
                throw ValidationError("--model, --cache, --max-tokens, --save-models and --shard go with --evaluate")
            }
            if shard != nil, saveModels || saveAllocations {
                throw ValidationError("--save-models and --save-allocations go with the run without --shard")
            }
            if let maxTokens, maxTokens < 2 { throw ValidationError("--max-tokens must be ≥ 2") }
            guard (2...1_048_576).contains(seqLen) else { throw ValidationError("--seq-len must be 2 to 1,048,576") }
        }

        func run() throws {
            // The output is checked and locked before anything is solved; the front is built in a
            // hidden folder and renamed into place whole.
            // A shard writes only into DIR.partial/ and locks its own name: the shards of one sweep run at once.
            let lock = try OutputPaths.claim(
                shard.map { "\(out).shard-\($0.index)-of-\($0.count)" } ?? out, folder: true)
            defer { lock.release() }
            func parse(_ text: String) throws -> Budget {
                text.last?.isLetter == true ? try Budget.parseSize(text) : try Budget.parseBits(text)
            }
            let budgets = try ParetoSweep.budgets(from: try parse(from), to: try parse(to), count: points)
            let profile = try allocation.loadProfile()
            let model = allocation.costModel
            // Everything --evaluate reads is checked before anything is solved.
            var evaluationInputs: (tokens: TokenFile, cache: QuantizationCache)?
            if let evaluate, let cachePath = cache, let modelPath = self.model {
                let opened = try QuantizationCache.open(directory: cachePath)
                let config = try MoEModelConfig.read(directory: modelPath)
                try CacheAssembly.check(
                    opened, modelDirectory: modelPath, config: config, groupSize: profile.groupSize,
                    calibration: profile.calibration.fingerprint, source: allocation.profile)
                let tokens = try TokenFile(path: evaluate)
                try tokens.validate(vocabSize: config.vocabSize)
                evaluationInputs = (tokens, opened)
            }
            let progress = Progress("sweep", quiet: quiet)
            let solved = try ParetoSweep.run(
                profile: profile, profilePath: allocation.profile, model: model,
                budgets: budgets, options: allocation.solveOptions
            ) { done, total, point in
                progress.update(
                    done: done, total: total,
                    detail: "budget \(String(format: "%.4g", point.budget)) \(point.budgetKind): \(point.status)")
            }
            progress.finish()
            if let shard, let evaluationInputs {
                let measured = try runMeasuredFront(solved, inputs: evaluationInputs, staging: nil)
                print(
                    "shard \(shard.index)/\(shard.count): \(measured.modelCount) models measured, in \(out).partial/ "
                        + String(format: "(%.1f s); run without --shard to write the front", measured.seconds))
                return
            }
            var result = solved
            var summary: FrontEvaluationSummary?
            let staging = try OutputPaths.stagingFolder(for: out)
            do {
                if let evaluationInputs {
                    (result, summary) = try measure(solved, inputs: evaluationInputs, staging: staging)
                }
                try FrontWriters.write(
                    result, profile: profile, profilePath: allocation.profile, model: model,
                    directory: staging, saveAllocations: saveAllocations, evaluation: summary)
                try OutputPaths.replace(out, with: staging)
            } catch {
                try? FileManager.default.removeItem(atPath: staging)
                throw error
            }
            if summary != nil { try? FileManager.default.removeItem(atPath: out + ".partial") }
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
            if let summary { printMeasured(result, summary) }
            print("front: \(out)/front.json, \(out)/front.csv, \(out)/front.svg")
        }
    }
}

extension PMQ.Sweep {
    /// Runs `MeasuredFront` with this command's options (this run's `--shard` only, when given)
    /// into `DIR.partial/`; `staging` receives the saved models (`--save-models`).
    func runMeasuredFront(
        _ solved: ParetoSweep.Result, inputs: (tokens: TokenFile, cache: QuantizationCache), staging: String?
    ) throws -> MeasuredFront.Result {
        var options = MeasuredFront.Options()
        options.sequenceLength = seqLen
        options.maxTokens = maxTokens
        options.saveModels = saveModels ? staging : nil
        options.shard = shard.map { ($0.index, $0.count) }
        let front = MeasuredFront(modelDirectory: model!, cache: inputs.cache, options: options)
        let progress = StagedProgress("measure", quiet: quiet)
        let measured = try front.run(
            reports: solved.reports, tokens: inputs.tokens.tokens, tokensFile: evaluate!,
            workDirectory: out + ".partial", progress: progress.update)
        progress.finish()
        return measured
    }

    /// Measures every solved point (and the uniform-width models) on the held-out tokens.
    func measure(
        _ solved: ParetoSweep.Result, inputs: (tokens: TokenFile, cache: QuantizationCache), staging: String
    ) throws
        -> (ParetoSweep.Result, FrontEvaluationSummary)
    {
        let measured = try runMeasuredFront(solved, inputs: inputs, staging: staging)
        if measured.measuredNow < measured.modelCount {
            print(
                "\(measured.measuredNow) of \(measured.modelCount) models measured now, the others read from "
                    + "\(out).partial/")
        }
        var result = solved
        for index in result.points.indices { result.points[index].measured = measured.points[index] }
        let pairs = result.points.compactMap { point in
            point.objective.flatMap { objective in point.measured.map { (objective, $0.deltaNLL) } }
        }
        let rho = pairs.count >= 2 ? RankCorrelation.spearman(pairs.map(\.0), pairs.map(\.1)) : nil
        return (
            result,
            FrontEvaluationSummary(
                tokensFile: evaluate!, tokens: measured.tokens, predicted: measured.predicted,
                floatNegativeLogLikelihood: measured.floatNegativeLogLikelihood,
                floatPerplexity: measured.floatPerplexity, references: measured.references,
                spearman: rho.flatMap { $0.isFinite ? $0 : nil }, seconds: measured.seconds)
        )
    }

    func printMeasured(_ result: ParetoSweep.Result, _ summary: FrontEvaluationSummary) {
        print(
            String(
                format: "measured on %d held-out tokens of %@: float perplexity %.3f, %.1f s", summary.predicted,
                summary.tokensFile, summary.floatPerplexity, summary.seconds))
        print("model                 avg bits  eff bits  perplexity  ΔNLL       mean KL    assembly s  eval s")
        func row(_ name: String, _ bits: Double?, _ effective: Double?, _ m: FrontMeasurement) {
            print(
                name.padding(toLength: 21, withPad: " ", startingAt: 0)
                    + String(
                        format: " %-9.4f %-9.4f %-11.3f %-10.5f %-10.5f %-11.3f %.2f", bits ?? .nan, effective ?? .nan,
                        m.perplexity, m.deltaNLL, m.meanKL, m.assemblySeconds, m.evaluationSeconds))
        }
        for reference in summary.references {
            row(reference.name, reference.averageBits, reference.effectiveBits, reference.measured)
        }
        for (index, point) in result.points.enumerated() {
            guard let measured = point.measured else { continue }
            row(
                "point \(index + 1)" + (point.dominated ? " (dominated)" : ""), point.averageBits, point.effectiveBits,
                measured)
        }
        if let rho = summary.spearman {
            print(String(format: "Spearman ρ(predicted loss, measured ΔNLL) = %.3f", rho))
        }
    }
}

struct Shard {
    var index: Int
    var count: Int
}

func parseShard(_ text: String) throws -> Shard {
    let (index, count) = try parsePartOfCount(text, option: "--shard")
    return Shard(index: index, count: count)
}
