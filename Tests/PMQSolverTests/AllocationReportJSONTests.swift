import Foundation
import ModelFormat
import Testing

@testable import PMQSolver

/// The allocation report's own writer (`PrettyJSONWritable`) against the tree encoder it replaces
/// (`PrettyJSONEncoder`) and Foundation's `JSONEncoder`: the same bytes for solved reports and for
/// reports with every optional absent or present and awkward numbers and strings.
@Suite struct AllocationReportJSONTests {
    static func written(_ report: AllocationReport) throws -> Data {
        var writer = PrettyJSONWriter()
        try report.write(to: &writer)
        return Data(writer.bytes)
    }

    static func foundation(_ report: AllocationReport) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(report)
    }

    @Test func solvedReportsAreWrittenAsTheEncoderWritesThem() throws {
        var generator = InstanceGenerator(state: 404)
        var compared = 0
        for round in 0..<40 {
            let profile = generator.profile()
            let scope = CostModel.Scope.allCases[round % CostModel.Scope.allCases.count]
            let model = CostModel(scope: scope, diversity: round % 3 == 0)
            let budget = generator.budget(for: profile, bytes: round % 2 == 0)
            guard let problem = try? model.makeProblem(profile, budget: budget),
                let allocation = try? Allocator.solve(problem)
            else { continue }
            let report = AllocationReport(
                profile: profile, profilePath: "p\(round).json", problem: problem, allocation: allocation,
                budget: budget, model: model, options: .init(timeLimit: round % 4 == 0 ? 30 : nil))
            let written = try Self.written(report)
            #expect(written == (try PrettyJSONEncoder.encode(report)), "round \(round)")
            #expect(written == (try Self.foundation(report)), "round \(round)")
            compared += 1
        }
        #expect(compared >= 30)
    }

    @Test func optionalsNumbersAndStringsAreWrittenAsTheEncoderWritesThem() throws {
        var generator = InstanceGenerator(state: 405)
        let profile = generator.profile()
        let model = CostModel()
        let budget = generator.budget(for: profile, bytes: false)
        let problem = try model.makeProblem(profile, budget: budget)
        var report = AllocationReport(
            profile: profile, profilePath: "p.json", problem: problem, allocation: try Allocator.solve(problem),
            budget: budget, model: model, options: .init())
        let doubles: [Double] = [
            0, -0.0, 1, -1, 0.1, 1e-300, 5e-324, 1e21, 1e22, 123456789012345680, 1.7976931348623157e308, 2.5e-7,
            -3.25, 1 / 3,
        ]
        let strings = ["", "a\"b\\c", "tab\there\nnew", "\u{1}\u{1f}", "ünïcødé ✓", "/slash/", "𝔘"]
        let integers: [Int64] = [0, -1, Int64.max, Int64.min, 1_000_000_007]
        for index in 0..<28 {
            report.parameters.importance = index % 2 == 0 ? nil : strings[index % strings.count]
            report.parameters.layerSensitivity = index % 3 == 0 ? nil : index % 2 == 0
            report.parameters.uniformLayers = index % 5 == 0 ? nil : index % 3 == 0
            report.parameters.timeLimit = index % 4 == 0 ? nil : doubles[index % doubles.count]
            report.parameters.calibration = index % 6 == 0 ? nil : strings[(index + 1) % strings.count]
            report.parameters.widths = index % 7 == 0 ? [] : Array(profile.widths.prefix(index % 4 + 1))
            report.objective = doubles[index % doubles.count]
            report.bound = -doubles[(index + 3) % doubles.count]
            report.bytes = integers[index % integers.count]
            report.start = strings[index % strings.count]
            report.widthCounts = index % 7 == 1 ? [:] : ["0": index, "10": 2, "2": -index, "3": 4]
            if index % 9 == 2 { report.layers = [] }
            if !report.layers.isEmpty, index % 5 == 3 { report.layers[0].experts = [] }
            if !report.layers.isEmpty, !report.layers[0].experts.isEmpty {
                report.layers[0].experts[0].cost = doubles[(index + 5) % doubles.count]
                report.layers[0].experts[0].bytes = integers[(index + 2) % integers.count]
            }
            let written = try Self.written(report)
            #expect(
                written == (try PrettyJSONEncoder.encode(report)),
                "case \(index): \(String(decoding: written.prefix(400), as: UTF8.self))")
            #expect(written == (try Self.foundation(report)), "case \(index)")
        }
    }

    /// A non-finite number is refused, as the encoders refuse it.
    @Test func nonFiniteNumbersAreRefused() throws {
        var generator = InstanceGenerator(state: 406)
        let profile = generator.profile()
        let budget = generator.budget(for: profile, bytes: false)
        let problem = try CostModel().makeProblem(profile, budget: budget)
        var report = AllocationReport(
            profile: profile, profilePath: "p.json", problem: problem, allocation: try Allocator.solve(problem),
            budget: budget, model: CostModel(), options: .init())
        report.gap = .nan
        #expect(throws: (any Error).self) { _ = try Self.written(report) }
        #expect(throws: (any Error).self) { _ = try AtomicFile.jsonData(report) }
    }
}
