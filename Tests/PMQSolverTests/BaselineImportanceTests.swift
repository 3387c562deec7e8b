import Foundation
import Testing
@testable import ModelFormat
@testable import PMQSolver

/// The size-matched baselines: same program and budget, costs that ignore the measured errors.
@Suite struct BaselineImportanceTests {
    /// 8 equal experts whose measured errors say the *rarest* expert is the most sensitive.
    static func profile() -> Profile {
        let experts = (0..<8).map { (index: Int) -> Profile.Expert in
            let share = Double(8 - index)
            let error: [Int: Double] = [2: 1 + Double(index * index), 3: 0.1]
            let bytes: [Int: Int64] = [2: 300, 3: 420]
            return Profile.Expert(
                index: index, params: 1000, freq: share, mass: share, error: WidthMap(error), bytes: WidthMap(bytes))
        }
        return Profile(
            model: .init(name: "t", architecture: "mixtral"), calibration: .init(tokens: 0, description: ""),
            widths: [2, 3], groupSize: 128, layers: [.init(index: 0, experts: experts)])
    }

    @Test func frequencyBaselineUpgradesTheMostFrequentExperts() throws {
        let problem = try CostModel(importance: .frequency).makeProblem(
            Self.profile(), budget: try Budget.parseBits("2.5"))
        let allocation = try Allocator.solve(problem)
        // Widths are option indices: 1 = 3 bits. The four most frequent experts (0…3) get 3 bits.
        #expect(allocation.choice == [1, 1, 1, 1, 0, 0, 0, 0])
        // Cost is freq_e/Σfreq · params · 4^-b, independent of the measured errors.
        let option = problem.items[0].options[0]
        #expect(abs(option.cost - 8.0 / 36.0 * 1000 * pow(4, -2)) < 1e-12)
    }

    @Test func measuredImportanceUsesTheErrors() throws {
        let allocation = try Allocator.solve(
            try CostModel().makeProblem(Self.profile(), budget: try Budget.parseBits("2.5")))
        #expect(allocation.choice != [1, 1, 1, 1, 0, 0, 0, 0])
        #expect(allocation.choice.filter { $0 == 1 }.count == 4)
    }

    @Test func randomBaselineIsSeededAndSpendsTheSameBudget() throws {
        let profile = Self.profile()
        func solve(_ seed: UInt64) throws -> [Int] {
            try Allocator.solve(
                try CostModel(importance: .random(seed: seed)).makeProblem(profile, budget: try Budget.parseBits("2.5"))
            ).choice
        }
        let first = try solve(7)
        #expect(try solve(7) == first)
        #expect(first.filter { $0 == 1 }.count == 4)
        let seeds: [UInt64] = [1, 2, 3, 4, 5, 6]
        #expect(Set(try seeds.map(solve)).count > 1, "different seeds should give different allocations")
    }
}

/// Layer sensitivity: layers trade bits by measured end-to-end loss, not by raw layer-local error.
@Suite struct LayerSensitivityCostTests {
    /// Two layers of 4 equal experts; layer 1's raw errors are 4× layer 0's.
    static func profile(sensitivities: (Double, Double)?) -> Profile {
        func layer(_ index: Int, scale: Double, delta: Double?) -> Profile.Layer {
            let experts = (0..<4).map { (expert: Int) -> Profile.Expert in
                let error: [Int: Double] = [2: 4 * scale, 3: 1 * scale]
                let bytes: [Int: Int64] = [2: 300, 3: 420]
                return Profile.Expert(
                    index: expert, params: 1000, freq: 1, mass: 1, error: WidthMap(error), bytes: WidthMap(bytes))
            }
            return Profile.Layer(
                index: index, experts: experts, sensitivity: delta.map { .init(width: 2, deltaNLL: $0) })
        }
        return Profile(
            model: .init(name: "t", architecture: "mixtral"), calibration: .init(tokens: 0, description: ""),
            widths: [2, 3], groupSize: 128,
            layers: [layer(0, scale: 1, delta: sensitivities?.0), layer(1, scale: 4, delta: sensitivities?.1)])
    }

    @Test func measuredSensitivityMovesBitsToTheLayerThatHurtsTheLoss() throws {
        let budget = try Budget.parseBits("2.5")
        // Raw errors alone: layer 1 (larger errors) gets the 3-bit experts.
        let raw = try Allocator.solve(try CostModel().makeProblem(Self.profile(sensitivities: nil), budget: budget))
            .choice
        #expect(raw == [0, 0, 0, 0, 1, 1, 1, 1])
        // Layer 0 costs 0.4 nats at 2 bits, layer 1 only 0.1: layer 0 gets them.
        let model = CostModel()
        let profile = Self.profile(sensitivities: (0.4, 0.1))
        #expect(model.appliesLayerSensitivity(profile))
        let problem = try model.makeProblem(profile, budget: budget)
        #expect(try Allocator.solve(problem).choice == [1, 1, 1, 1, 0, 0, 0, 0])
        // Rescaled, quantizing a whole layer at the reference width costs its ΔNLL.
        let s = 0.25 * pow(0.25, 1.5)
        #expect(
            abs(problem.items[0].options[0].cost * 4 - 0.4) < 1e-12
                && abs(problem.items[4].options[0].cost * 4 - 0.1) < 1e-12)
        #expect(abs(problem.items[0].options[0].cost - 0.4 / (4 * s * 4) * s * 4) < 1e-12)
        // Not applied when switched off, for baselines, or per layer.
        for other in [CostModel(layerSensitivity: false), CostModel(importance: .frequency), CostModel(scope: .layer)] {
            #expect(!other.appliesLayerSensitivity(profile))
        }
    }
}

/// `--uniform-layers`: one width per layer, optimal among all per-layer assignments of the
/// per-expert program (enumerated), and reported expert by expert.
@Suite struct UniformLayersTests {
    @Test func optimalAmongPerLayerAssignments() throws {
        var generator = InstanceGenerator(state: 77)
        var checked = 0
        for _ in 0..<60 {
            let profile = generator.profile()
            for scope in CostModel.Scope.allCases {
                let budget = generator.budget(for: profile, bytes: generator.int(0...1) == 0)
                let perExpert = try CostModel(scope: scope).makeProblem(profile, budget: budget)
                let uniform = try CostModel(scope: scope, uniformLayers: true).makeProblem(profile, budget: budget)
                #expect(uniform.items.count == profile.layers.count)
                // Enumerate one width per layer on the per-expert program.
                let widths = profile.widths.count, layers = profile.layers.count
                var best: Double? = nil
                var code = 0
                while code < Int(pow(Double(widths), Double(layers))) {
                    var rest = code
                    let layerChoice = (0..<layers).map { _ in
                        defer { rest /= widths }; return rest % widths
                    }
                    let choice = perExpert.items.map { layerChoice[$0.layer] }
                    if perExpert.isFeasible(choice) {
                        let objective = perExpert.objective(choice)
                        best = min(best ?? objective, objective)
                    }
                    code += 1
                }
                guard let best else {
                    #expect(throws: SolverError.self) { try Allocator.solve(uniform) }
                    continue
                }
                let allocation = try Allocator.solve(uniform)
                #expect(
                    abs(allocation.objective - best) <= 1e-9 * max(1, abs(best)),
                    "scope \(scope): \(allocation.objective) vs \(best)")
                let report = AllocationReport(
                    profile: profile, profilePath: "p.json", problem: uniform, allocation: allocation, budget: budget,
                    model: CostModel(scope: scope, uniformLayers: true), options: .init())
                #expect(report.layers.map(\.experts.count) == profile.layers.map(\.experts.count))
                #expect(report.layers.allSatisfy { Set($0.experts.map(\.bits)).count == 1 })
                checked += 1
            }
        }
        #expect(checked > 40)
        #expect(throws: SolverError.self) {
            try CostModel(diversity: true, uniformLayers: true).makeProblem(
                generator.profile(), budget: .bits(numerator: 3, denominator: 1))
        }
    }
}
