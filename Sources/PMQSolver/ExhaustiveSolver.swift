/// Enumerates every assignment: the obviously right reference the CBC path is tested against.
/// Only for small problems (the product of option counts must stay below `limit`).
public enum ExhaustiveSolver {
    public static func solve(_ problem: AllocationProblem, limit: Int = 5_000_000) -> (
        choice: AllocationProblem.Choice, objective: Double
    )? {
        let counts = problem.items.map(\.options.count)
        var total = 1
        for count in counts {
            total *= count
            precondition(total <= limit, "exhaustive enumeration over \(total)+ assignments is too large")
        }
        var choice = [Int](repeating: 0, count: counts.count)
        var best: (AllocationProblem.Choice, Double)? = nil
        for _ in 0..<total {
            if problem.isFeasible(choice) {
                let objective = problem.objective(choice)
                if best == nil || objective < best!.1 { best = (choice, objective) }
            }
            // Next assignment in mixed-radix order.
            var position = 0
            while position < counts.count {
                choice[position] += 1
                if choice[position] < counts[position] { break }
                choice[position] = 0
                position += 1
            }
        }
        return best.map { (choice: $0.0, objective: $0.1) }
    }
}
