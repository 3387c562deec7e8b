/// The LP relaxation of a multiple-choice knapsack, solved exactly by a greedy walk over each
/// item's lower convex hull of (weight, cost) points (Sinha & Zoltners 1979), and a rounded
/// integer solution from the same walk.
///
/// For one budget row the LP optimum is a lower bound on the integer optimum; the rounded
/// solution is feasible for the budget and at most one hull step from the LP optimum. With
/// several disjoint rows (per-layer scope) each row is walked on its own and bounds add up.
/// Diversity rows are ignored here: the bound stays valid (it relaxes more), the start may not be.
public enum GreedyRelaxation {
    public struct Result: Sendable {
        /// Lower bound on the integer optimum (LP relaxation value).
        public var bound: Double
        /// Rounded integer solution, feasible for every budget row.
        public var choice: AllocationProblem.Choice
        public var objective: Double
        /// The LP's budget multiplier per budget row (cost per unit of weight at the critical step;
        /// 0 where the budget does not bind). Any λ ≥ 0 gives a valid Lagrangian bound.
        public var multipliers: [Double]
    }

    private struct Step {
        var item: Int
        var from: Int
        var to: Int
        var weight: Int128
        var cost: Double
        var slope: Double
    }

    /// Returns nil when some budget row cannot be met even at minimum weight.
    public static func solve(_ problem: AllocationProblem) -> Result? {
        var choice = [Int](repeating: 0, count: problem.items.count)
        var bound = 0.0
        var covered = [Bool](repeating: false, count: problem.items.count)
        var multipliers: [Double] = []
        for row in problem.budgetRows {
            guard let (rowBound, multiplier) = walk(problem, row: row, choice: &choice) else { return nil }
            bound += rowBound
            multipliers.append(multiplier)
            for index in row.items { covered[index] = true }
        }
        // Items in no budget row take their cheapest option.
        for index in problem.items.indices where !covered[index] {
            let options = problem.items[index].options
            choice[index] = options.indices.min {
                (options[$0].cost, options[$0].weight) < (options[$1].cost, options[$1].weight)
            }!
            bound += options[choice[index]].cost
        }
        return Result(bound: bound, choice: choice, objective: problem.objective(choice), multipliers: multipliers)
    }

    private static func walk(
        _ problem: AllocationProblem, row: AllocationProblem.BudgetRow,
        choice: inout AllocationProblem.Choice
    ) -> (bound: Double, multiplier: Double)? {
        var steps: [Step] = []
        steps.reserveCapacity(3 * row.items.count)
        var used: Int128 = 0
        var cost = 0.0
        for index in row.items {
            let options = problem.items[index].options
            let hull = lowerHull(options)
            choice[index] = hull[0]
            used += Int128(options[hull[0]].weight)
            cost += options[hull[0]].cost
            for (from, to) in zip(hull, hull.dropFirst()) {
                let a = options[from], b = options[to]
                // The slope from the Int difference: the same Double, without the generic Int128 conversion.
                let difference = b.weight - a.weight, dc = b.cost - a.cost
                steps.append(
                    Step(
                        item: index, from: from, to: to, weight: Int128(difference), cost: dc,
                        slope: dc / Double(difference)))
            }
        }
        let capacity = row.capacity
        guard capacity.admits(used) else { return nil }
        // Steepest cost decrease per unit weight first; ties by item for determinism. Positions are
        // sorted instead of the steps themselves (a total order, so the same walk).
        var order = [Int32](repeating: 0, count: steps.count)
        for position in order.indices { order[position] = Int32(position) }
        steps.withUnsafeBufferPointer { steps in
            order.sort { a, b in
                let x = steps[Int(a)], y = steps[Int(b)]
                return (x.slope, x.item, x.from) < (y.slope, y.item, y.from)
            }
        }
        var lpBound: Double? = nil
        var multiplier = 0.0
        var blocked = [Bool](repeating: false, count: problem.items.count)
        for position in order {
            let step = steps[Int(position)]
            if blocked[step.item] || choice[step.item] != step.from { continue }
            if capacity.admits(used + step.weight) {
                used += step.weight
                choice[step.item] = step.to
                if lpBound == nil { cost += step.cost }
            } else {
                if lpBound == nil {
                    // The LP takes this step fractionally and stops.
                    let room = Double(capacity.numerator - used * capacity.denominator) / Double(capacity.denominator)
                    lpBound = cost + step.cost * max(0, room) / Double(step.weight)
                    multiplier = -step.slope
                }
                blocked[step.item] = true
            }
        }
        return (lpBound ?? cost, multiplier)
    }

    /// Indices of the options on the lower convex hull of (weight, cost), by ascending weight,
    /// starting at the lightest option (cheapest among equally light ones) and keeping only
    /// points that lower the cost.
    static func lowerHull(_ options: [AllocationProblem.Option]) -> [Int] {
        let order = options.indices.sorted {
            (options[$0].weight, options[$0].cost) < (options[$1].weight, options[$1].cost)
        }
        var hull: [Int] = []
        for index in order {
            let point = options[index]
            if let last = hull.last {
                if options[last].weight == point.weight { continue } // same weight, not cheaper
                if point.cost >= options[last].cost { continue } // dominated
            }
            while hull.count >= 2 {
                let a = options[hull[hull.count - 2]], b = options[hull[hull.count - 1]]
                // Drop b when it lies on or above the segment a→point.
                let cross =
                    (Double(b.weight - a.weight)) * (point.cost - a.cost) - (b.cost - a.cost)
                    * Double(point.weight - a.weight)
                if cross <= 0 { hull.removeLast() } else { break }
            }
            hull.append(index)
        }
        return hull
    }
}
