import Foundation
import ModelFormat

/// Sweeps the budget from low to high, solving each point with the previous solution as CBC's
/// MIP start, and marks which (size, predicted loss) points are dominated.
public enum ParetoSweep {
    public struct Point: Codable, Sendable {
        /// "bits" or "bytes".
        public var budgetKind: String
        /// Average bits, or bytes.
        public var budget: Double
        /// "optimal", "time-limit", …, or "infeasible" (no allocation fits this budget).
        public var status: String
        public var objective: Double?
        public var bound: Double?
        public var gap: Double?
        public var averageBits: Double?
        public var effectiveBits: Double?
        public var bytes: Int64?
        public var seconds: Double
        public var start: String?
        /// Another point is at least as small and at least as good, and strictly better in one.
        public var dominated: Bool
        /// Experts the allocation removes (width 0); nil when it is not solved.
        public var removed: Int? = nil
        /// Held-out measurement of the point's model (`pmq sweep --evaluate`).
        public var measured: FrontMeasurement? = nil
    }

    public struct Result: Sendable {
        public var points: [Point]
        /// The allocation report of each feasible point (nil where infeasible).
        public var reports: [AllocationReport?]
        public var seconds: Double
    }

    /// `count` budgets evenly spaced from `from` to `to` inclusive, computed exactly.
    public static func budgets(from: Budget, to: Budget, count: Int) throws -> [Budget] {
        guard count >= 1 else { throw SolverError.badOption("--points must be at least 1") }
        switch (from, to) {
        case let (.bits(fn, fd), .bits(tn, td)):
            guard fn * td <= tn * fd else { throw SolverError.badOption("--from must not exceed --to") }
            if count == 1 { return [from] }
            let steps = Int128(count - 1)
            return (0..<count).map { index in
                let i = Int128(index)
                return .bits(numerator: fn * td * (steps - i) + tn * fd * i, denominator: fd * td * steps)
            }
        case let (.bytes(low), .bytes(high)):
            guard low <= high else { throw SolverError.badOption("--from must not exceed --to") }
            if count == 1 { return [from] }
            return (0..<count).map { index in
                .bytes(low + Int64((Int128(high - low) * Int128(index)) / Int128(count - 1)))
            }
        default:
            throw SolverError.badOption("--from and --to must both be bits (2.5) or both sizes (11.2GB)")
        }
    }

    public static func run(
        profile: Profile, profilePath: String, model: CostModel, budgets: [Budget],
        options: SolveOptions,
        progress: (_ done: Int, _ total: Int, _ point: Point) -> Void = { _, _, _ in }
    ) throws -> Result {
        let clock = ContinuousClock.now
        var points: [Point] = []
        var reports: [AllocationReport?] = []
        var previous: AllocationProblem.Choice? = nil
        for budget in budgets {
            let problem = try model.makeProblem(profile, budget: budget, file: profilePath)
            let pointClock = ContinuousClock.now
            do {
                let allocation = try Allocator.solve(problem, options: options, warmStart: previous)
                previous = allocation.choice
                let report = AllocationReport(
                    profile: profile, profilePath: profilePath, problem: problem,
                    allocation: allocation, budget: budget, model: model, options: options)
                reports.append(report)
                points.append(
                    Point(
                        budgetKind: budget.kind, budget: budget.value, status: allocation.status.rawValue,
                        objective: allocation.objective, bound: allocation.bound, gap: allocation.gap,
                        averageBits: report.averageBits, effectiveBits: report.effectiveBits,
                        bytes: report.bytes, seconds: allocation.seconds, start: allocation.start,
                        dominated: false, removed: report.widthCounts["0"] ?? 0))
            } catch SolverError.infeasibleBudget {
                reports.append(nil)
                points.append(
                    Point(
                        budgetKind: budget.kind, budget: budget.value, status: "infeasible",
                        seconds: seconds(since: pointClock), dominated: false))
            }
            progress(points.count, budgets.count, points[points.count - 1])
        }
        markDominated(&points)
        return Result(points: points, reports: reports, seconds: seconds(since: clock))
    }

    /// The size a point is judged by: average bits for a bits sweep, bytes for a size sweep.
    static func size(_ point: Point) -> Double? {
        point.budgetKind == "bits" ? point.averageBits : point.bytes.map(Double.init)
    }

    static func markDominated(_ points: inout [Point]) {
        for i in points.indices {
            guard let xi = size(points[i]), let yi = points[i].objective else { continue }
            points[i].dominated = points.indices.contains { j in
                guard j != i, let xj = size(points[j]), let yj = points[j].objective else { return false }
                return xj <= xi && yj <= yi && (xj < xi || yj < yi)
            }
        }
    }
}
