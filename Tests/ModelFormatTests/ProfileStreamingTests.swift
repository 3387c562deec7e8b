import Foundation
import Testing

@testable import ModelFormat

/// The streaming profile reader (`ProfileReader.fastParse`) against the tree reader it stands in
/// for: it must read every valid profile exactly as the tree reader does, and never accept what the
/// tree reader refuses (it gives up instead, and the tree reader names the problem).
@Suite struct ProfileStreamingTests {
    static let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("examples/profiles")

    static func exampleProfiles() throws -> [(String, Data)] {
        try ["example-model.json", "example-model-fine.json", "synthetic-mixtral-8x7b.json"].map {
            ($0, try Data(contentsOf: examples.appendingPathComponent($0)))
        }
    }

    /// The two readers on one document: equal results, or the streaming one gave up.
    static func agree(_ data: Data) -> (agreed: Bool, streamed: Bool) {
        let fast = ProfileReader.fastParse(data, file: "p.json")
        let tree = try? ProfileReader.treeParse(data, file: "p.json")
        guard let fast else { return (true, false) }
        guard let tree else { return (false, true) }
        return (fast.profile == tree.profile && fast.warnings == tree.warnings, true)
    }

    @Test func readsTheCommittedProfilesAsTheTreeReaderDoes() throws {
        for (name, data) in try Self.exampleProfiles() {
            let (agreed, streamed) = Self.agree(data)
            #expect(streamed, "\(name): the streaming reader gave up on a valid profile")
            #expect(agreed, "\(name)")
        }
        // Keys in another order than the writer's (layers first), whitespace, extra members, nulls.
        let text = """
            {"layers": [ {"experts": [{"bytes": {"3": 1300, "2": 900}, "error": {"3": 2.0, "2": 8},
              "note": "x", "mass": 2.5, "freq": 3, "params": 3000, "index": 0, "outputError": null}],
              "sensitivity": null, "seconds": {"forward": 1, "quantization": 2}, "index": 0}],
             "widths": [3, 2], "groupSize": 128, "format": "pmq-profile", "version": 1,
             "model": {"name": "tiny", "architecture": "mixtral", "topK": null},
             "calibration": {"tokens": 1024}, "seconds": 3.5}
            """
        let (agreed, streamed) = Self.agree(Data(text.utf8))
        #expect(streamed && agreed)
        // Keys with escapes or other than ASCII (the streaming reader leaves them to the tree reader): an
        // unknown member, a known key spelled with an escape, and that key twice in two spellings.
        for (from, to) in [
            ("\"note\"", "\"n\\u00f6te\""), ("\"note\"", "\"nöte\""), ("\"freq\"", "\"fr\\u0065q\""),
            ("\"note\": \"x\"", "\"m\\u0061ss\": 1"), ("\"3\": 2.0", "\"\\u0033\": 2.0"), ("\"3\": 2.0", "\"+3\": 2.0"),
            ("\"3\": 2.0", "\"03\": 2.0"), ("\"3\": 2.0", "\"00003\": 2.0"),
        ] {
            let edited = text.replacingOccurrences(of: from, with: to)
            #expect(edited != text)
            #expect(Self.agree(Data(edited.utf8)).agreed, "\(to)")
        }
    }

    /// Seeded random edits of valid profiles (a byte replaced by a JSON-significant one, a byte removed, a span
    /// repeated): wherever the streaming reader accepts the result, the tree reader accepts it and reads the same.
    @Test func neverAcceptsWhatTheTreeReaderRefuses() throws {
        let small = try Self.exampleProfiles()[0].1
        let valid = Data(ProfileReaderTests.valid.utf8)
        let alphabet = Array("{}[]\",:0123456789-+.eE nNtf\\/u".utf8) + [0x00, 0x0A, 0xC3, 0xFF]
        var state: UInt64 = 17
        func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(bound))
        }
        var streamed = 0, cases = 0
        for source in [valid, small] {
            for _ in 0..<1500 {
                var bytes = [UInt8](source)
                for _ in 0..<(1 + next(3)) {
                    let at = next(bytes.count)
                    switch next(3) {
                    case 0: bytes[at] = alphabet[next(alphabet.count)]
                    case 1: bytes.remove(at: at)
                    default:
                        let length = min(1 + next(24), bytes.count - at)
                        bytes.insert(contentsOf: bytes[at..<(at + length)], at: at)
                    }
                }
                let result = Self.agree(Data(bytes))
                cases += 1
                if result.streamed { streamed += 1 }
                #expect(result.agreed, "case \(cases): \(String(decoding: bytes.prefix(400), as: UTF8.self))")
            }
        }
        // Some edits keep the profile valid (a digit for a digit): the comparison is not empty.
        #expect(streamed > 50, "\(streamed) of \(cases) edits were read by the streaming reader")
    }
}
