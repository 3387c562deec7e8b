import Foundation
import Testing

/// The `pmq` executable as a user runs it: exit codes, one-line errors, no partial output.
@Suite struct CLITests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let exampleProfile = packageRoot.appendingPathComponent("examples/profiles/synthetic-mixtral-8x7b.json").path

    /// The pmq binary built beside this test bundle.
    static var binary: URL {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(
            "pmq")
        if FileManager.default.isExecutableFile(atPath: beside.path) { return beside }
        for configuration in ["debug", "release"] {
            let candidate = packageRoot.appendingPathComponent(".build/\(configuration)/pmq")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return beside
    }

    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static func pmq(_ arguments: [String], in directory: String? = nil) throws -> Run {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Run(
            status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
            stderr: String(decoding: stderr, as: UTF8.self))
    }

    /// `pmq arguments…`, expected to succeed (a failure is recorded with its stderr).
    static func succeeds(_ arguments: [String]) throws -> Run {
        let result = try pmq(arguments)
        #expect(result.status == 0, "pmq \(arguments.joined(separator: " ")): \(result.stderr)")
        return result
    }

    static func temporaryDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pmq-cli-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func solvesTheShippedExample() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let report = directory + "/report.json"
        let run = try Self.pmq(["solve", "--profile", Self.exampleProfile, "--bits", "2.5", "--out", report])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("status optimal"))
        let json = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report))) as? [String: Any])
        #expect(json["format"] as? String == "pmq-allocation")
        #expect(json["version"] as? Int == 1)
        #expect(json["status"] as? String == "optimal")
        #expect((json["averageBits"] as? Double).map { $0 <= 2.5 } == true)
        let layers = try #require(json["layers"] as? [[String: Any]])
        #expect(layers.count == 32)
        #expect(layers.allSatisfy { ($0["experts"] as? [[String: Any]])?.count == 8 })
        // No CBC log on stdout without --verbose.
        #expect(!run.stdout.contains("Welcome to the CBC"))
    }

    @Test func infeasibleBudgetFailsCleanly() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let report = directory + "/report.json"
        let run = try Self.pmq(["solve", "--profile", Self.exampleProfile, "--bits", "0.9", "--out", report])
        #expect(run.status != 0)
        #expect(run.stderr.contains("budget cannot be met"))
        #expect(run.stderr.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").count == 1)
        #expect(!FileManager.default.fileExists(atPath: report))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)
    }

    @Test func malformedProfileIsNamedAndWritesNothing() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let profile = directory + "/broken.json"
        let text = try String(contentsOfFile: Self.exampleProfile, encoding: .utf8)
        try text.replacingOccurrences(of: "\"freq\" : ", with: "\"freq\" : -").write(
            toFile: profile, atomically: true, encoding: .utf8)
        let run = try Self.pmq(["solve", "--profile", profile, "--bits", "2.5", "--out", directory + "/r.json"])
        #expect(run.status != 0)
        #expect(run.stderr.contains("broken.json: layers[0].experts[0].freq: must be a finite number ≥ 0"))
        #expect(!FileManager.default.fileExists(atPath: directory + "/r.json"))

        try String(text.prefix(1000)).write(toFile: profile, atomically: true, encoding: .utf8)
        let truncated = try Self.pmq([
            "sweep", "--profile", profile, "--from", "1.5", "--to", "3", "--out", directory + "/front",
        ])
        #expect(truncated.status != 0)
        #expect(truncated.stderr.contains("broken.json: not valid JSON"))
        #expect(!FileManager.default.fileExists(atPath: directory + "/front"))
    }

    @Test func unknownWidthIsNamed() throws {
        let run = try Self.pmq(["solve", "--profile", Self.exampleProfile, "--bits", "2.5", "--widths", "2,4"])
        #expect(run.status != 0)
        #expect(
            run.stderr.contains(
                "synthetic-mixtral-8x7b.json: width 4: was requested but the profile only has widths 1,2,3"))
    }

    /// `bench objective` refuses a budget it cannot run before profiling anything.
    @Test(arguments: [
        ("2.5:1,5", "--budget '2.5:1,5': width 5 is not one of 1, 2, 3, 4, 8"),
        ("0.5:2,3", "--budget '0.5:2,3': 0.5 bits is below the smallest width 2"),
        ("2.5", "--budget '2.5': expected bits:widths"),
    ])
    func objectiveBenchRefusesBadBudgets(budget: String, message: String) throws {
        let run = try Self.pmq(["bench", "objective", "--budget", budget])
        #expect(run.status != 0)
        #expect(run.stderr.contains(message), "\(run.stderr)")
    }

    @Test func sweepWritesTheFront() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let run = try Self.pmq([
            "sweep", "--profile", Self.exampleProfile, "--from", "1.5", "--to", "3.0", "--points", "7",
            "--scope", "layer", "--out", directory + "/front",
        ])
        #expect(run.status == 0, "\(run.stderr)")
        for file in ["front.json", "front.csv", "front.svg"] {
            #expect(FileManager.default.fileExists(atPath: directory + "/front/" + file), "\(file)")
        }
        let csv = try String(contentsOfFile: directory + "/front/front.csv", encoding: .utf8)
        #expect(csv.split(separator: "\n").count == 8)
    }

    @Test func helpIsAContract() throws {
        let solve = try Self.pmq(["solve", "--help"])
        for flag in [
            "--profile", "--bits", "--size", "--widths", "--scope", "--alpha", "--beta", "--mc-diversity",
            "--time-limit", "--out", "--verbose",
        ] {
            #expect(solve.stdout.contains(flag), "solve --help lacks \(flag)")
        }
        let sweep = try Self.pmq(["sweep", "--help"])
        for flag in ["--from", "--to", "--points", "--out", "--save-allocations"] {
            #expect(sweep.stdout.contains(flag), "sweep --help lacks \(flag)")
        }
        let both = try Self.pmq(["solve", "--profile", Self.exampleProfile, "--bits", "2", "--size", "1GB"])
        #expect(both.status != 0)
        #expect(both.stderr.contains("exactly one of --bits and --size"))
    }
}
