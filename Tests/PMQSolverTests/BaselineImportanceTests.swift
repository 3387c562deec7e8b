import Foundation
import Testing
@testable import PMQSolver

/// The size-matched baselines: same program and budget, costs that ignore the measured errors.
@Suite struct BaselineImportanceTests {
    /// 8 equal experts whose measured errors say the *rarest* expert is the most sensitive.
    static func profile() -> Profile {
        let experts = (0..<8).map { (index: Int) -> Profile.Expert in
            let share = Double(8 - index)
            let error: [Int: Double] = [2: 1 + Double(index * index), 3: 0.1]
            let bytes: [Int: Int64] = [2: 300, 3: 420]
            return Profile.Expert(index: index, params: 1000, freq: share, mass: share, error: error, bytes: bytes)
        }
        return Profile(model: .init(name: "t", architecture: "mixtral"), calibration: .init(tokens: 0, description: ""),
                       widths: [2, 3], groupSize: 128, layers: [.init(index: 0, experts: experts)])
    }

    @Test func frequencyBaselineUpgradesTheMostFrequentExperts() throws {
        let problem = try CostModel(importance: .frequency).makeProblem(Self.profile(), budget: try Budget.parseBits("2.5"))
        let allocation = try Allocator.solve(problem)
        // Widths are option indices: 1 = 3 bits. The four most frequent experts (0…3) get 3 bits.
        #expect(allocation.choice == [1, 1, 1, 1, 0, 0, 0, 0])
        // Cost is freq_e/Σfreq · params · 4^-b, independent of the measured errors.
        let option = problem.items[0].options[0]
        #expect(abs(option.cost - 8.0 / 36.0 * 1000 * pow(4, -2)) < 1e-12)
    }

    @Test func measuredImportanceUsesTheErrors() throws {
        let allocation = try Allocator.solve(try CostModel().makeProblem(Self.profile(), budget: try Budget.parseBits("2.5")))
        #expect(allocation.choice != [1, 1, 1, 1, 0, 0, 0, 0])
        #expect(allocation.choice.filter { $0 == 1 }.count == 4)
    }

    @Test func randomBaselineIsSeededAndSpendsTheSameBudget() throws {
        let profile = Self.profile()
        func solve(_ seed: UInt64) throws -> [Int] {
            try Allocator.solve(try CostModel(importance: .random(seed: seed)).makeProblem(profile, budget: try Budget.parseBits("2.5"))).choice
        }
        let first = try solve(7)
        #expect(try solve(7) == first)
        #expect(first.filter { $0 == 1 }.count == 4)
        let seeds: [UInt64] = [1, 2, 3, 4, 5, 6]
        #expect(Set(try seeds.map(solve)).count > 1, "different seeds should give different allocations")
    }
}
