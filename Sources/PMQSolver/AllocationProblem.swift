/// The PMQ integer program in solver-neutral form: a multiple-choice knapsack with one or more
/// budget rows and optional "at least one item at width w" rows.
///
///     minimise    Σ_i Σ_o cost[i][o] · x[i][o]
///     subject to  Σ_o x[i][o] = 1                          for every item (expert)
///                 Σ_{i∈row} Σ_o weight[i][o] · x[i][o] ≤ capacity(row)   for every budget row
///                 Σ_{i∈row} x[i][o(w)] ≥ 1                 for every diversity row
///                 x binary
///
/// Weights are exact integers (bit-parameters or bytes) and capacities exact rationals, so a
/// solution can be checked without floating-point doubt.
public struct AllocationProblem: Sendable {
    public struct Option: Sendable, Equatable {
        public var width: Int
        /// Exact budget weight: params·width (nominal bits) or packed bytes (effective size).
        public var weight: Int64
        /// Packed bytes at this width (reported, also when the budget is in bits).
        public var bytes: Int64
        /// Importance-weighted error, the objective coefficient.
        public var cost: Double
        public init(width: Int, weight: Int64, bytes: Int64, cost: Double) {
            self.width = width
            self.weight = weight
            self.bytes = bytes
            self.cost = cost
        }
    }

    public struct Item: Sendable {
        /// Position of the item's layer in the profile's layer list.
        public var layer: Int
        /// Expert index (as in the profile).
        public var expert: Int
        public var params: Int64
        /// Options in ascending width order.
        public var options: [Option]
        /// A whole layer at one width (`CostModel.uniformLayers`): its experts, each with its own
        /// options (same widths); the item's options are their sums. Empty for an expert item.
        public var members: [Item]
        public init(layer: Int, expert: Int, params: Int64, options: [Option], members: [Item] = []) {
            self.layer = layer
            self.expert = expert
            self.params = params
            self.options = options
            self.members = members
        }
    }

    /// `Σ weight · denominator ≤ numerator` in exact arithmetic.
    public struct Capacity: Sendable, Equatable {
        public var numerator: Int128
        public var denominator: Int128
        public init(numerator: Int128, denominator: Int128) {
            precondition(denominator > 0)
            self.numerator = numerator
            self.denominator = denominator
        }
        public var value: Double { Double(numerator) / Double(denominator) }
        public func admits(_ weight: Int128) -> Bool { weight * denominator <= numerator }
    }

    public struct BudgetRow: Sendable {
        public var items: [Int]
        public var capacity: Capacity
        public var label: String
        /// Parameters of the row's experts (to state a weight as average bits).
        public var params: Int64
        public init(items: [Int], capacity: Capacity, label: String, params: Int64) {
            self.items = items
            self.capacity = capacity
            self.label = label
            self.params = params
        }
    }

    /// What the weights count: `bits` (params·width) or `bytes` (packed size).
    public enum WeightUnit: String, Sendable {
        case bits, bytes
    }

    /// At least `minimum` of `items` at one of `widths`: MC-MoE's diversity rule (one expert at
    /// width w, `minimum` 1) and the removal limit (at least top-k experts of a layer kept: at a
    /// width other than 0).
    public struct DiversityRow: Sendable {
        public var items: [Int]
        public var widths: Set<Int>
        public var minimum: Int
        public var label: String
        public init(items: [Int], width: Int, label: String) {
            self.init(items: items, widths: [width], minimum: 1, label: label)
        }
        public init(items: [Int], widths: Set<Int>, minimum: Int, label: String) {
            self.items = items
            self.widths = widths
            self.minimum = minimum
            self.label = label
        }

        /// The items of the row the choice puts at one of its widths.
        func count(_ choice: Choice, _ items: [Item]) -> Int {
            self.items.reduce(0) { $0 + (widths.contains(items[$1].options[choice[$1]].width) ? 1 : 0) }
        }
    }

    public var items: [Item]
    public var budgetRows: [BudgetRow]
    public var diversityRows: [DiversityRow]
    public var weightUnit: WeightUnit

    public init(
        items: [Item], budgetRows: [BudgetRow], diversityRows: [DiversityRow] = [], weightUnit: WeightUnit = .bits
    ) {
        self.weightUnit = weightUnit
        self.items = items
        self.budgetRows = budgetRows
        self.diversityRows = diversityRows
    }

    /// Option index per item.
    public typealias Choice = [Int]

    public func objective(_ choice: Choice) -> Double {
        var total = 0.0
        for (item, option) in zip(items, choice) { total += item.options[option].cost }
        return total
    }

    public func rowWeight(_ row: BudgetRow, _ choice: Choice) -> Int128 {
        var total: Int128 = 0
        for index in row.items { total += Int128(items[index].options[choice[index]].weight) }
        return total
    }

    /// Every expert has exactly one option in range, every budget row holds exactly, every
    /// diversity row is met.
    public func isFeasible(_ choice: Choice) -> Bool {
        guard choice.count == items.count else { return false }
        for (item, option) in zip(items, choice) where !item.options.indices.contains(option) { return false }
        for row in budgetRows where !row.capacity.admits(rowWeight(row, choice)) { return false }
        for row in diversityRows where row.count(choice, items) < row.minimum { return false }
        return true
    }

    /// The same program with every budget capacity rounded down to a multiple of the greatest
    /// common divisor of its row's weights: `Σ w ≤ C` ⇔ `Σ w ≤ g·⌊C/g⌋` when g divides every w.
    /// Exact, and it closes the LP gap that a fractional capacity leaves (equal-sized experts
    /// under a bit budget would otherwise leave CBC a gap it cannot prove closed).
    public func strengthened() -> AllocationProblem {
        var copy = self
        for (index, row) in budgetRows.enumerated() {
            let divisor = Int128(rowWeightDivisor(row))
            let units =
                row.capacity.numerator >= 0
                ? row.capacity.numerator / (row.capacity.denominator * divisor)
                : -((-row.capacity.numerator + row.capacity.denominator * divisor - 1)
                    / (row.capacity.denominator * divisor))
            copy.budgetRows[index].capacity = Capacity(numerator: units * divisor, denominator: 1)
        }
        return copy
    }

    /// Greatest common divisor of every option weight in the row (1 if there are none).
    public func rowWeightDivisor(_ row: BudgetRow) -> Int64 {
        var divisor: Int64 = 0
        for index in row.items {
            for option in items[index].options {
                var (a, b) = (divisor, option.weight)
                while b != 0 { (a, b) = (b, a % b) }
                divisor = a
                if divisor == 1 { return 1 }
            }
        }
        return max(divisor, 1)
    }

    public func lightestWeight(_ row: BudgetRow) -> Int128 {
        row.items.reduce(Int128(0)) { $0 + Int128(items[$1].options.map(\.weight).min()!) }
    }

    /// Budget rows that even the lightest assignment overfills: then no assignment fits.
    public func minimumWeightViolations() -> [BudgetRow] {
        budgetRows.filter { !$0.capacity.admits(lightestWeight($0)) }
    }

    /// A weight of `row` in the row's own terms: average bits, or bytes.
    public func describe(weight: Double, of row: BudgetRow) -> String {
        switch weightUnit {
        case .bits: return String(format: "%.4f average bits", weight / Double(row.params))
        case .bytes: return "\(Int64(weight)) bytes (\(formatGB(Int64(weight))))"
        }
    }

    /// Replace each item's option by a lighter one of no higher cost where that keeps every
    /// diversity row met. Never worsens the objective or breaks a budget; makes ties deterministic.
    public func preferLighterOnTies(_ choice: Choice) -> Choice {
        var result = choice
        var rowsOfItem = [[Int]](repeating: [], count: items.count)
        for (rowIndex, row) in diversityRows.enumerated() {
            for index in row.items { rowsOfItem[index].append(rowIndex) }
        }
        for index in items.indices {
            let item = items[index]
            let current = item.options[result[index]]
            // Leaving `current.width` for `width` must not take a row below its minimum.
            func allowed(_ width: Int) -> Bool {
                !rowsOfItem[index].contains { rowIndex in
                    let row = diversityRows[rowIndex]
                    return row.widths.contains(current.width) && !row.widths.contains(width)
                        && row.count(result, items) <= row.minimum
                }
            }
            let lighter = item.options.indices
                .filter {
                    item.options[$0].weight < current.weight && item.options[$0].cost <= current.cost
                        && allowed(item.options[$0].width)
                }
                .min { item.options[$0].weight < item.options[$1].weight }
            if let lighter { result[index] = lighter }
        }
        return result
    }
}
