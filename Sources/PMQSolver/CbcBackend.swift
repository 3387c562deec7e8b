import CCbc
import Foundation

/// The only file that talks to COIN-OR CBC. Builds the program in one `Cbc_loadProblem` call
/// (column-compressed), hands CBC a MIP start, solves in-process and reads the result back.
///
/// Measured facts this relies on (docs/SOLVER.md): loadProblem is ~1000× faster than
/// addCol/addRow; Cgl preprocessing dominates on this structure and is switched off;
/// `Cbc_isProvenOptimal` is 1 even after stopping on a gap, so the secondary status is read.
private let cbcLock = NSLock()

enum CbcBackend {
    struct Options {
        var timeLimit: Double?
        /// Relative gap at which CBC may stop and call the incumbent optimal.
        var relativeGap: Double
        var verbose: Bool
        var threads: Int
        /// Cgl preprocessing: off for the whole program (measured: it dominated a 14,848-expert
        /// solve, 32 s against 2.9 s), on for the core left by reduced-cost fixing (measured: it
        /// proved a byte-budget core optimal in 0.2 s that stalled at a 3e-5 gap for 30 s without).
        var preprocess: Bool
    }

    enum Outcome {
        case solved(choice: AllocationProblem.Choice, bound: Double, stop: StopReason, nodes: Int)
        case infeasible
        case noSolution(stop: StopReason, bound: Double)
    }

    enum StopReason: String {
        case completed, gap, time, nodes, other
    }

    /// Solves `problem`. `start` (if any) must be feasible. The budget rows are tightened by
    /// `tightening` (in row units, see `rowScale`) when an earlier attempt overshot by CBC's tolerance.
    static func solve(
        _ problem: AllocationProblem, start: AllocationProblem.Choice?, options: Options,
        tightening: Double = 0
    ) -> Outcome {
        // CbcMain1, behind Cbc_solve, keeps parameters in static storage: one solve at a time.
        cbcLock.lock()
        defer { cbcLock.unlock() }
        let items = problem.items
        var columnOf: [Int] = [] // first column of each item
        var columns = 0
        for item in items {
            columnOf.append(columns)
            columns += item.options.count
        }

        // Rows: items (= 1), budget rows (≤), diversity and removal-limit rows (≥ minimum).
        let budgetBase = items.count
        let diversityBase = budgetBase + problem.budgetRows.count
        let rowCount = diversityBase + problem.diversityRows.count
        var budgetRowOf = [Int32](repeating: -1, count: items.count)
        for (row, budget) in problem.budgetRows.enumerated() {
            for index in budget.items { budgetRowOf[index] = Int32(budgetBase + row) }
        }
        var diversityRowsOf = [[(row: Int32, widths: Set<Int>)]](repeating: [], count: items.count)
        for (row, diversity) in problem.diversityRows.enumerated() {
            for index in diversity.items {
                diversityRowsOf[index].append((Int32(diversityBase + row), diversity.widths))
            }
        }

        // Budget rows in small units: the weights' common divisor when that leaves integers of
        // moderate size (CBC's knapsack cuts then see an integer row), otherwise "mean lightest
        // option" units so that coefficients are O(1) (raw parameter counts mislead CBC).
        let rowScale = problem.budgetRows.map { row -> Double in
            let divisor = Double(problem.rowWeightDivisor(row))
            let heaviest = row.items.reduce(0.0) { max($0, Double(items[$1].options.map(\.weight).max()!)) }
            if heaviest / divisor <= 1e6 { return divisor }
            let lightest = row.items.reduce(0.0) { $0 + Double(items[$1].options.map(\.weight).min()!) }
            return max(lightest / Double(max(row.items.count, 1)), 1)
        }
        // Scale the objective so that costs are O(1) as well (CBC's gaps and tolerances are absolute too).
        let allCosts = items.flatMap { $0.options.map(\.cost) }
        let meanCost = allCosts.reduce(0, +) / Double(max(allCosts.count, 1))
        let costScale = meanCost > 0 ? meanCost : 1

        var starts: [CoinBigIndex] = [0]
        var indices: [Int32] = []
        var values: [Double] = []
        var objective: [Double] = []
        starts.reserveCapacity(columns + 1)
        for (itemIndex, item) in items.enumerated() {
            for option in item.options {
                indices.append(Int32(itemIndex)); values.append(1)
                let budgetRow = budgetRowOf[itemIndex]
                if budgetRow >= 0 {
                    indices.append(budgetRow)
                    values.append(Double(option.weight) / rowScale[Int(budgetRow) - budgetBase])
                }
                for (row, widths) in diversityRowsOf[itemIndex] where widths.contains(option.width) {
                    indices.append(row); values.append(1)
                }
                objective.append(option.cost / costScale)
                starts.append(CoinBigIndex(indices.count))
            }
        }
        var rowLower = [Double](repeating: 1, count: rowCount)
        var rowUpper = [Double](repeating: 1, count: rowCount)
        for (row, budget) in problem.budgetRows.enumerated() {
            rowLower[budgetBase + row] = -Double.greatestFiniteMagnitude
            rowUpper[budgetBase + row] = budget.capacity.value / rowScale[row] - tightening
        }
        for (row, diversity) in problem.diversityRows.enumerated() {
            rowLower[diversityBase + row] = Double(diversity.minimum)
            rowUpper[diversityBase + row] = Double.greatestFiniteMagnitude
        }
        let columnLower = [Double](repeating: 0, count: columns)
        let columnUpper = [Double](repeating: 1, count: columns)

        guard let model = Cbc_newModel() else { return .noSolution(stop: .other, bound: -.infinity) }
        defer { Cbc_deleteModel(model) }
        Cbc_loadProblem(
            model, Int32(columns), Int32(rowCount), starts, indices, values,
            columnLower, columnUpper, objective, rowLower, rowUpper)
        for column in 0..<columns { Cbc_setInteger(model, Int32(column)) }
        Cbc_setObjSense(model, 1)
        Cbc_setLogLevel(model, options.verbose ? 1 : 0)
        Cbc_setParameter(model, "preprocess", options.preprocess ? "sos" : "off")
        if options.threads > 1 { Cbc_setParameter(model, "threads", String(options.threads)) }
        Cbc_setAllowableFractionGap(model, options.relativeGap)
        Cbc_setAllowableGap(model, 1e-12)
        if let limit = options.timeLimit { Cbc_setMaximumSeconds(model, limit) }
        // Expert hook: PMQ_CBC_PARAMETERS="cuts=on,strong=10" passes extra CBC options through.
        for pair in (ProcessInfo.processInfo.environment["PMQ_CBC_PARAMETERS"] ?? "").split(separator: ",") {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 { Cbc_setParameter(model, parts[0], parts[1]) }
        }
        if let start {
            let startColumns = start.enumerated().map { Int32(columnOf[$0] + $1) }
            let ones = [Double](repeating: 1, count: startColumns.count)
            Cbc_setMIPStartI(model, Int32(startColumns.count), startColumns, ones)
        }

        let status = Cbc_solve(model)
        let secondary = Cbc_secondaryStatus(model)
        let stop: StopReason
        switch secondary {
        // 1 = "LP infeasible or worse than the cutoff": with an incumbent (our MIP start) it
        // means nothing better exists, so the search completed.
        case 0, 1: stop = .completed
        case 2: stop = .gap
        case 3: stop = .nodes
        case 4: stop = .time
        default: stop = .other
        }
        // After a completed search CBC has proven its incumbent optimal, but the best-possible
        // value it reports can still be the root LP's (seen when the cutoff prunes the root).
        let bound =
            (stop == .completed && Cbc_bestSolution(model) != nil
                ? Cbc_getObjValue(model) : Cbc_getBestPossibleObjValue(model)) * costScale
        let solution = Cbc_bestSolution(model)
        guard let solution else {
            if Cbc_isProvenInfeasible(model) != 0 || secondary == 1 { return .infeasible }
            if options.verbose {
                FileHandle.standardError.write(
                    Data("CBC: status \(status), secondary status \(secondary), no solution\n".utf8))
            }
            return .noSolution(stop: stop, bound: bound)
        }
        var choice = [Int](repeating: 0, count: items.count)
        for (itemIndex, item) in items.enumerated() {
            var best = 0
            var bestValue = -Double.infinity
            for option in item.options.indices where solution[columnOf[itemIndex] + option] > bestValue {
                bestValue = solution[columnOf[itemIndex] + option]
                best = option
            }
            choice[itemIndex] = best
        }
        return .solved(choice: choice, bound: bound, stop: stop, nodes: Int(Cbc_getNodeCount(model)))
    }

    static var version: String { String(cString: Cbc_getVersion()) }
}
