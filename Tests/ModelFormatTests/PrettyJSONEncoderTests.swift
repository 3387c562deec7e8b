import Foundation
import Testing

@testable import ModelFormat

/// `PrettyJSONEncoder` against Foundation's `JSONEncoder` with the same formatting: byte-identical
/// output on pmq's own documents and on every shape of value, and `Unsupported` where they would differ.
@Suite struct PrettyJSONEncoderTests {
    static func foundation<T: Encodable>(_ value: T) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(value)
    }

    static func same<T: Encodable>(_ value: T) throws -> Bool {
        try PrettyJSONEncoder.encode(value) == foundation(value)
    }

    struct Shapes: Encodable {
        var empty: [Int] = []
        var emptyObject: [String: Int] = [:]
        var nested: [[Double]] = [[], [1, 2.5, -0.0, 1e-7, 1e15, 1e16, 123_456_789.125, .leastNonzeroMagnitude]]
        var text = "quote \" backslash \\ slash / newline \n tab \t cr \r \u{08}\u{0C}\u{01}\u{1F}\u{7F} é 😀"
        var missing: String? = nil
        var present: Int? = 3
        var explicitNull: Int?? = .some(nil)
        var flags = [true, false]
        var small: Float = 0.1
        var integers: [Int64] = [.min, .max, 0]
        var unsigned: [UInt8] = [0, 255]
        var byWidth: [Int: Double] = [3: 0.5, 10: 1, 2: 0.25]
        var upper = 1
        var widths: WidthMap<Double> = [2: 0.5, 4: 0.125]

        /// An upper-case key sorts before the lower-case ones.
        enum CodingKeys: String, CodingKey {
            case empty, emptyObject, nested, text, missing, present, explicitNull, flags, small, integers, unsigned
            case byWidth, widths
            case upper = "Upper"
        }
    }

    @Test func writesWhatJSONEncoderWrites() throws {
        #expect(try Self.same(Shapes()))
        #expect(try Self.same([String]()))
        #expect(try Self.same(["k": [String: [Int]]()]))
        #expect(try Self.same(42))
        #expect(try Self.same("top level"))
    }

    @Test func writesTheCommittedProfilesAsJSONEncoderDoes() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("examples/profiles")
        for name in ["example-model.json", "example-model-fine.json", "synthetic-mixtral-8x7b.json"] {
            let profile = try JSONDecoder().decode(
                Profile.self, from: Data(contentsOf: folder.appendingPathComponent(name)))
            #expect(try Self.same(profile), "\(name)")
        }
    }

    @Test func leavesToJSONEncoderWhatItSpecialCases() {
        #expect(throws: PrettyJSONEncoder.Unsupported.self) { try PrettyJSONEncoder.encode([Double.nan]) }
        #expect(throws: PrettyJSONEncoder.Unsupported.self) { try PrettyJSONEncoder.encode(["d": Data([1, 2])]) }
        #expect(throws: PrettyJSONEncoder.Unsupported.self) { try PrettyJSONEncoder.encode([Date()]) }
        #expect(throws: PrettyJSONEncoder.Unsupported.self) {
            try PrettyJSONEncoder.encode([URL(fileURLWithPath: "/tmp")])
        }
        #expect(throws: PrettyJSONEncoder.Unsupported.self) { try PrettyJSONEncoder.encode(Float.infinity) }
    }
}
