import Foundation
@testable import ModelFormat
import Testing

/// The Swift BPE against the `tokenizers` library's own ids (tools/fixtures/make_tokenizer_fixtures.py).
@Suite struct TokenizerTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/tokenizers")

    struct Case: Decodable, CustomTestStringConvertible {
        var tokenizer: String
        var text: String
        var ids: [Int]
        var decoded: String
        var testDescription: String { "\(tokenizer): \(text.prefix(24))" }
    }

    static let cases: [Case] = {
        let data = try! Data(contentsOf: fixtures.appendingPathComponent("cases.json"))
        return try! JSONDecoder().decode([Case].self, from: data)
    }()

    @Test(arguments: cases)
    func matchesTokenizersLibrary(_ example: Case) throws {
        let tokenizer = try BPETokenizer(path: Self.fixtures.appendingPathComponent(example.tokenizer).path)
        #expect(tokenizer.encode(example.text) == example.ids)
        #expect(tokenizer.decode(example.ids) == example.decoded)
    }

    @Test func styleIsRecognised() throws {
        #expect(try BPETokenizer(path: Self.fixtures.appendingPathComponent("bytelevel.json").path).style == .byteLevel)
        #expect(
            try BPETokenizer(path: Self.fixtures.appendingPathComponent("sentencepiece.json").path).style
                == .sentencePiece)
        #expect(throws: ModelFormatError.self) {
            try BPETokenizer(data: Data(#"{"model": {"type": "WordPiece"}}"#.utf8), file: "t.json")
        }
    }
}
