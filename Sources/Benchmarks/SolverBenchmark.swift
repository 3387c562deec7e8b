import ExpertProfiler
import Foundation
import ModelFormat
import PMQSolver

/// `pmq bench solver`: solve and sweep on Mixtral-8x7B- and DeepSeek-V3-shaped synthetic profiles,
/// timed with pmq's full pipeline and, side by side, with CBC on the whole program (medians); and the
/// profile read and report write `pmq solve` does, against the tree reader and `JSONEncoder`.
public struct SolverBenchmark {
    public var repeats: Int = 5
    public var sweepRepeats: Int = 3
    public var points: Int = 31
    public var shapes: String = "mixtral-8x7b,deepseek-v3"
    public var timeLimit: Double = 10
    public var writeProfiles: String?
    public var json: String?

    public init() {}

    struct Figure: Encodable {
        var shape: String
        var experts: Int
        var widths: [Int]
        var task: String
        var medianSeconds: Double
        var baselineMedianSeconds: Double
        var runs: [Double]
        var baselineRuns: [Double]
        var status: String
        var baselineStatus: String
        var maxGap: Double
    }

    /// One timed task: returns (status, worst gap).
    typealias Task = (_ options: SolveOptions) throws -> (String, Double)

    func measure(_ runs: Int, _ task: Task, _ options: SolveOptions) throws -> (
        median: Double, runs: [Double], status: String, gap: Double
    ) {
        var times: [Double] = []
        var status = "", gap = 0.0
        for _ in 0..<max(runs, 1) {
            let start = ContinuousClock.now
            (status, gap) = try task(options)
            times.append(seconds(since: start))
        }
        return (times.sorted()[times.count / 2], times, status, gap)
    }

    public func run(emit: (String) -> Void) throws {
        var figures: [Figure] = []
        emit(
            "CBC \(Allocator.cbcVersion); medians of \(repeats) solves / \(sweepRepeats) sweeps; time limit "
                + "\(timeLimit) s per solve; baseline = CBC on the whole program (no reduced-cost fixing), 1 sweep; "
                + "reading and writing against the tree reader and JSONEncoder"
        )
        emit(
            "shape         experts widths  task                                  pmq s      status     gap      "
                + "baseline s  status     ratio"
        )
        for name in shapes.split(separator: ",").map(String.init) {
            guard let shape = SyntheticProfile.shapes[name] else { throw BenchmarkError("unknown shape \(name)") }
            let directory = writeProfiles ?? FileManager.default.temporaryDirectory.path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let path = directory + "/synthetic-\(name).json"
            try SyntheticProfile(shape: shape, seed: 1).document().write(to: path)
            let profile = try ProfileReader.read(path: path).profile
            let reportPath = directory + "/.bench-report-\(getpid()).json"
            defer {
                if writeProfiles == nil { try? FileManager.default.removeItem(atPath: path) }
                try? FileManager.default.removeItem(atPath: reportPath)
            }

            // A byte budget equal to the all-2.5-bit average size: the realistic "fit in N GB" case.
            let bytesAtTwoAndHalf = profile.layers.flatMap(\.experts).reduce(Int64(0)) {
                $0 + ($1.bytes[2]! + $1.bytes[3]!) / 2
            }
            let sweepTo = String(min(Double(shape.widths.max()!), 3.5))
            func single(_ model: CostModel, _ budget: Budget) -> Task {
                { options in
                    let result = try Allocator.solve(
                        try model.makeProblem(profile, budget: budget), options: options)
                    return (result.status.rawValue, result.gap)
                }
            }
            func sweep(_ from: Budget, _ to: Budget) -> Task {
                { options in
                    let budgets = try ParetoSweep.budgets(from: from, to: to, count: points)
                    let result = try ParetoSweep.run(
                        profile: profile, profilePath: path, model: CostModel(), budgets: budgets, options: options)
                    let counts = Dictionary(grouping: result.points, by: \.status).mapValues(\.count)
                    let status =
                        counts.count == 1
                        ? counts.keys.first!
                        : counts.keys.sorted().map { "\(counts[$0]!) \($0)" }.joined(separator: ", ")
                    return (status, result.points.compactMap(\.gap).max() ?? 0)
                }
            }
            // Reading the profile and writing a report as `pmq solve` does; the baselines: the tree reader
            // (the streaming reader's fallback) and Foundation's `JSONEncoder`.
            let budget = try Budget.parseBits("2.5")
            let problem = try CostModel().makeProblem(profile, budget: budget)
            let report = AllocationReport(
                profile: profile, profilePath: path, problem: problem, allocation: try Allocator.solve(problem),
                budget: budget, model: CostModel(), options: SolveOptions())
            let read: (Bool) -> Task = { streaming in
                { _ in
                    if streaming {
                        _ = try ProfileReader.read(path: path)
                    } else {
                        _ = try ProfileReader.treeParse(try Data(contentsOf: URL(fileURLWithPath: path)), file: path)
                    }
                    return ("ok", 0)
                }
            }
            let write: (Bool) -> Task = { own in
                { _ in
                    if own {
                        try AtomicFile.writeJSON(report, to: reportPath)
                    } else {
                        try AtomicFile.write(try AtomicFile.foundationEncoder().encode(report), to: reportPath)
                    }
                    return ("ok", 0)
                }
            }
            let size = { (file: String) in
                let bytes = (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0
                return String(format: "%.1f", Double(bytes) / 1e6)
            }
            try AtomicFile.writeJSON(report, to: reportPath)
            let jsonTasks: [(String, Task, Task)] = [
                ("read profile (\(size(path)) MB), tree reader", read(true), read(false)),
                ("write report (\(size(reportPath)) MB), JSONEncoder", write(true), write(false)),
            ]
            for (label, task, baselineTask) in jsonTasks {
                let ours = try measure(repeats, task, SolveOptions())
                let baseline = try measure(repeats, baselineTask, SolveOptions())
                record(label, ours, baseline)
            }
            let tasks: [(String, Bool, Task)] = [
                ("solve global 2.5 bits", false, single(CostModel(), try Budget.parseBits("2.5"))),
                ("solve layer 2.5 bits", false, single(CostModel(scope: .layer), try Budget.parseBits("2.5"))),
                (
                    "solve global \(formatGB(bytesAtTwoAndHalf))", false,
                    single(CostModel(), .bytes(bytesAtTwoAndHalf))
                ),
                (
                    "sweep global 1.5→\(sweepTo) bits, \(points) pts", true,
                    sweep(try Budget.parseBits("1.5"), try Budget.parseBits(sweepTo))
                ),
                (
                    "sweep global bytes, \(points) pts", true,
                    sweep(.bytes(bytesAtTwoAndHalf * 6 / 10), .bytes(bytesAtTwoAndHalf * 13 / 10))
                ),
            ]
            for (label, isSweep, task) in tasks {
                let runs = isSweep ? sweepRepeats : repeats
                let ours = try measure(runs, task, SolveOptions(timeLimit: timeLimit))
                let baseline = try measure(
                    isSweep ? 1 : min(runs, 3), task,
                    SolveOptions(timeLimit: timeLimit, reducedCostFixing: false))
                record(label, ours, baseline)
            }
            func record(
                _ label: String, _ ours: (median: Double, runs: [Double], status: String, gap: Double),
                _ baseline: (median: Double, runs: [Double], status: String, gap: Double)
            ) {
                figures.append(
                    Figure(
                        shape: name, experts: profile.expertCount, widths: profile.widths, task: label,
                        medianSeconds: ours.median, baselineMedianSeconds: baseline.median,
                        runs: ours.runs, baselineRuns: baseline.runs, status: ours.status,
                        baselineStatus: baseline.status, maxGap: ours.gap))
                emit(
                    [
                        name.padding(toLength: 13, withPad: " ", startingAt: 0),
                        String(profile.expertCount).padding(toLength: 7, withPad: " ", startingAt: 0),
                        profile.widths.map(String.init).joined(separator: ",").padding(
                            toLength: 7, withPad: " ", startingAt: 0),
                        label.padding(toLength: 37, withPad: " ", startingAt: 0),
                        String(format: "%-10.3f", ours.median),
                        ours.status.padding(toLength: max(10, ours.status.count), withPad: " ", startingAt: 0),
                        String(format: "%-8.1e", ours.gap),
                        String(format: "%-11.3f", baseline.median),
                        baseline.status.padding(
                            toLength: max(10, baseline.status.count), withPad: " ", startingAt: 0),
                        String(format: "%.1f×", baseline.median / max(ours.median, 1e-9)),
                    ].joined(separator: " "))
            }
        }
        if let json { try AtomicFile.writeJSON(figures, to: json) }
    }
}
