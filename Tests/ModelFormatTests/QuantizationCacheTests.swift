import Foundation
import Testing

@testable import ModelFormat

/// Creating and opening a quantization cache, alone and by concurrent runs sharing one folder (a
/// cluster's array tasks writing one cache).
@Suite struct QuantizationCacheTests {
    static func fingerprint(model: String = "0123") -> QuantizationCache.Fingerprint {
        .init(
            model: model, architecture: "mixtral", calibration: "abcd", groupSize: 128, dampening: 0.01, actOrder: true,
            clipSearch: false)
    }

    static func folder() throws -> String {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("cache-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        return folder
    }

    /// Eight threads create one cache at once, each then adding its own layer folder as `write`
    /// does, 40 times over: every one opens the same cache, and one manifest and no temporary remain.
    @Test func concurrentCreatorsAllOpenOneCache() throws {
        let root = try Self.folder()
        defer { try? FileManager.default.removeItem(atPath: root) }
        for round in 0..<40 {
            let directory = root + "/cache-\(round)"
            let failures = Failures()
            DispatchQueue.concurrentPerform(iterations: 8) { task in
                do {
                    let cache = try QuantizationCache.openOrCreate(
                        directory: directory, fingerprint: Self.fingerprint(), modelDirectory: "model-\(task)")
                    try FileManager.default.createDirectory(
                        atPath: directory + "/layer-\(task)", withIntermediateDirectories: true)
                    if cache.fingerprint != Self.fingerprint() { failures.add("round \(round): another fingerprint") }
                } catch {
                    failures.add("round \(round) task \(task): \(error.localizedDescription)")
                }
            }
            #expect(failures.messages.isEmpty, "\(failures.messages.prefix(3))")
            let contents = try FileManager.default.contentsOfDirectory(atPath: directory)
            #expect(contents.filter { $0.hasPrefix(".") }.isEmpty, "\(contents)")
            #expect(contents.filter { $0.hasPrefix("layer-") }.count == 8)
            #expect(try QuantizationCache.open(directory: directory).fingerprint == Self.fingerprint())
        }
    }

    @Test func aCacheForOtherInputsAndAForeignFolderAreRefused() throws {
        let root = try Self.folder()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let cache = root + "/cache"
        _ = try QuantizationCache.openOrCreate(directory: cache, fingerprint: Self.fingerprint(), modelDirectory: "m")
        #expect(throws: ModelFormatError.self) {
            _ = try QuantizationCache.openOrCreate(
                directory: cache, fingerprint: Self.fingerprint(model: "4567"), modelDirectory: "m")
        }
        let foreign = root + "/foreign"
        try FileManager.default.createDirectory(atPath: foreign, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: foreign + "/notes.txt", contents: Data("x".utf8))
        #expect(throws: ModelFormatError.self) {
            _ = try QuantizationCache.openOrCreate(
                directory: foreign, fingerprint: Self.fingerprint(), modelDirectory: "m")
        }
        #expect(!FileManager.default.fileExists(atPath: foreign + "/cache.json"))
    }

    /// The first file published stays; a later `create` reports that it was not first.
    @Test func createKeepsTheFirstWritersFile() throws {
        let root = try Self.folder()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let path = root + "/cache.json"
        #expect(try AtomicFile.create(Data("first".utf8), at: path))
        #expect(try !AtomicFile.create(Data("second".utf8), at: path))
        #expect(FileManager.default.contents(atPath: path) == Data("first".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: root) == ["cache.json"])
    }
}

/// Messages collected from concurrent tasks.
private final class Failures: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var messages: [String] = []
    func add(_ message: String) { lock.withLock { messages.append(message) } }
}
