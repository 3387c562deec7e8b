import Foundation
import Testing

/// Outputs as issue 15 found them: a sweep folder that kept a bigger sweep's reports, runs that
/// shared one output, hidden folders that dead runs left, and a profile that computed every
/// layer before finding that `--out` was a folder.
@Suite struct OutputCLITests {
    static let profile = CLITests.exampleProfile

    func sweep(_ out: String, points: Int) -> [String] {
        [
            "sweep", "--profile", Self.profile, "--from", "2.0", "--to", "3.0", "--points", "\(points)", "--out", out,
            "--save-allocations", "--quiet",
        ]
    }

    @Test func aSweepReplacesTheFolderWhole() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let out = directory + "/front"
        _ = try CLITests.succeeds(sweep(out, points: 5))
        #expect(try FileManager.default.contentsOfDirectory(atPath: out + "/allocations").count == 5)
        _ = try CLITests.succeeds(sweep(out, points: 2))
        #expect(try FileManager.default.contentsOfDirectory(atPath: out + "/allocations").count == 2)
        let left = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(left == ["front"], "\(left)")
    }

    @Test func deadRunsLeftoversAreRemovedAndLiveRunsLocksRespected() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let out = directory + "/front"
        // A PID that is surely dead: a process that has exited.
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/true")
        try process.run()
        process.waitUntilExit()
        let dead = process.processIdentifier
        let stale = directory + "/.front.partial-\(dead)-7"
        try FileManager.default.createDirectory(atPath: stale, withIntermediateDirectories: true)
        try Data("x".utf8).write(to: URL(fileURLWithPath: directory + "/.front.\(dead).tmp"))
        // Our own (live) process's staging folder must survive.
        let live = directory + "/.front.partial-\(getpid())-7"
        try FileManager.default.createDirectory(atPath: live, withIntermediateDirectories: true)
        _ = try CLITests.succeeds(sweep(out, points: 2))
        #expect(!FileManager.default.fileExists(atPath: stale))
        #expect(!FileManager.default.fileExists(atPath: directory + "/.front.\(dead).tmp"))
        #expect(FileManager.default.fileExists(atPath: live))
        // A second run while the lock is held is refused in one line and leaves the output alone.
        let lockPath = directory + "/.front.lock"
        let descriptor = open(lockPath, O_CREAT | O_RDWR, 0o644)
        #expect(descriptor >= 0 && flock(descriptor, LOCK_EX | LOCK_NB) == 0)
        defer { close(descriptor) }
        let refused = try CLITests.pmq(sweep(out, points: 3))
        #expect(refused.status == 1 && refused.stderr.contains("another pmq run is writing it"), "\(refused.stderr)")
        #expect(refused.stderr.split(separator: "\n").count == 1)
        #expect(try FileManager.default.contentsOfDirectory(atPath: out + "/allocations").count == 2)
    }

    @Test func aProfileOutputThatIsAFolderIsRefusedBeforeAnyWork() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let calib = try PackAndRunCLITests.calibration(in: directory)
        let result = try CLITests.pmq([
            "profile", "--model", PackAndRunCLITests.mixtral, "--calib", calib, "--samples", "8", "--seq-len", "16",
            "--group-size", "16", "--out", directory,
        ])
        #expect(result.status == 1 && result.stderr.contains("is a folder, not a file"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: directory + ".partial"))
    }
}
