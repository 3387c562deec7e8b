import Foundation
import Testing

@testable import ModelFormat

/// What `OutputPaths` removes, keeps and refuses (the fault test in pmqTests runs it under kill -9).
@Suite struct OutputPathsTests {
    @Test func temporariesAreRecognisedByTheirOwnersPID() {
        #expect(OutputPaths.temporaryOwner(".2-bit.safetensors.5090.tmp", named: nil) == 5090)
        #expect(OutputPaths.temporaryOwner(".front.partial-12-3456", named: nil) == 12)
        #expect(OutputPaths.temporaryOwner(".front.partial-12-3456", named: "front") == 12)
        #expect(OutputPaths.temporaryOwner(".front.partial-12-3456", named: "other") == nil)
        #expect(OutputPaths.temporaryOwner(".profile.json.77.tmp", named: "profile.json") == 77)
        for kept in ["layer-0", "2-bit.safetensors", ".foo.tmp", ".a.partial-x", "a.5.tmp", ".a.-5.tmp"] {
            #expect(OutputPaths.temporaryOwner(kept, named: nil) == nil, "\(kept)")
        }
    }

    @Test func deadRunsTemporariesGoAndLiveOnesStay() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("outputs-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        // A PID that no process has: the largest allowed, which Linux never hands out by default.
        let dead: Int32 = 4_194_304 - 1
        #expect(kill(dead, 0) != 0)
        let names = [
            ".1-bit.safetensors.\(dead).tmp", ".out.partial-\(dead)-1", ".1-bit.safetensors.\(getpid()).tmp",
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
