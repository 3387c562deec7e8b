import Foundation
import Testing

/// Issue 15's fault test: `profile` (with its quantization cache), `quantize` and `sweep` are
/// killed with SIGKILL at random points, again and again, then run to the end. The result must
/// equal an uninterrupted run's (timings aside), and nothing may be left beside it.
///
/// `PMQ_FAULT_KILLS` (default 3 per command) and `PMQ_FAULT_SEED` (default 1) set the long run
/// whose figures are in the README: `PMQ_FAULT_KILLS=100 swift test --filter FaultCLITests`.
@Suite(.serialized) struct FaultCLITests {
    static let environment = ProcessInfo.processInfo.environment
    static let kills = environment["PMQ_FAULT_KILLS"].flatMap { Int($0) }.map { max(1, $0) } ?? 3
    static let seed = environment["PMQ_FAULT_SEED"].flatMap { UInt64($0) } ?? 1

    /// SplitMix64: kill times that the seed reproduces.
    struct KillClock {
        var state: UInt64
        mutating func next() -> Double {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Double((z ^ (z >> 31)) >> 11) / Double(1 << 53)
        }
    }

    /// Inputs shared by the three commands: calibration tokens, a profile and an allocation.
    static func prepare(_ directory: String) throws -> (calib: String, profile: String, allocation: String) {
        let calib = try PackAndRunCLITests.calibration(in: directory)
        _ = try CLITests.succeeds(profileArguments(calib: calib, out: directory + "/inputs-profile.json", cache: nil))
        _ = try CLITests.succeeds([
            "solve", "--profile", directory + "/inputs-profile.json", "--bits", "1.75", "--out",
            directory + "/inputs-allocation.json",
        ])
        return (calib, directory + "/inputs-profile.json", directory + "/inputs-allocation.json")
    }

    static func profileArguments(calib: String, out: String, cache: String?) -> [String] {
        [
            "profile", "--model", PackAndRunCLITests.mixtral, "--calib", calib, "--samples", "8", "--seq-len", "16",
            "--group-size", "16", "--widths", "0,1,2,3", "--sensitivity-windows", "2", "--out", out, "--quiet",
        ] + (cache.map { ["--cache", $0] } ?? [])
    }

    /// A JSON document without its timings (`seconds` anywhere), for comparing two runs.
    static func withoutTimings(_ value: Any, also keys: Set<String> = []) -> Any {
        if let object = value as? [String: Any] {
            return object.filter { $0.key != "seconds" && !keys.contains($0.key) }.mapValues {
                withoutTimings($0, also: keys)
            }
        }
        if let array = value as? [Any] { return array.map { withoutTimings($0, also: keys) } }
        return value
    }

    /// Every file under `paths` (a file or a folder), keyed by its path below `directory`, with JSON
    /// and CSV timings removed.
    static func contents(_ paths: [String], in directory: String) throws -> [String: Data] {
        var result: [String: Data] = [:]
        func add(_ relative: String) throws {
            let path = directory + "/" + relative
            var data = try Data(contentsOf: URL(fileURLWithPath: path))
            if relative.hasSuffix(".json") {
                let object = withoutTimings(try JSONSerialization.jsonObject(with: data))
                data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            } else if relative.hasSuffix(".csv") {
                let rows = String(decoding: data, as: UTF8.self).split(separator: "\n").map {
                    $0.split(separator: ",", omittingEmptySubsequences: false)
                }
                let timing = rows.first?.firstIndex(of: "seconds")
                data = Data(
                    rows.map { row in
                        row.enumerated().filter { $0.offset != timing }.map { $0.element }.joined(separator: ",")
                    }.joined(separator: "\n").utf8)
            }
            result[relative] = data
        }
        for name in paths {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory + "/" + name, isDirectory: &isDirectory) else {
                continue
            }
            if !isDirectory.boolValue {
                try add(name)
                continue
            }
            for sub in try FileManager.default.subpathsOfDirectory(atPath: directory + "/" + name) {
                var subIsDirectory: ObjCBool = false
                _ = FileManager.default.fileExists(atPath: directory + "/\(name)/\(sub)", isDirectory: &subIsDirectory)
                if !subIsDirectory.boolValue { try add(name + "/" + sub) }
            }
        }
        return result
    }

    /// Runs `arguments(outputs)` to the end once as the reference, then kills it `kills` times at
    /// uniformly random points of the reference's duration (each run continuing what the last
    /// left), then lets it finish; compares the outputs and looks for anything left over.
    func killAndRerun(
        _ command: String, outputs: [String], arguments: ([String]) -> [String], directory: String,
        clock: inout KillClock
    ) throws {
        let start = Date()
        _ = try CLITests.succeeds(arguments(outputs.map { directory + "/reference-" + $0 }))
        let duration = Date().timeIntervalSince(start)
        let before = Set(try FileManager.default.contentsOfDirectory(atPath: directory))
        var killedWhileRunning = 0, finished = 0
        let faultedOutputs = outputs.map { directory + "/faulted-" + $0 }
        for _ in 0..<Self.kills {
            let process = Process()
            process.executableURL = CLITests.binary
            process.arguments = arguments(faultedOutputs)
            process.standardOutput = FileHandle.nullDevice
            let errors = FileManager.default.temporaryDirectory.appendingPathComponent("fault-\(UUID().uuidString)")
            _ = FileManager.default.createFile(atPath: errors.path, contents: nil)
            defer { try? FileManager.default.removeItem(at: errors) }
            process.standardError = try FileHandle(forWritingTo: errors)
            try process.run()
            let deadline = Date().addingTimeInterval(clock.next() * duration)
            while process.isRunning, Date() < deadline { usleep(500) }
            if process.isRunning { killedWhileRunning += 1 }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            if process.terminationReason == .exit {
                // It finished before the kill: check it, then start the next series from nothing. A
                // packed model is never overwritten: when the killed run had already put it in place,
                // the next run refuses, and that model must be whole.
                let stderr = (try? String(contentsOf: errors, encoding: .utf8)) ?? ""
                #expect(
                    process.terminationStatus == 0 || stderr.hasSuffix("already exists\n"),
                    "\(command): a run between kills failed: \(stderr)")
                try compare(command, outputs: outputs, before: before, directory: directory)
                for path in faultedOutputs { try? FileManager.default.removeItem(atPath: path) }
                finished += 1
            }
        }
        let final = try CLITests.pmq(arguments(faultedOutputs))
        #expect(final.status == 0, "\(command): the run after the kills failed: \(final.stderr)")
        #expect(killedWhileRunning > 0, "\(command): no kill landed while the command ran")
        try compare(command, outputs: outputs, before: before, directory: directory)
        print(
            "fault test: \(command): \(killedWhileRunning) of \(Self.kills) runs killed mid-run, \(finished) finished "
                + String(format: "before the kill (uninterrupted run %.2f s)", duration))
    }

    /// The finished faulted outputs equal the reference's, and nothing else appeared in `directory`.
    func compare(_ command: String, outputs: [String], before: Set<String>, directory: String) throws {
        let expected = before.union(outputs.map { "faulted-" + $0 })
        let after = Set(try FileManager.default.contentsOfDirectory(atPath: directory))
        #expect(after == expected, "\(command): left beside its outputs: \(after.symmetricDifference(expected))")
        let reference = try Self.contents(outputs.map { "reference-" + $0 }, in: directory)
        let faulted = try Self.contents(outputs.map { "faulted-" + $0 }, in: directory)
        #expect(reference.count > 0)
        #expect(
            Set(faulted.keys) == Set(reference.keys.map { "faulted-" + $0.dropFirst("reference-".count) }),
            "\(command): files differ: \(faulted.keys.sorted()) against \(reference.keys.sorted())")
        for (name, data) in reference {
            let twin = "faulted-" + name.dropFirst("reference-".count)
            #expect(faulted[twin] == data, "\(command): \(twin) differs from the uninterrupted run's \(name)")
        }
    }

    @Test func killedRunsResumeToTheSameResultAndLeaveNothing() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let inputs = try Self.prepare(directory)
        var clock = KillClock(state: Self.seed)
        try killAndRerun(
            "profile", outputs: ["profile.json", "cache"],
            arguments: { Self.profileArguments(calib: inputs.calib, out: $0[0], cache: $0[1]) }, directory: directory,
            clock: &clock)
        try killAndRerun(
            "quantize", outputs: ["packed"],
            arguments: {
                [
                    "quantize", "--model", PackAndRunCLITests.mixtral, "--allocation", inputs.allocation, "--calib",
                    inputs.calib, "--samples", "8", "--seq-len", "16", "--out", $0[0], "--quiet",
                ]
            }, directory: directory, clock: &clock)
        try killAndRerun(
            "sweep", outputs: ["front"],
            arguments: {
                [
                    "sweep", "--profile",
                    CLITests.packageRoot.appendingPathComponent(
                        "examples/profiles/example-model.json"
                    ).path, "--from", "1", "--to", "4", "--points", "120", "--save-allocations", "--out", $0[0],
                ]
            }, directory: directory, clock: &clock)
    }
}
