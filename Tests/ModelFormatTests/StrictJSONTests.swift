import Foundation
import Testing

@testable import ModelFormat

/// The strict JSON reader against Foundation's parser on valid documents, and its refusals.
@Suite struct StrictJSONTests {
    static func plain(_ value: JSONValue) -> Any {
        switch value {
        case let .integer(number): return NSNumber(value: number)
        case let .number(number): return NSNumber(value: number)
        case let .string(text): return text
        case let .bool(flag): return NSNumber(value: flag)
        case let .array(items): return items.map(plain)
        case let .object(object):
            return Dictionary(uniqueKeysWithValues: object.members.map { ($0.key, plain($0.value)) })
        case .null: return NSNull()
        }
    }

    /// Non-integral numbers are read by `strtod` on a stack copy (`Parser.double`): every one the same
    /// Double, bit for bit, as `Double(String)` reads from the same text. Random bit patterns (subnormals
    /// and extremes included) written as Swift writes them and in exponent forms, a few long ones (past
    /// the stack copy: `Double(String)` itself), and a number that ends the document.
    @Test func fractionsReadAsDoubleStringReadsThem() throws {
        var generator = SplitMix64(seed: 17)
        var texts = [
            "1.5", "-0.0", "4.9e-324", "2.2250738585072014e-308", "1.7976931348623157e308", "1e-400",
            "0." + String(repeating: "3", count: 80), "123456789012345678901234567890.5e-10",
        ]
        for _ in 0..<3000 {
            let value = Double(bitPattern: generator.next())
            guard value.isFinite else { continue }
            texts.append("\(value)")
            texts.append(String(format: "%.17e", value))
            texts.append(String(format: "%.3E", value))
        }
        for text in texts {
            guard case let .number(ours) = try StrictJSON.parse(Data(text.utf8), file: "t.json") else {
                Issue.record("\(text) not read as a fraction")
                continue
            }
            let expected = try #require(Double(text))
            #expect(ours.bitPattern == expected.bitPattern, "\(text): \(ours) against \(expected)")
        }
    }

    @Test(arguments: [
        #"{"a": [1, -2, 3.5, -0.25e-3, 1E+2, 1e300], "b": {"c": null, "d": true, "e": false}}"#,
        #"["\u00e9\ud83d\ude00 \"quoted\" \\ \/ \b\f\n\r\t", "é😀", ""]"#,
        " \n\t{ } ", "[[[]]]", "0", "\"text\"", "-0",
        // Many keys (past the linear duplicate scan).
        "{" + (0..<40).map { "\"k\($0)\": \($0)" }.joined(separator: ", ") + "}",
    ])
    func readsWhatFoundationReads(_ text: String) throws {
        let ours = Self.plain(try StrictJSON.parse(Data(text.utf8), file: "t.json"))
        let foundation = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
        #expect(NSArray(array: [ours]).isEqual(to: [foundation]), "\(ours) vs \(foundation)")
    }

    /// Integers at and past the 64-bit edges (past them: the nearest Double), long fractions.
    @Test func numbersAtTheEdges() throws {
        let text =
            "[9223372036854775807, -9223372036854775808, 9223372036854775808, -9223372036854775809, "
            + "0.1000000000000000055511151231257827, -0, 1e400]"
        guard case let .array(items) = try StrictJSON.parse(Data(text.utf8), file: "t.json") else {
            Issue.record("not an array")
            return
        }
        let expected: [JSONValue] = [
            .integer(.max), .integer(.min), .number(9_223_372_036_854_775_808), .number(-9_223_372_036_854_775_809),
            .number(0.1), .integer(0), .number(.infinity),
        ]
        #expect(items.count == expected.count)
        for (item, value) in zip(items, expected) {
            switch (item, value) {
            case let (.integer(a), .integer(b)): #expect(a == b)
            case let (.number(a), .number(b)): #expect(a == b)
            default: Issue.record("\(item) is not \(value)")
            }
        }
    }

    @Test(arguments: [
        ("{\"a\": 1,}", "expected a key"), ("[1, 2,]", "unexpected character"), ("// c\n{}", "unexpected character"),
        ("{'a': 1}", "expected a key"), ("[0x10]", "expected ',' or ']'"), ("[01]", "leading zero"),
        ("{\"a\": 1, \"a\": 2}", "key \"a\" appears twice"), ("{} x", "unexpected text after the document"),
        ("", "the file is empty"), ("[\"a\u{01}\"]", "control character"), ("[1.]", "invalid number"),
        ("[\"\\x\"]", "invalid escape"), ("[\"\\ud800\"]", "unpaired surrogate"), ("{\"a\"}", "expected ':'"),
        ("[-]", "invalid number"), ("tru", "unexpected character"), ("[\"abc", "unterminated string"),
        ("{" + (0..<20).map { "\"k\($0)\": 0, " }.joined() + "\"k3\": 1}", "key \"k3\" appears twice"),
        ("{" + (0..<20).map { "\"k\($0)\": 0, " }.joined() + "\"k19\": 1}", "key \"k19\" appears twice"),
    ])
    func refusesWhatRFC8259Refuses(_ text: String, _ message: String) {
        #expect {
            try StrictJSON.parse(Data(text.utf8), file: "t.json")
        } throws: { error in
            let problem = (error as? ModelFormatError)?.problem ?? ""
            return problem.contains(message) && problem.hasPrefix("not valid JSON")
        }
    }

    @Test func refusesOtherEncodingsAndBytes() throws {
        let cases: [([UInt8], String)] = [
            ([0xEF, 0xBB, 0xBF] + Array("{}".utf8), "byte-order mark"),
            ([0xFF, 0xFE, 0x7B, 0x00, 0x7D, 0x00], "UTF-16 or UTF-32"),
            ([0x7B, 0x00, 0x7D, 0x00], "UTF-16 or UTF-32"),
            (Array("{\"".utf8) + [0xFF] + Array("a\": 1}".utf8), "invalid UTF-8 byte 0xFF"),
            (Array("[\"".utf8) + [0xC0, 0x80] + Array("\"]".utf8), "invalid UTF-8 byte 0xC0"),
            (Array("[\"".utf8) + [0xED, 0xA0, 0x80] + Array("\"]".utf8), "invalid UTF-8 sequence"),
            (Array("{\"".utf8) + [0xFF], "invalid UTF-8 byte"),
        ]
        for (bytes, message) in cases {
            #expect(throws: ModelFormatError.self) { try StrictJSON.parse(Data(bytes), file: "t.json") }
            do { _ = try StrictJSON.parse(Data(bytes), file: "t.json") } catch let error as ModelFormatError {
                #expect(error.problem.contains(message), "\(bytes): \(error.problem)")
            }
        }
        let deep = String(repeating: "[", count: 600) + String(repeating: "]", count: 600)
        do {
            _ = try StrictJSON.parse(Data(deep.utf8), file: "t.json")
            Issue.record("600 levels of nesting were accepted")
        } catch let error as ModelFormatError {
            #expect(error.problem.contains("nested more than 512 deep"))
        }
    }

    @Test func namesLineAndColumn() {
        do {
            _ = try StrictJSON.parse(Data("{\n  \"a\": 1,\n  \"b\": 2,\n}".utf8), file: "t.json")
            Issue.record("a trailing comma was accepted")
        } catch let error as ModelFormatError {
            #expect(error.problem == "not valid JSON: expected a key at line 4, column 1", "\(error.problem)")
        } catch {
            Issue.record("\(error)")
        }
    }
}

/// `FastDecimal` against `strtod`, bit for bit, wherever it gives an answer; and it must give one
/// for nearly every number Swift writes (else it would be no faster).
@Suite struct FastDecimalTests {
    static func strtodValue(_ text: String) -> Double {
        text.withCString { strtod($0, nil) }
    }

    static func fast(_ text: String) -> Double? {
        Array(text.utf8).withUnsafeBufferPointer { FastDecimal.parse($0) }
    }

    @Test func agreesWithStrtodBitForBit() {
        var generator = SplitMix64(seed: 2026)
        var answered = 0, total = 0, written = 0, writtenAnswered = 0
        func check(_ text: String) {
            total += 1
            guard let ours = Self.fast(text) else { return }
            answered += 1
            let expected = Self.strtodValue(text)
            #expect(ours.bitPattern == expected.bitPattern, "\(text): \(ours) against \(expected)")
        }
        for _ in 0..<60_000 {
            // Numbers as Swift writes them (the profile writer's form), over the range profiles hold
            // (errors, masses, frequencies: 10⁻⁴ to 10⁶).
            let value =
                Double(generator.next() >> 11) / 9_007_199_254_740_992 * pow(10, Double(generator.next() % 10) - 3)
            written += 1
            total += 1
            if let ours = Self.fast("\(value)") {
                writtenAnswered += 1
                answered += 1
                #expect(ours.bitPattern == value.bitPattern, "\(value)")
            }
            // Random bit patterns: extremes and subnormals, mostly left to strtod.
            check("\(Double(bitPattern: generator.next()).magnitude)")
            // Random digit strings of 1 to 19 significant digits with the point anywhere and an exponent.
            let count = Int(generator.next() % 19) + 1
            var digits = String(generator.next() % 9 + 1)
            for _ in 1..<count { digits.append(String(generator.next() % 10)) }
            let point = Int(generator.next() % UInt64(count + 1))
            let shifted = point == count ? digits : String(digits.prefix(point)) + "." + String(digits.dropFirst(point))
            let body = shifted.hasPrefix(".") ? "0" + shifted : shifted
            check(body)
            check("-" + body + "e" + String(Int(generator.next() % 50) - 25))
            check("0.000" + digits)
            // Near halfway: the digits of a double's value extended by a 5 (or 49999, 50001) in the 18th place.
            let near = Double(bitPattern: (generator.next() >> 12) | 0x3FF0_0000_0000_0000)
            let printed = String(format: "%.16e", near)
            for tail in ["5", "4", "6", "49", "51"] {
                let mantissa = printed.prefix { $0 != "e" }
                check(String((mantissa + tail).prefix(20)) + printed.drop { $0 != "e" })
            }
        }
        // Exactly halfway between two doubles (ties, which round to even), and one unit of the last digit
        // either side: N · 2^s for odd 54-bit N, written with s < 0 as N · 5^-s with -s decimals.
        for _ in 0..<20_000 {
            let odd = (generator.next() >> 10) | (1 << 53) | 1
            let shift = Int(generator.next() % 14) - 4
            var digits = odd.multipliedReportingOverflow(by: 1 << UInt64(max(0, shift)))
            if shift < 0 {
                var power: UInt64 = 1
                for _ in 0..<(-shift) { power *= 5 }
                digits = odd.multipliedReportingOverflow(by: power)
            }
            guard !digits.overflow, digits.partialValue < 10_000_000_000_000_000_000 else { continue }
            for delta in [0, 1, -1] as [Int64] {
                let text = String(Int64(bitPattern: digits.partialValue) + delta)
                let decimals = max(0, -shift)
                check(decimals == 0 ? text : text + "e-\(decimals)")
                check(String(text.dropLast(decimals)) + "." + String(text.suffix(decimals)) + "0")
            }
        }
        #expect(answered > total / 2, "answered \(answered) of \(total)")
        #expect(writtenAnswered >= written * 99 / 100, "answered \(writtenAnswered) of \(written) written numbers")
        // Syntax forms and signs.
        for text in ["0", "-0", "0.0", "-0.0", "1e22", "1e23", "9999999999999999999", "1E+5", "5e-324", "123.456e-7"] {
            if let ours = Self.fast(text) { #expect(ours.bitPattern == Self.strtodValue(text).bitPattern, "\(text)") }
        }
        #expect(Self.fast("-0.0")?.sign == .minus)
        #expect(Self.fast("12345678901234567890") == nil)
        #expect(Self.fast("1e23") == nil)
    }
}
