import Foundation
import ModelFormat

/// One solved allocation: a width per expert, with the solver's evidence of how good it is.
public struct Allocation: Sendable {
    public enum Status: String, Sendable, Codable {
        /// Proven optimal within the relative gap tolerance.
        case optimal
        /// Stopped on the time limit; `gap` and `bound` say how far from optimal it may be.
        case timeLimit = "time-limit"
        case nodeLimit = "node-limit"
        /// Stopped for another reason with a feasible solution.
        case stopped
    }

    /// Option index per item of the problem.
    public var choice: AllocationProblem.Choice
    public var status: Status
    public var objective: Double
    /// Best proven lower bound on the optimum.
    public var bound: Double
    /// `(objective − bound) / |objective|` (0 when the objective is 0).
    public var gap: Double
    public var seconds: Double
    public var nodes: Int
    /// Which MIP start CBC was given: "greedy", "previous" or "none".
    public var start: String
    /// Which solution was kept: "cbc" or the start, when CBC returned nothing better.
    public var incumbent: String
    /// Experts whose width reduced-cost fixing decided before CBC ran.
    public var fixedExperts: Int
    /// Binary columns in the program CBC solved (0 when fixing decided every expert).
    public var cbcColumns: Int
}

public struct SolveOptions: Sendable {
    public var timeLimit: Double?
    /// CBC may stop once the relative gap between incumbent and bound is at most this.
    public var relativeGap: Double
    public var verbose: Bool
    public var threads: Int
    /// Drop options that the Lagrangian bound proves worse than the start before calling CBC.
    public var reducedCostFixing: Bool
    public init(
        timeLimit: Double? = nil, relativeGap: Double = 1e-6, verbose: Bool = false, threads: Int = 1,
        reducedCostFixing: Bool = true
    ) {
        self.reducedCostFixing = reducedCostFixing
        self.timeLimit = timeLimit
        self.relativeGap = relativeGap
        self.verbose = verbose
        self.threads = threads
    }
}

/// Orchestrates one solve: feasibility check, greedy LP bound and start, CBC, exact verification.
public enum Allocator {
    public static var cbcVersion: String { CbcBackend.version }

    public static func solve(
        _ original: AllocationProblem, options: SolveOptions = .init(),
        warmStart: AllocationProblem.Choice? = nil
    ) throws -> Allocation {
        let clock = ContinuousClock.now
        let problem = original.strengthened()
        guard options.relativeGap >= 0, options.relativeGap.isFinite else {
            throw SolverError.badOption("the relative gap must be a finite number ≥ 0")
        }
        if let limit = options.timeLimit, !(limit > 0 && limit.isFinite) {
            throw SolverError.badOption("--time-limit must be a positive number of seconds")
        }
        if let row = problem.minimumWeightViolations().first {
            let lightest = problem.describe(weight: Double(problem.lightestWeight(row)), of: row)
            throw SolverError.infeasibleBudget(
                "\(row.label) needs at least \(lightest) with every expert at its smallest width; the budget allows "
                    + "\(problem.describe(weight: row.capacity.value, of: row))"
            )
        }
        guard let greedy = GreedyRelaxation.solve(problem) else {
            throw SolverError.infeasibleBudget("no assignment fits")
        }

        var bound = greedy.bound
        var start: (choice: AllocationProblem.Choice, name: String)? = nil
        if problem.isFeasible(greedy.choice) { start = (greedy.choice, "greedy") }
        if let warmStart, problem.isFeasible(warmStart),
            start == nil || problem.objective(warmStart) <= problem.objective(start!.choice)
        {
            start = (warmStart, "previous")
        }

        var backendOptions = CbcBackend.Options(
            timeLimit: options.timeLimit, relativeGap: options.relativeGap,
            verbose: options.verbose, threads: options.threads, preprocess: false)
        // CBC solves either the whole program or, given a feasible start, the core that
        // reduced-cost fixing leaves (every option it drops is provably worse than the start).
        var fixing: ReducedCostFixing? = nil
        if options.reducedCostFixing, let start {
            fixing = ReducedCostFixing(problem, multipliers: greedy.multipliers, incumbent: start.choice)
        }
        let cbcProblem = fixing?.reduced ?? problem
        backendOptions.preprocess = fixing != nil
        let cbcStart = start.map { fixing?.reduce($0.choice) ?? $0.choice }
        let fixedExperts = problem.items.count - cbcProblem.items.count
        let cbcColumns = cbcProblem.items.reduce(0) { $0 + $1.options.count }

        var outcome: CbcBackend.Outcome = .noSolution(stop: .other, bound: -.infinity)
        if cbcProblem.items.isEmpty {
            // Fixing decided every expert: the start is optimal (no option survives that could beat it).
            outcome = .solved(choice: [], bound: problem.objective(start!.choice), stop: .completed, nodes: 0)
        } else {
            // CBC accepts rows within its feasibility tolerance; the exact check may disagree. Then
            // tighten the budget rows a little and solve again.
            for tightening in [0, 1e-7, 1e-6, 1e-5] {
                outcome = CbcBackend.solve(cbcProblem, start: cbcStart, options: backendOptions, tightening: tightening)
                if case let .solved(choice, _, _, _) = outcome, !cbcProblem.isFeasible(choice) { continue }
                break
            }
        }
        if let fixing {
            // Lift the core's answer back to the whole program. The core's bound plus the fixed
            // experts' costs bounds only allocations within the core; anything outside costs more
            // than the start, so min(that, start) bounds the whole program.
            let fixedCost = fixing.fixed.enumerated().reduce(0.0) { sum, entry in
                entry.element.map { sum + problem.items[entry.offset].options[$0].cost } ?? sum
            }
            let startObjective = problem.objective(start!.choice)
            switch outcome {
            case let .solved(choice, bound, stop, nodes):
                outcome = .solved(
                    choice: fixing.expand(choice), bound: min(bound + fixedCost, startObjective), stop: stop,
                    nodes: nodes)
            case let .noSolution(stop, bound):
                outcome = .noSolution(stop: stop, bound: min(bound + fixedCost, startObjective))
            case .infeasible:
                // Nothing in the core beats the start, and nothing outside it can.
                outcome = .solved(choice: start!.choice, bound: startObjective, stop: .completed, nodes: 0)
            }
            bound = max(bound, fixing.lagrangianBound)
        }

        var choice: AllocationProblem.Choice
        var status: Allocation.Status
        var nodes = 0
        var incumbent = "cbc"
        switch outcome {
        case .infeasible:
            throw SolverError.infeasibleBudget(
                problem.diversityRows.isEmpty
                    ? "CBC proved the program infeasible"
                    : "no allocation meets the budget and the per-layer rules (--mc-diversity: one expert at the top "
                        + "width and one at the next; width 0: at least top-k experts kept in every layer)"
            )
        case let .noSolution(stop, cbcBound):
            guard let start else {
                throw SolverError.solverFailure("CBC stopped (\(stop.rawValue)) without a feasible solution")
            }
            choice = start.choice
            incumbent = start.name
            if cbcBound.isFinite { bound = max(bound, cbcBound) }
            status = stop == .time ? .timeLimit : .stopped
        case let .solved(cbcChoice, cbcBound, stop, nodeCount):
            choice = cbcChoice
            nodes = nodeCount
            if cbcBound.isFinite { bound = max(bound, cbcBound) }
            switch stop {
            case .completed, .gap: status = .optimal
            case .time: status = .timeLimit
            case .nodes: status = .nodeLimit
            case .other: status = .stopped
            }
            if !problem.isFeasible(choice) {
                guard let start else {
                    throw SolverError.solverFailure("CBC's solution exceeds the budget in exact arithmetic")
                }
                choice = start.choice
                incumbent = start.name
                status = .stopped
            } else if let start, problem.objective(start.choice) < problem.objective(choice) {
                choice = start.choice
                incumbent = start.name
            }
        }
        choice = problem.preferLighterOnTies(choice)
        let objective = problem.objective(choice)
        bound = min(bound, objective)
        let gap = objective > 0 ? max(0, (objective - bound) / objective) : 0
        return Allocation(
            choice: choice, status: status, objective: objective, bound: bound, gap: gap,
            seconds: seconds(since: clock), nodes: nodes, start: start?.name ?? "none", incumbent: incumbent,
            fixedExperts: fixedExperts, cbcColumns: cbcColumns)
    }
}
