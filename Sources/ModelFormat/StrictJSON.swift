import Foundation

/// A strict JSON reader (RFC 8259): UTF-8 only (no byte-order mark, no invalid sequence), no
/// comments, trailing commas, single quotes or hex numbers, no duplicate keys, nesting at most
/// `maximumDepth` deep. Every JSON file pmq reads goes through it first, so that Foundation's
/// parsers (whose JSON5 scanner trapped on a 0xFF byte, and which accept UTF-16) only ever see
/// valid documents. The literals `NaN`, `Infinity` and `-Infinity` (which Python writes) are read
/// as numbers so that the profile reader can reject them by field name; the other readers then
/// refuse them as Foundation's parser does. Errors give the line and column.
public enum StrictJSON {
    public static let maximumDepth = 512

    /// Parses `data`; errors name `file`.
    static func parse(_ data: Data, file: String) throws -> JSONValue {
        try data.withUnsafeBytes { raw in
            var parser = Parser(bytes: raw.bindMemory(to: UInt8.self), file: file)
            return try parser.document()
        }
    }

    /// Checks that `data` is one strict JSON document (what `JSONSerialization` then parses).
    public static func validate(_ data: Data, file: String) throws {
        _ = try parse(data, file: file)
    }

    struct Parser {
        let bytes: UnsafeBufferPointer<UInt8>
        let file: String
        var index = 0
        var depth = 0

        init(bytes: UnsafeBufferPointer<UInt8>, file: String) {
            self.bytes = bytes
            self.file = file
        }

        func fail(_ reason: String, at position: Int? = nil) -> ModelFormatError {
            let offset = min(position ?? index, bytes.count)
            var line = 1, column = 1
            for byte in bytes[0..<offset] {
                if byte == 0x0A {
                    line += 1
                    column = 1
                } else if byte & 0xC0 != 0x80 {
                    column += 1
                }
            }
            return ModelFormatError(file: file, "not valid JSON: \(reason) at line \(line), column \(column)")
        }

        mutating func document() throws -> JSONValue {
            guard !bytes.isEmpty else { throw ModelFormatError(file: file, "not valid JSON: the file is empty") }
            if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF {
                throw ModelFormatError(file: file, "not valid JSON: starts with a byte-order mark")
            }
            if bytes.count >= 2,
                bytes[0] == 0 || bytes[1] == 0 || (bytes[0] == 0xFE && bytes[1] == 0xFF)
                    || (bytes[0] == 0xFF && bytes[1] == 0xFE)
            {
                throw ModelFormatError(file: file, "not valid JSON: UTF-16 or UTF-32 text (JSON must be UTF-8)")
            }
            skipWhitespace()
            let value = try parseValue()
            skipWhitespace()
            guard index == bytes.count else { throw fail("unexpected text after the document") }
            return value
        }

        @inline(__always)
        mutating func skipWhitespace() {
            while index < bytes.count {
                let byte = bytes[index]
                guard byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 else { return }
                index += 1
            }
        }

        mutating func parseValue() throws -> JSONValue {
            guard index < bytes.count else { throw fail("unexpected end of file") }
            switch bytes[index] {
            case UInt8(ascii: "{"): return try parseObject()
            case UInt8(ascii: "["): return try parseArray()
            case UInt8(ascii: "\""): return .string(try parseString())
            case UInt8(ascii: "t"): return try literal("true", .bool(true))
            case UInt8(ascii: "f"): return try literal("false", .bool(false))
            case UInt8(ascii: "n"): return try literal("null", .null)
            case UInt8(ascii: "N"): return try literal("NaN", .number(.nan))
            case UInt8(ascii: "I"): return try literal("Infinity", .number(.infinity))
            case UInt8(ascii: "-") where index + 1 < bytes.count && bytes[index + 1] == UInt8(ascii: "I"):
                index += 1
                return try literal("Infinity", .number(-.infinity))
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
            default: throw fail("unexpected character")
            }
        }

        mutating func literal(_ word: String, _ value: JSONValue) throws -> JSONValue {
            for byte in word.utf8 {
                guard index < bytes.count, bytes[index] == byte else { throw fail("unexpected character") }
                index += 1
            }
            return value
        }

        mutating func enter() throws {
            depth += 1
            guard depth <= StrictJSON.maximumDepth else {
                throw fail("nested more than \(StrictJSON.maximumDepth) deep")
            }
        }

        mutating func parseObject() throws -> JSONValue {
            try enter()
            defer { depth -= 1 }
            index += 1
            var members = JSONObject()
            // Keys seen, for the duplicate check once an object outgrows a linear scan.
            var keys: Set<String>? = nil
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                index += 1
                return .object(members)
            }
            while true {
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw fail("expected a key") }
                let keyStart = index
                let key = try parseString()
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                index += 1
                skipWhitespace()
                let value = try parseValue()
                let duplicate: Bool
                if members.members.count < 16 {
                    duplicate = members.members.contains { $0.key == key }
                } else {
                    if keys == nil { keys = Set(members.members.map(\.key)) }
                    duplicate = !keys!.insert(key).inserted
                }
                guard !duplicate else { throw fail("key \"\(key)\" appears twice in one object", at: keyStart) }
                members.members.append(.init(key: key, value: value))
                skipWhitespace()
                guard index < bytes.count else { throw fail("unexpected end of file") }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                    continue
                }
                guard bytes[index] == UInt8(ascii: "}") else { throw fail("expected ',' or '}'") }
                index += 1
                return .object(members)
            }
        }

        mutating func parseArray() throws -> JSONValue {
            try enter()
            defer { depth -= 1 }
            index += 1
            var items: [JSONValue] = []
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
                index += 1
                return .array(items)
            }
            while true {
                skipWhitespace()
                items.append(try parseValue())
                skipWhitespace()
                guard index < bytes.count else { throw fail("unexpected end of file") }
                if bytes[index] == UInt8(ascii: ",") {
                    index += 1
                    continue
                }
                guard bytes[index] == UInt8(ascii: "]") else { throw fail("expected ',' or ']'") }
                index += 1
                return .array(items)
            }
        }

        /// A string from its opening quote; raw bytes must be valid UTF-8, control characters escaped.
        /// With `index` at a string's opening quote: the index of its closing quote when the text between
        /// is printable ASCII without escapes (its bytes are its characters); nil otherwise.
        func plainStringEnd() -> Int? {
            var end = index + 1
            while end < bytes.count {
                let byte = bytes[end]
                if byte == UInt8(ascii: "\"") { return end }
                guard byte >= 0x20, byte < 0x80, byte != UInt8(ascii: "\\") else { return nil }
                end += 1
            }
            return nil
        }

        mutating func parseString() throws -> String {
            // Fast path: printable ASCII up to the closing quote.
            if let end = plainStringEnd() {
                let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[(index + 1)..<end]), as: UTF8.self)
                index = end + 1
                return text
            }
            index += 1
            var scalars = String.UnicodeScalarView()
            while true {
                guard index < bytes.count else { throw fail("unterminated string") }
                let byte = bytes[index]
                switch byte {
                case UInt8(ascii: "\""):
                    index += 1
                    return String(scalars)
                case UInt8(ascii: "\\"):
                    index += 1
                    guard index < bytes.count else { throw fail("unterminated string") }
                    let escape = bytes[index]
                    index += 1
                    switch escape {
                    case UInt8(ascii: "\""): scalars.append("\"")
                    case UInt8(ascii: "\\"): scalars.append("\\")
                    case UInt8(ascii: "/"): scalars.append("/")
                    case UInt8(ascii: "b"): scalars.append("\u{08}")
                    case UInt8(ascii: "f"): scalars.append("\u{0C}")
                    case UInt8(ascii: "n"): scalars.append("\n")
                    case UInt8(ascii: "r"): scalars.append("\r")
                    case UInt8(ascii: "t"): scalars.append("\t")
                    case UInt8(ascii: "u"): scalars.append(try parseUnicodeEscape())
                    default: throw fail("invalid escape", at: index - 2)
                    }
                case 0..<0x20:
                    throw fail("control character in a string")
                case 0..<0x80:
                    scalars.append(Unicode.Scalar(byte))
                    index += 1
                default:
                    scalars.append(try parseUTF8Sequence())
                }
            }
        }

        mutating func hexQuad() throws -> UInt32 {
            guard index + 4 <= bytes.count else { throw fail("truncated \\u escape") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let byte = bytes[index]
                let digit: UInt32
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
                default: throw fail("invalid \\u escape")
                }
                value = value << 4 | digit
                index += 1
            }
            return value
        }

        mutating func parseUnicodeEscape() throws -> Unicode.Scalar {
            let start = index - 2
            let first = try hexQuad()
            if (0xD800..<0xDC00).contains(first) {
                guard index + 2 <= bytes.count, bytes[index] == UInt8(ascii: "\\"),
                    bytes[index + 1] == UInt8(ascii: "u")
                else { throw fail("unpaired surrogate escape", at: start) }
                index += 2
                let second = try hexQuad()
                guard (0xDC00..<0xE000).contains(second) else { throw fail("unpaired surrogate escape", at: start) }
                return Unicode.Scalar(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))!
            }
            guard let scalar = Unicode.Scalar(first) else { throw fail("unpaired surrogate escape", at: start) }
            return scalar
        }

        /// One multi-byte UTF-8 sequence, checked (no overlong forms, no surrogates, ≤ U+10FFFF).
        mutating func parseUTF8Sequence() throws -> Unicode.Scalar {
            let lead = bytes[index]
            let length: Int, minimum: UInt32
            var value: UInt32
            switch lead {
            case 0xC2...0xDF: (length, minimum, value) = (2, 0x80, UInt32(lead & 0x1F))
            case 0xE0...0xEF: (length, minimum, value) = (3, 0x800, UInt32(lead & 0x0F))
            case 0xF0...0xF4: (length, minimum, value) = (4, 0x10000, UInt32(lead & 0x07))
            default: throw fail("invalid UTF-8 byte 0x\(String(lead, radix: 16, uppercase: true))")
            }
            guard index + length <= bytes.count else { throw fail("truncated UTF-8 sequence") }
            for offset in 1..<length {
                let byte = bytes[index + offset]
                guard byte & 0xC0 == 0x80 else { throw fail("invalid UTF-8 sequence") }
                value = value << 6 | UInt32(byte & 0x3F)
            }
            guard value >= minimum, let scalar = Unicode.Scalar(value) else {
                throw fail("invalid UTF-8 sequence")
            }
            index += length
            return scalar
        }

        /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`: an integer when it has neither
        /// fraction nor exponent and fits in 64 bits, a Double otherwise (±infinity when it overflows).
        mutating func parseNumber() throws -> JSONValue {
            let start = index
            func digits() -> Int {
                let first = index
                while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
                return index - first
            }
            if bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count else { throw fail("truncated number", at: start) }
            if bytes[index] == UInt8(ascii: "0") {
                index += 1
                if index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) {
                    throw fail("number with a leading zero", at: start)
                }
            } else if digits() == 0 {
                throw fail("invalid number", at: start)
            }
            var integral = true
            if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
                index += 1
                integral = false
                guard digits() > 0 else { throw fail("invalid number", at: start) }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
                index += 1
                integral = false
                if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
                    index += 1
                }
                guard digits() > 0 else { throw fail("invalid number", at: start) }
            }
            if integral, let value = integer(start..<index) { return .integer(value) }
            if let value = double(start..<index) { return .number(value) }
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
            guard let value = Double(text) else { throw fail("invalid number", at: start) }
            return .number(value)
        }

        /// The number written in `range` (checked JSON syntax): `FastDecimal` where it can tell, else
        /// `strtod` on a NUL-terminated copy on the stack: no `String` per number (most doubles are longer
        /// than a small string's 15 bytes, so each was a heap allocation). Nil, for `Double(String)` to
        /// decide, when the copy would not fit or `strtod` stops early (a locale whose decimal point is
        /// not "."). Correctly rounded, as `Double(String)` is (`StrictJSONTests` compares the two).
        func double(_ range: Range<Int>) -> Double? {
            if let value = FastDecimal.parse(UnsafeBufferPointer(rebasing: bytes[range])) { return value }
            let count = range.count
            guard count < 64 else { return nil }
            return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { buffer -> Double? in
                guard let base = buffer.baseAddress else { return nil }
                for i in 0..<count { base[i] = CChar(bitPattern: bytes[range.lowerBound &+ i]) }
                base[count] = 0
                var end: UnsafeMutablePointer<CChar>? = nil
                let value = strtod(base, &end)
                guard let end, end == base + count else { return nil }
                return value
            }
        }

        /// The integer written in `range` (checked syntax: `-?digits`), nil when it does not fit 64 bits.
        func integer(_ range: Range<Int>) -> Int64? {
            var i = range.lowerBound
            let negative = bytes[i] == UInt8(ascii: "-")
            if negative { i += 1 }
            // Accumulated as a negative number, whose range includes Int64.min.
            var value: Int64 = 0
            while i < range.upperBound {
                let digit = Int64(bytes[i] &- UInt8(ascii: "0"))
                let (shifted, overflow) = value.multipliedReportingOverflow(by: 10)
                let (next, overflow2) = shifted.subtractingReportingOverflow(digit)
                if overflow || overflow2 { return nil }
                value = next
                i += 1
            }
            if negative { return value }
            return value == .min ? nil : -value
        }
    }
}
