import Foundation

/// A Hugging Face `tokenizer.json` BPE tokenizer, in the two shapes MoE checkpoints ship:
/// - byte-level (GPT-2, Qwen, OLMoE): ByteLevel pre-tokenizer (GPT-2 split), bytes mapped to
///   printable characters, BPE merges, ByteLevel decoder;
/// - sentencepiece-style (Llama, Mistral, Mixtral): normalizer prepends "▁" and turns spaces into
///   "▁", BPE over the whole text with byte fallback (`<0xXX>` tokens), decoder undoes it.
/// Added (special) tokens are matched verbatim before anything else.
public final class BPETokenizer: @unchecked Sendable {
    public enum Style: Sendable { case byteLevel, sentencePiece }

    public let style: Style
    public let vocab: [String: Int]
    public let tokens: [Int: String]
    private let ranks: [Pair: Int]
    private let addedTokens: [(content: String, id: Int)]
    private let byteFallback: Bool
    private let stripLeadingSpace: Bool
    private var cache: [String: [Int]] = [:]

    struct Pair: Hashable { let left: String, right: String }

    public convenience init(path: String) throws {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ModelFormatError(file: path, "cannot read: \((error as NSError).localizedDescription)")
        }
        try self.init(data: data, file: path)
    }

    public init(data: Data, file: String) throws {
        func fail(_ problem: String) -> ModelFormatError { ModelFormatError(file: file, problem) }
        try StrictJSON.validate(data, file: file)
        guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw fail("not a JSON object")
        }
        guard let model = root["model"] as? [String: Any], (model["type"] as? String) == "BPE" else {
            throw fail("model.type: only BPE tokenizers are supported")
        }
        guard let vocabObject = model["vocab"] as? [String: Any] else { throw fail("model.vocab: missing") }
        var vocab: [String: Int] = [:]
        for (token, id) in vocabObject {
            guard let number = jsonInteger(id, in: 0...Int(Int32.max)) else {
                throw fail("model.vocab[\(token)]: not an integer id from 0 to 2^31 − 1")
            }
            vocab[token] = number
        }
        var ranks: [Pair: Int] = [:]
        for (rank, merge) in ((model["merges"] as? [Any]) ?? []).enumerated() {
            let parts: [String]
            if let pair = merge as? [String] {
                parts = pair
            } else if let text = merge as? String {
                parts = text.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            } else {
                throw fail("model.merges[\(rank)]: neither \"a b\" nor [\"a\", \"b\"]")
            }
            guard parts.count == 2 else { throw fail("model.merges[\(rank)]: not a pair") }
            let pair = Pair(left: parts[0], right: parts[1])
            if ranks[pair] == nil { ranks[pair] = rank }
        }
        var added: [(String, Int)] = []
        for entry in (root["added_tokens"] as? [[String: Any]]) ?? [] {
            guard let content = entry["content"] as? String, let id = jsonInteger(entry["id"], in: 0...Int(Int32.max))
            else {
                throw fail("added_tokens: entry without content and an integer id from 0 to 2^31 − 1")
            }
            added.append((content, id))
            vocab[content] = id
        }
        let preTokenizer = (root["pre_tokenizer"] as? [String: Any])?["type"] as? String
        let normalizer = root["normalizer"] as? [String: Any]
        if preTokenizer == "ByteLevel" {
            style = .byteLevel
        } else if preTokenizer == nil || preTokenizer == "Metaspace", normalizer != nil || preTokenizer == "Metaspace" {
            style = .sentencePiece
        } else {
            throw fail(
                "pre_tokenizer \(preTokenizer ?? "none") is not supported (ByteLevel, or a sentencepiece-style "
                    + "normalizer)"
            )
        }
        self.vocab = vocab
        self.tokens = Dictionary(vocab.map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
        self.ranks = ranks
        // Longest first, so that one added token that prefixes another cannot shadow it.
        self.addedTokens = added.sorted { $0.0.count > $1.0.count }
        self.byteFallback = (model["byte_fallback"] as? Bool) ?? false
        let decoderJSON =
            String(
                data: (try? JSONSerialization.data(
                    withJSONObject: root["decoder"] ?? NSNull(), options: [.fragmentsAllowed])) ?? Data(),
                encoding: .utf8) ?? ""
        self.stripLeadingSpace = decoderJSON.contains("\"Strip\"")
    }

    // MARK: Encoding

    public func encode(_ text: String) -> [Int] {
        var ids: [Int] = []
        for segment in splitAddedTokens(text) {
            switch segment {
            case let .added(id): ids.append(id)
            case let .text(piece):
                switch style {
                case .byteLevel:
                    for word in ByteLevel.split(piece) { ids += bpe(ByteLevel.encodeBytes(word)) }
                case .sentencePiece:
                    ids += bpe("▁" + piece.replacingOccurrences(of: " ", with: "▁"))
                }
            }
        }
        return ids
    }

    enum Segment { case text(String), added(Int) }

    func splitAddedTokens(_ text: String) -> [Segment] {
        guard !addedTokens.isEmpty else { return [.text(text)] }
        var segments: [Segment] = []
        var rest = Substring(text)
        while !rest.isEmpty {
            var earliest: (range: Range<Substring.Index>, id: Int)? = nil
            for (content, id) in addedTokens {
                if let range = rest.range(of: content), earliest == nil || range.lowerBound < earliest!.range.lowerBound
                {
                    earliest = (range, id)
                }
            }
            guard let found = earliest else { segments.append(.text(String(rest))); break }
            if found.range.lowerBound > rest.startIndex {
                segments.append(.text(String(rest[..<found.range.lowerBound])))
            }
            segments.append(.added(found.id))
            rest = rest[found.range.upperBound...]
        }
        return segments
    }

    /// BPE over one word: merge the adjacent pair of lowest rank until none is left.
    func bpe(_ word: String) -> [Int] {
        if let cached = cache[word] { return cached }
        var symbols = word.map(String.init)
        while symbols.count > 1 {
            var best: (rank: Int, index: Int)? = nil
            for index in 0..<(symbols.count - 1) {
                if let rank = ranks[Pair(left: symbols[index], right: symbols[index + 1])],
                    best == nil || rank < best!.rank
                {
                    best = (rank, index)
                }
            }
            guard let best else { break }
            let left = symbols[best.index], right = symbols[best.index + 1]
            var merged: [String] = []
            var index = 0
            while index < symbols.count {
                if index + 1 < symbols.count, symbols[index] == left, symbols[index + 1] == right {
                    merged.append(left + right)
                    index += 2
                } else {
                    merged.append(symbols[index])
                    index += 1
                }
            }
            symbols = merged
        }
        var ids: [Int] = []
        for symbol in symbols {
            if let id = vocab[symbol] {
                ids.append(id)
            } else if byteFallback {
                for byte in Array(symbol.utf8) {
                    if let id = vocab[String(format: "<0x%02X>", byte)] { ids.append(id) }
                }
            }
        }
        if word.count < 64 { cache[word] = ids }
        return ids
    }

    // MARK: Decoding

    public func decode(_ ids: [Int]) -> String {
        switch style {
        case .byteLevel:
            var bytes: [UInt8] = []
            for id in ids {
                guard let token = tokens[id] else { continue }
                if addedTokens.contains(where: { $0.id == id }) { bytes += Array(token.utf8); continue }
                for character in token.unicodeScalars {
                    if let byte = ByteLevel.byteOf[character] { bytes.append(byte) }
                }
            }
            return String(decoding: bytes, as: UTF8.self)
        case .sentencePiece:
            var bytes: [UInt8] = []
            for id in ids {
                guard let token = tokens[id] else { continue }
                if token.count == 6, token.hasPrefix("<0x"), token.hasSuffix(">"),
                    let byte = UInt8(token.dropFirst(3).prefix(2), radix: 16)
                {
                    bytes.append(byte)
                } else {
                    bytes += Array(token.replacingOccurrences(of: "▁", with: " ").utf8)
                }
            }
            var text = String(decoding: bytes, as: UTF8.self)
            if stripLeadingSpace, text.hasPrefix(" ") { text.removeFirst() }
            return text
        }
    }
}

/// GPT-2's byte-level pre-tokenization.
enum ByteLevel {
    /// GPT-2's reversible byte → printable character table.
    static let characterOf: [Unicode.Scalar] = {
        var printable = Array(33...126) + Array(161...172) + Array(174...255)
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var next = 256
        for byte in 0..<256 {
            if printable.contains(byte) {
                table[byte] = Unicode.Scalar(UInt32(byte))!
            } else {
                table[byte] = Unicode.Scalar(UInt32(next))!
                next += 1
            }
        }
        printable.removeAll()
        return table
    }()

    static let byteOf: [Unicode.Scalar: UInt8] = {
        var map: [Unicode.Scalar: UInt8] = [:]
        for (byte, scalar) in characterOf.enumerated() { map[scalar] = UInt8(byte) }
        return map
    }()

    static func encodeBytes(_ word: String) -> String {
        var result = String.UnicodeScalarView()
        for byte in word.utf8 { result.append(characterOf[Int(byte)]) }
        return String(result)
    }

    enum Kind { case letter, number, space, other }

    static func kind(_ scalar: Unicode.Scalar) -> Kind {
        if scalar.properties.isWhitespace { return .space }
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, by hand.
    static func split(_ text: String) -> [String] {
        let scalars = Array(text.unicodeScalars)
        var pieces: [String] = []
        var i = 0
        func piece(_ range: Range<Int>) { pieces.append(String(String.UnicodeScalarView(scalars[range]))) }
        func run(from start: Int, of wanted: Kind) -> Int {
            var end = start
            while end < scalars.count, kind(scalars[end]) == wanted { end += 1 }
            return end
        }
        while i < scalars.count {
            let c = scalars[i]
            if c == "'", i + 1 < scalars.count {
                let n1 = scalars[i + 1]
                if ["s", "t", "m", "d"].contains(n1) { piece(i..<(i + 2)); i += 2; continue }
                if i + 2 < scalars.count {
                    let pair = String(String.UnicodeScalarView([n1, scalars[i + 2]]))
                    if ["re", "ve", "ll"].contains(pair) { piece(i..<(i + 3)); i += 3; continue }
                }
            }
            // Optional single space, then a run of letters, numbers or others.
            let start = i
            var j = i
            if c == " ", i + 1 < scalars.count, kind(scalars[i + 1]) != .space { j = i + 1 }
            let k = kind(scalars[j])
            if k != .space {
                let end = run(from: j, of: k)
                piece(start..<end)
                i = end
                continue
            }
            // Whitespace: leave the last one to the next word if a non-space follows.
            let end = run(from: i, of: .space)
            if end < scalars.count, end - i > 1 {
                piece(i..<(end - 1))
                i = end - 1
            } else {
                piece(i..<end)
                i = end
            }
        }
        return pieces
    }
}
