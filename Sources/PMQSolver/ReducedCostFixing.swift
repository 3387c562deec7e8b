/// Reduced-cost fixing from the Lagrangian of the budget rows: drops every option that cannot
/// appear in any allocation better than a known feasible one, and fixes experts left with a
/// single option, so that CBC searches only the core of the program.
///
/// For multipliers λ_r ≥ 0 and any feasible x:
///     c·x ≥ c·x + Σ_r λ_r (w_r·x − C_r) = L(λ) + Σ_i rc(i, o_i),
/// where L(λ) = Σ_i min_o (c_io + λ w_io) − Σ_r λ_r C_r and rc(i, o) ≥ 0 is option o's excess over
/// item i's Lagrangian minimum. So an option with L(λ) + rc(i, o) > UB (the incumbent) is in no
/// better allocation. Diversity rows are relaxed (dropped) in L, which keeps the argument valid.
struct ReducedCostFixing {
    /// The program CBC solves: remaining items, each with its admissible options.
    var reduced: AllocationProblem
    /// Original item index of each reduced item.
    var itemOf: [Int]
    /// Original option index of each reduced option, per reduced item.
    var optionOf: [[Int]]
    /// Original option index per original item for the fixed items (nil where not fixed).
    var fixed: [Int?]
    /// The Lagrangian lower bound L(λ).
    var lagrangianBound: Double

    init(_ problem: AllocationProblem, multipliers: [Double], incumbent: AllocationProblem.Choice) {
        let items = problem.items
        var rowOf = [Int](repeating: -1, count: items.count)
        for (row, budget) in problem.budgetRows.enumerated() {
            for index in budget.items { rowOf[index] = row }
        }
        var bound = 0.0
        var minimum = [Double](repeating: 0, count: items.count)
        for (index, item) in items.enumerated() {
            let lambda = rowOf[index] >= 0 ? multipliers[rowOf[index]] : 0
            minimum[index] = item.options.map { $0.cost + lambda * Double($0.weight) }.min()!
            bound += minimum[index]
        }
        for (row, budget) in problem.budgetRows.enumerated() { bound -= multipliers[row] * budget.capacity.value }
        let upper = problem.objective(incumbent)
        // Keep an option unless it is worse than the incumbent by a clear margin (float safety).
        let slack = upper + 1e-9 * max(abs(upper), abs(bound)) + 1e-300

        var keptItems: [AllocationProblem.Item] = []
        var itemOf: [Int] = []
        var optionOf: [[Int]] = []
        var fixed = [Int?](repeating: nil, count: items.count)
        var reducedIndex = [Int](repeating: -1, count: items.count)
        for (index, item) in items.enumerated() {
            let lambda = rowOf[index] >= 0 ? multipliers[rowOf[index]] : 0
            var admissible = item.options.indices.filter { option in
                let reducedCost =
                    item.options[option].cost + lambda * Double(item.options[option].weight) - minimum[index]
                return bound + reducedCost <= slack
            }
            if !admissible.contains(incumbent[index]) { admissible.append(incumbent[index]); admissible.sort() }
            if admissible.count == 1 {
                fixed[index] = admissible[0]
            } else {
                reducedIndex[index] = keptItems.count
                itemOf.append(index)
                optionOf.append(admissible)
                var kept = item
                kept.options = admissible.map { item.options[$0] }
                keptItems.append(kept)
            }
        }

        var rows: [AllocationProblem.BudgetRow] = []
        for budget in problem.budgetRows {
            var fixedWeight: Int128 = 0
            var remaining: [Int] = []
            for index in budget.items {
                if let option = fixed[index] {
                    fixedWeight += Int128(items[index].options[option].weight)
                } else {
                    remaining.append(reducedIndex[index])
                }
            }
            guard !remaining.isEmpty else { continue }
            let capacity = AllocationProblem.Capacity(
                numerator: budget.capacity.numerator - fixedWeight * budget.capacity.denominator,
                denominator: budget.capacity.denominator)
            rows.append(.init(items: remaining, capacity: capacity, label: budget.label, params: budget.params))
        }
        var diversity: [AllocationProblem.DiversityRow] = []
        for row in problem.diversityRows {
            let fixedCount = row.items.filter { index in
                guard let option = fixed[index] else { return false }
                return row.widths.contains(items[index].options[option].width)
            }.count
            if fixedCount >= row.minimum { continue }
            diversity.append(
                .init(
                    items: row.items.compactMap { reducedIndex[$0] >= 0 ? reducedIndex[$0] : nil },
                    widths: row.widths, minimum: row.minimum - fixedCount, label: row.label))
        }
        self.reduced = AllocationProblem(
            items: keptItems, budgetRows: rows, diversityRows: diversity, weightUnit: problem.weightUnit)
        self.itemOf = itemOf
        self.optionOf = optionOf
        self.fixed = fixed
        self.lagrangianBound = bound
    }

    /// The incumbent in the reduced program's indices.
    func reduce(_ choice: AllocationProblem.Choice) -> AllocationProblem.Choice {
        itemOf.enumerated().map { reducedItem, item in optionOf[reducedItem].firstIndex(of: choice[item])! }
    }

    /// A reduced solution lifted back to the full program.
    func expand(_ reducedChoice: AllocationProblem.Choice) -> AllocationProblem.Choice {
        var choice = fixed.map { $0 ?? -1 }
        for (reducedItem, item) in itemOf.enumerated() {
            choice[item] = optionOf[reducedItem][reducedChoice[reducedItem]]
        }
        return choice
    }
}
