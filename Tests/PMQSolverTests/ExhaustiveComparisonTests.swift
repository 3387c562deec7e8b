import Testing
@testable import ModelFormat
@testable import PMQSolver

/// CBC's optimum against exhaustive enumeration on hundreds of small random programs.
@Suite struct ExhaustiveComparisonTests {
    /// Relative tolerance on objectives: CBC is asked for a zero gap.
    static let objectiveTolerance = 1e-9

    /// Independent budget check straight from the profile, in exact integer arithmetic.
    static func withinBudget(_ profile: Profile, _ bits: [[Int]], budget: Budget, scope: CostModel.Scope) -> Bool {
        let groups: [[(Profile.Expert, Int)]] =
            scope == .global
            ? [zip(profile.layers.flatMap(\.experts), bits.flatMap { $0 }).map { ($0, $1) }]
            : zip(profile.layers, bits).map { layer, widths in zip(layer.experts, widths).map { ($0, $1) } }
        let totalParams = Int128(profile.totalParams)
        for group in groups {
            let params = group.reduce(Int128(0)) { $0 + Int128($1.0.params) }
            switch budget {
            case let .bits(numerator, denominator):
                let used = group.reduce(Int128(0)) { $0 + Int128($1.0.params) * Int128($1.1) }
                if used * denominator > numerator * params { return false }
            case let .bytes(limit):
                let used = group.reduce(Int128(0)) { $0 + Int128($1.0.bytes[$1.1]!) }
                // A layer's share of a byte budget is proportional to its parameters.
                if used * totalParams > Int128(limit) * params { return false }
            }
        }
        return true
    }

    static func widthsPerLayer(_ problem: AllocationProblem, _ choice: AllocationProblem.Choice, layers: Int) -> [[Int]]
    {
        var result = [[Int]](repeating: [], count: layers)
        for (item, option) in zip(problem.items, choice) { result[item.layer].append(item.options[option].width) }
        return result
    }

    @Test(arguments: 0..<8)
    func cbcMatchesEnumeration(batch: Int) throws {
        var generator = InstanceGenerator(state: UInt64(1000 + batch))
        var solved = 0, infeasible = 0, partlyFixed = 0
        for _ in 0..<40 {
            let profile = generator.profile()
            let scope: CostModel.Scope = generator.int(0...1) == 0 ? .global : .layer
            let diversity = generator.int(0...2) == 0
            let byBytes = generator.int(0...1) == 0
            var subset: [Int]? = nil
            if profile.widths.count > 2, generator.int(0...2) == 0 { subset = Array(profile.widths.dropFirst()) }
            let model = CostModel(
                alpha: generator.int(0...1) == 0 ? 1 : 0.5 + generator.unit(),
                beta: [0, 1, 1.5][generator.int(0...2)], scope: scope, diversity: diversity, widths: subset)
            let budget = generator.budget(for: profile, bytes: byBytes)
            let problem = try model.makeProblem(profile, budget: budget)
            let reference = ExhaustiveSolver.solve(problem)
            for fixing in [true, false] {
                do {
                    let allocation = try Allocator.solve(
                        problem, options: SolveOptions(relativeGap: 0, reducedCostFixing: fixing))
                    let expected = try #require(reference, "CBC found an allocation where enumeration found none")
                    solved += 1
                    if fixing, allocation.fixedExperts > 0, allocation.cbcColumns > 0 { partlyFixed += 1 }
                    #expect(allocation.status == .optimal)
                    let scale = max(abs(expected.objective), 1e-12)
                    #expect(
                        abs(allocation.objective - expected.objective) <= Self.objectiveTolerance * scale,
                        Comment(
                            rawValue: "CBC \(allocation.objective) vs enumeration \(expected.objective), "
                                + "scope \(scope), diversity \(diversity), budget \(budget), fixing \(fixing)")
                    )
                    #expect(problem.isFeasible(allocation.choice))
                    #expect(allocation.choice.count == profile.expertCount)
                    let widths = Self.widthsPerLayer(problem, allocation.choice, layers: profile.layers.count)
                    #expect(zip(widths, profile.layers).allSatisfy { $0.count == $1.experts.count })
                    #expect(Self.withinBudget(profile, widths, budget: budget, scope: scope))
                    #expect(allocation.bound <= allocation.objective * (1 + 1e-9) + 1e-12)
                    if diversity, problem.items.first!.options.count >= 2 {
                        let candidate = problem.items.first!.options.map(\.width)
                        for (layer, layerWidths) in zip(profile.layers, widths) where layer.experts.count >= 2 {
                            #expect(layerWidths.contains(candidate[candidate.count - 1]))
                            #expect(layerWidths.contains(candidate[candidate.count - 2]))
                        }
                    }
                } catch let error as SolverError {
                    guard case .infeasibleBudget = error else { throw error }
                    #expect(
                        reference == nil,
                        "the solver said infeasible but enumeration found \(String(describing: reference))")
                    infeasible += 1
                }
            }
        }
        #expect(solved > 40, "too few feasible instances to mean anything")
        _ = infeasible
        #expect(partlyFixed > 0, "no instance exercised CBC on a reduced core")
    }

    @Test func greedyBracketsTheOptimum() throws {
        var generator = InstanceGenerator(state: 77)
        for _ in 0..<200 {
            let profile = generator.profile()
            let scope: CostModel.Scope = generator.int(0...1) == 0 ? .global : .layer
            let problem = try CostModel(scope: scope).makeProblem(
                profile, budget: generator.budget(for: profile, bytes: generator.int(0...1) == 0))
            guard let reference = ExhaustiveSolver.solve(problem) else {
                #expect(GreedyRelaxation.solve(problem) == nil)
                #expect(!problem.minimumWeightViolations().isEmpty)
                continue
            }
            let greedy = try #require(GreedyRelaxation.solve(problem))
            let tolerance = 1e-9 * max(abs(reference.objective), 1e-12)
            #expect(greedy.bound <= reference.objective + tolerance, "LP bound above the optimum")
            #expect(greedy.objective >= reference.objective - tolerance)
            #expect(problem.isFeasible(greedy.choice))
        }
    }

    @Test func lowerHullKeepsOnlyImprovingConvexPoints() {
        func option(_ weight: Int64, _ cost: Double) -> AllocationProblem.Option {
            .init(width: Int(weight), weight: weight, bytes: weight, cost: cost)
        }
        // (1,10) (2,4) (3,3.5) (4,1): (3,3.5) lies above the segment (2,4)→(4,1).
        #expect(GreedyRelaxation.lowerHull([option(1, 10), option(2, 4), option(3, 3.5), option(4, 1)]) == [0, 1, 3])
        // A heavier option that costs more is never on the hull.
        #expect(GreedyRelaxation.lowerHull([option(1, 5), option(2, 6)]) == [0])
        // Equal weights: the cheaper one.
        #expect(GreedyRelaxation.lowerHull([option(2, 5), option(2, 3)]) == [1])
    }
}

/// Width 0 (removal) in the program: CBC against enumeration, and every layer keeps at least
/// top-k experts, checked straight from the widths.
@Suite struct RemovalProgramTests {
    /// `profile` with width 0 added: no bytes, an error above the lowest width's (or 0 for an
    /// expert no token reached), and a top-k of 1 to the layer size.
    static func withRemoval(_ profile: Profile, _ generator: inout InstanceGenerator) -> Profile {
        var copy = profile
        copy.widths = [0] + profile.widths
        let smallest = profile.layers.map(\.experts.count).min()!
        copy.model.topK = generator.int(1...smallest)
        for l in copy.layers.indices {
            for e in copy.layers[l].experts.indices {
                let expert = copy.layers[l].experts[e]
                let lowest = expert.error[profile.widths[0]]!
                let removal = expert.freq == 0 ? 0 : lowest * (1 + 3 * generator.unit())
                copy.layers[l].experts[e].error = WidthMap([(0, removal)] + expert.error.entries)
                copy.layers[l].experts[e].bytes = WidthMap([(0, 0)] + expert.bytes.entries)
            }
        }
        return copy
    }

    @Test(arguments: 0..<4)
    func cbcMatchesEnumerationAndKeepsTopK(batch: Int) throws {
        var generator = InstanceGenerator(state: UInt64(5000 + batch))
        var solved = 0, removing = 0
        for _ in 0..<40 {
            let profile = Self.withRemoval(generator.profile(maxAssignments: 8_000), &generator)
            let scope: CostModel.Scope = generator.int(0...1) == 0 ? .global : .layer
            let model = CostModel(scope: scope, diversity: generator.int(0...2) == 0)
            var budget = generator.budget(for: profile, bytes: generator.int(0...1) == 0)
            if case .bits = budget, generator.int(0...1) == 0 {
                budget = .bits(numerator: Int128(generator.int(10...150)), denominator: 100) // below 1.5 bits
            }
            let problem = try model.makeProblem(profile, budget: budget)
            let reference = ExhaustiveSolver.solve(problem)
            do {
                let allocation = try Allocator.solve(problem, options: SolveOptions(relativeGap: 0))
                let expected = try #require(reference)
                solved += 1
                let scale = max(abs(expected.objective), 1e-12)
                #expect(abs(allocation.objective - expected.objective) <= 1e-9 * scale)
                let widths = ExhaustiveComparisonTests.widthsPerLayer(
                    problem, allocation.choice, layers: profile.layers.count)
                for (layer, layerWidths) in zip(profile.layers, widths) {
                    let kept = layerWidths.filter { $0 != 0 }.count
                    #expect(
                        kept >= min(profile.model.topK!, layer.experts.count), "layer \(layer.index): \(layerWidths)")
                }
                if widths.joined().contains(0) { removing += 1 }
                #expect(ExhaustiveComparisonTests.withinBudget(profile, widths, budget: budget, scope: scope))
            } catch let error as SolverError {
                guard case .infeasibleBudget = error else { throw error }
                #expect(reference == nil)
            }
        }
        #expect(solved >= 12, "solved \(solved)")
        #expect(removing >= 4, "with removals \(removing)")
    }
}
