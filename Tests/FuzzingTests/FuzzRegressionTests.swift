import Foundation
import Testing
import TestSupport

@testable import Fuzzing

/// Every input the fuzzer (or issue 15's hand-made search) ever found, replayed through its reader:
/// each must be refused, and none may trap. New findings go in `Tests/Fixtures/fuzz/FORMAT/`.
@Suite struct FuzzRegressionTests {
    static let corpus = TestFixtures.root.appendingPathComponent("fuzz").path

    @Test func everyCommittedFindingIsRefused() throws {
        let formats = try FileManager.default.contentsOfDirectory(atPath: Self.corpus).sorted()
        #expect(formats.count >= 6)
        var replayed = 0
        for format in formats {
            let target = try #require(FuzzTarget.all.first { $0.name == format }, "no fuzz target named \(format)")
            let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("fuzz-\(UUID().uuidString)")
                .path
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            for name in try FileManager.default.contentsOfDirectory(atPath: Self.corpus + "/" + format).sorted() {
                let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.corpus + "/\(format)/\(name)")))
                #expect(throws: (any Error).self, "\(format)/\(name) was accepted") { try target.read(bytes, scratch) }
                replayed += 1
            }
        }
        #expect(replayed >= 10)
    }

    @Test func seedsAreAcceptedAndCasesAreReproducible() throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("fuzz-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        for target in FuzzTarget.all {
            try target.read(target.seed, scratch)
            #expect(
                Fuzzer.input(target: target, seed: 7, index: 42) == Fuzzer.input(target: target, seed: 7, index: 42))
            let distinct = Set((0..<50).map { Fuzzer.input(target: target, seed: 7, index: $0) })
            #expect(distinct.count > 40, "\(target.name): mutations repeat")
        }
    }

    /// A short run through every reader: all cases accepted or refused, some of each.
    @Test func aShortRunFindsNothingAndExercisesBothOutcomes() throws {
        var options = Fuzzer.Options()
        options.cases = 300
        for report in try Fuzzer(options: options).run() {
            #expect(report.cases == 300 && report.hangs == 0)
            #expect(report.refused > 0 && report.accepted > 0, "\(report.format): \(report.accepted) accepted")
        }
    }
}
