import Foundation
import Testing

@testable import ModelFormat

/// What `OutputPaths` removes, keeps and refuses (the fault test in pmqTests runs it under kill -9).
@Suite struct OutputPathsTests {
    @Test func temporariesAreRecognisedByTheirOwnersPID() {
        let owner = { (pid: Int32, host: String?) in OutputPaths.Owner(pid: pid, host: host) }
        #expect(OutputPaths.temporaryOwner(".2-bit.safetensors.5090.tmp", named: nil) == owner(5090, nil))
        #expect(OutputPaths.temporaryOwner(".front.partial-12-3456", named: nil) == owner(12, nil))
        #expect(OutputPaths.temporaryOwner(".front.partial-12-3456", named: "front") == owner(12, nil))
        #expect(OutputPaths.temporaryOwner(".front.partial-12-3456", named: "other") == nil)
        #expect(OutputPaths.temporaryOwner(".profile.json.77.tmp", named: "profile.json") == owner(77, nil))
        // With the machine: hosts may hold `-`, never `.`.
        #expect(OutputPaths.temporaryOwner(".2-bit.safetensors.5090@node-7.tmp", named: nil) == owner(5090, "node-7"))
        #expect(OutputPaths.temporaryOwner(".front.partial-12@gpu-a-3456", named: nil) == owner(12, "gpu-a"))
        #expect(OutputPaths.temporaryOwner(".front.partial-12@n1-3456", named: "front") == owner(12, "n1"))
        #expect(OutputPaths.temporaryOwner(".cache.json.8@n1.tmp", named: "cache.json") == owner(8, "n1"))
        // A folder `replace` moved aside (`-old`), in both forms.
        #expect(OutputPaths.temporaryOwner(".front.partial-12-3456-old", named: nil) == owner(12, nil))
        #expect(OutputPaths.temporaryOwner(".front.partial-12@n-1-3456-old", named: "front") == owner(12, "n-1"))
        for kept in [
            "layer-0", "2-bit.safetensors", ".foo.tmp", ".a.partial-x", "a.5.tmp", ".a.-5.tmp", ".a.5@.tmp",
            ".a.partial-5@-1", ".a.@n1.tmp",
        ] {
            #expect(OutputPaths.temporaryOwner(kept, named: nil) == nil, "\(kept)")
        }
    }

    /// This run's tag names it and this machine, in the form `temporaryOwner` reads back.
    @Test func theOwnerTagReadsBackAsThisRun() {
        let owner = OutputPaths.temporaryOwner(".x.\(OutputPaths.ownerTag).tmp", named: "x")
        #expect(owner?.pid == getpid())
        #expect(owner?.host == (OutputPaths.host.isEmpty ? nil : OutputPaths.host))
    }

    /// A folder shared by several machines: a dead PID from another host says nothing about that
    /// run, so its temporary stays; the same PID from this host is removed.
    @Test func otherMachinesTemporariesStay() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("outputs-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let dead: Int32 = 4_194_304 - 1
        let elsewhere = OutputPaths.host == "other-host" ? "another-host" : "other-host"
        let names = [
            ".1-bit.safetensors.\(dead)@\(elsewhere).tmp", ".out.partial-\(dead)@\(elsewhere)-1",
            ".2-bit.safetensors.\(dead)@\(OutputPaths.host).tmp", ".out.partial-\(dead)@\(OutputPaths.host)-2",
        ]
        for name in names { _ = FileManager.default.createFile(atPath: folder + "/" + name, contents: Data()) }
        OutputPaths.removeStaleTemporaries(in: folder)
        let left = Set(try FileManager.default.contentsOfDirectory(atPath: folder))
        #expect(left == Set(names.prefix(OutputPaths.host.isEmpty ? 4 : 2)))
    }

    @Test func deadRunsTemporariesGoAndLiveOnesStay() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("outputs-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        // A PID that no process has: the largest allowed, which Linux never hands out by default.
        let dead: Int32 = 4_194_304 - 1
        #expect(kill(dead, 0) != 0)
        let names = [
            ".1-bit.safetensors.\(dead).tmp", ".out.partial-\(dead)-1",
            ".out.partial-\(dead)\(OutputPaths.host.isEmpty ? "" : "@" + OutputPaths.host)-2-old",
            ".1-bit.safetensors.\(getpid()).tmp",
            "1-bit.safetensors",
        ]
        for name in names { _ = FileManager.default.createFile(atPath: folder + "/" + name, contents: Data()) }
        OutputPaths.removeStaleTemporaries(in: folder)
        let left = Set(try FileManager.default.contentsOfDirectory(atPath: folder))
        #expect(left == [".1-bit.safetensors.\(getpid()).tmp", "1-bit.safetensors"])
    }

    /// The lock is refused while held, taken again once released, and its file goes with it.
    @Test func aHeldLockRefusesASecondRun() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("outputs-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let first = try OutputPaths.claim(folder + "/out", folder: true)
        #expect(throws: FileWriteError.self) { _ = try OutputPaths.claim(folder + "/out", folder: true) }
        first.release()
        #expect(!FileManager.default.fileExists(atPath: folder + "/.out.lock"))
        let second = try OutputPaths.claim(folder + "/out", folder: true)
        #expect(FileManager.default.fileExists(atPath: folder + "/.out.lock"))
        second.release()
    }
}
