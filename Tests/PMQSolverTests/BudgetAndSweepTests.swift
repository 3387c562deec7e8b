import Foundation
import Testing
@testable import ModelFormat
@testable import PMQSolver

@Suite struct BudgetTests {
    @Test func parsesBitsExactly() throws {
        #expect(try Budget.parseBits("2.5") == .bits(numerator: 25, denominator: 10))
        #expect(try Budget.parseBits("3") == .bits(numerator: 3, denominator: 1))
        #expect(try Budget.parseBits("2.54") == .bits(numerator: 254, denominator: 100))
        for bad in ["", "-1", "0", "abc", "2.5.1", "1e3", "٣"] {
            #expect(throws: SolverError.self, "\(bad)") { try Budget.parseBits(bad) }
        }
    }

    @Test func parsesSizes() throws {
        #expect(try Budget.parseSize("11.2GB") == .bytes(11_200_000_000))
        #expect(try Budget.parseSize("1GiB") == .bytes(1 << 30))
        #expect(try Budget.parseSize("900 MiB") == .bytes(900 << 20))
        #expect(try Budget.parseSize("123456789") == .bytes(123_456_789))
        #expect(try Budget.parseSize("1.5KB") == .bytes(1500))
        for bad in ["GB", "-3GB", "12XB", "0GB", "99999999999999TB"] {
            #expect(throws: SolverError.self, "\(bad)") { try Budget.parseSize(bad) }
        }
    }

    @Test func bitBudgetIsExactAtTheBoundary() throws {
        // 8 equal experts at 2.5 bits: exactly four at 3 bits and four at 2 fit, not five.
        let experts = (0..<8).map { index in
            Profile.Expert(index: index, params: 1000, freq: 1, mass: 1, error: [2: 4, 3: 1], bytes: [2: 300, 3: 420])
        }
        let profile = Profile(
            model: .init(name: "t", architecture: "mixtral"), calibration: .init(tokens: 0, description: ""),
            widths: [2, 3], groupSize: 128, layers: [.init(index: 0, experts: experts)])
        let allocation = try Allocator.solve(try CostModel().makeProblem(profile, budget: try Budget.parseBits("2.5")))
        #expect(allocation.choice.filter { $0 == 1 }.count == 4)
        let below = try Allocator.solve(try CostModel().makeProblem(profile, budget: try Budget.parseBits("2.4999")))
        #expect(below.choice.filter { $0 == 1 }.count == 3)
        // Bytes: 8·300 + 2·120 = 2640 allows two experts at 3 bits, 2639 only one.
        #expect(
            try Allocator.solve(try CostModel().makeProblem(profile, budget: .bytes(2640))).choice.filter { $0 == 1 }
                .count == 2)
        #expect(
            try Allocator.solve(try CostModel().makeProblem(profile, budget: .bytes(2639))).choice.filter { $0 == 1 }
                .count == 1)
    }

    @Test func significanceFollowsMCMoE() {
        let layer = Profile.Layer(
            index: 0,
            experts: [
                .init(index: 0, params: 1, freq: 3, mass: 1, error: [:], bytes: [:]),
                .init(index: 1, params: 1, freq: 1, mass: 3, error: [:], bytes: [:]),
            ])
        let s = CostModel(alpha: 1, beta: 1.5).significance(of: layer)
        #expect(abs(s[0] - 0.75 * pow(0.25, 1.5)) < 1e-15)
        #expect(abs(s[1] - 0.25 * pow(0.75, 1.5)) < 1e-15)
        let unreached = Profile.Layer(
            index: 0, experts: [.init(index: 0, params: 1, freq: 0, mass: 0, error: [:], bytes: [:])])
        #expect(CostModel().significance(of: unreached) == [0])
    }
}

@Suite struct SweepTests {
    static func profile() -> Profile {
        var generator = InstanceGenerator(state: 5)
        var layers: [Profile.Layer] = []
        for layer in 0..<4 {
            layers.append(
                .init(
                    index: layer,
                    experts: (0..<8).map { expert in
                        let base = 1 + generator.unit() * 10
                        return .init(
                            index: expert, params: 3 * 4096, freq: generator.unit(), mass: generator.unit(),
                            error: [1: base * 2, 2: base / 4, 3: base / 16],
                            bytes: [1: 1536 + 100, 2: 3072 + 200, 3: 4608 + 200])
                    }))
        }
        return Profile(
            model: .init(name: "sweep", architecture: "mixtral"), calibration: .init(tokens: 0, description: ""),
            widths: [1, 2, 3], groupSize: 128, layers: layers)
    }

    @Test func budgetsAreExactAndEvenlySpaced() throws {
        let budgets = try ParetoSweep.budgets(
            from: try Budget.parseBits("1.5"), to: try Budget.parseBits("3.0"), count: 31)
        #expect(budgets.count == 31)
        #expect(budgets.first!.value == 1.5 && budgets.last!.value == 3.0)
        #expect(abs(budgets[10].value - 2.0) < 1e-15)
        #expect(throws: SolverError.self) {
            try ParetoSweep.budgets(from: .bits(numerator: 3, denominator: 1), to: .bytes(10), count: 3)
        }
        #expect(throws: SolverError.self) {
            try ParetoSweep.budgets(
                from: .bits(numerator: 3, denominator: 1), to: .bits(numerator: 2, denominator: 1), count: 3)
        }
    }

    @Test func frontFallsWithBudgetAndMarksInfeasiblePoints() throws {
        let budgets = try ParetoSweep.budgets(
            from: try Budget.parseBits("0.5"), to: try Budget.parseBits("3.0"), count: 11)
        let result = try ParetoSweep.run(
            profile: Self.profile(), profilePath: "p", model: CostModel(), budgets: budgets,
            options: .init(relativeGap: 0))
        #expect(result.points.prefix(2).allSatisfy { $0.status == "infeasible" }) // 0.5 and 0.75 bits
        let solved = result.points.filter { $0.objective != nil }
        #expect(solved.count == 9)
        for (a, b) in zip(solved, solved.dropFirst()) {
            #expect(b.objective! <= a.objective! * (1 + 1e-12), "loss must not rise with the budget")
            #expect(b.averageBits! <= b.budget + 1e-12)
        }
        #expect(solved.dropFirst().allSatisfy { $0.start != "none" })
        // Every point equals an independent solve from scratch.
        for (point, budget) in zip(result.points, budgets) where point.objective != nil {
            let fresh = try Allocator.solve(
                try CostModel().makeProblem(Self.profile(), budget: budget), options: .init(relativeGap: 0))
            #expect(abs(fresh.objective - point.objective!) <= 1e-9 * fresh.objective)
        }
    }

    @Test func dominanceIsStrictPareto() {
        func point(_ bits: Double, _ loss: Double) -> ParetoSweep.Point {
            .init(
                budgetKind: "bits", budget: bits, status: "optimal", objective: loss, bound: loss, gap: 0,
                averageBits: bits, effectiveBits: bits, bytes: 1, seconds: 0, start: nil, dominated: false)
        }
        var points = [point(2, 10), point(2.5, 10), point(3, 4), point(3, 5), point(3.5, 4)]
        ParetoSweep.markDominated(&points)
        #expect(points.map(\.dominated) == [false, true, false, true, true])
    }

    @Test func writesJSONCSVAndSVG() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pmq-front-\(UUID().uuidString)")
            .path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let budgets = try ParetoSweep.budgets(
            from: try Budget.parseBits("1.5"), to: try Budget.parseBits("3.0"), count: 7)
        let result = try ParetoSweep.run(
            profile: Self.profile(), profilePath: "p", model: CostModel(), budgets: budgets, options: .init())
        try FrontWriters.write(
            result, profile: Self.profile(), profilePath: "p", model: CostModel(), directory: directory,
            saveAllocations: true)
        let csv = try String(contentsOfFile: directory + "/front.csv", encoding: .utf8)
        #expect(csv.split(separator: "\n").count == 8)
        let json =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/front.json")))
            as? [String: Any]
        #expect((json?["points"] as? [Any])?.count == 7)
        let svg = try String(contentsOfFile: directory + "/front.svg", encoding: .utf8)
        #expect(
            svg.hasPrefix("<svg") && svg.contains("average bits per expert parameter") && svg.contains("predicted loss")
        )
        #expect(svg.contains("<polyline"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory + "/allocations").count == 7)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).allSatisfy { !$0.hasSuffix(".tmp") })
    }
}
