import Foundation
import ModelFormat

/// Seeded mutations of a valid input: byte-level (flips, interesting bytes, insertions, deletions,
/// duplications, truncation) and JSON-aware (a number or literal replaced by an extreme one, a key
/// repeated). The same (seed, case) always gives the same bytes, so a finding is reproduced by
/// `pmq fuzz --seed S --case N --format F --save FILE`.
public struct Mutator {
    var random: SplitMix64

    public init(seed: UInt64) { random = SplitMix64(seed: seed) }

    /// The case's own generator: a hash of the run's seed, the format and the case number.
    public static func caseSeed(seed: UInt64, format: String, index: Int) -> UInt64 {
        var hash = FNV1a(seed: seed)
        hash.add(bytes: format.utf8)
        return (hash.value ^ UInt64(truncatingIfNeeded: index)) &* 0x9E37_79B9_7F4A_7C15
    }

    mutating func below(_ bound: Int) -> Int { bound <= 1 ? 0 : Int(random.next() % UInt64(bound)) }

    static let interestingBytes: [UInt8] = Array("\"{}[],:-.0e9tfn\\ ".utf8) + [0x00, 0x01, 0x7F, 0x80, 0xC0, 0xFF]
    static let interestingValues = [
        "0", "-1", "1e308", "-1e308", "1e-320", "9223372036854775807", "-9223372036854775808", "18446744073709551616",
        "4294967296", "2147483648", "1e27", "2.5", "NaN", "Infinity", "-Infinity", "true", "false", "null", "\"x\"",
        "[]", "{}", "1" + String(repeating: "0", count: 40), "0.0000000000000000000000000001",
    ]

    /// One to four mutations of `input`.
    public mutating func mutate(_ input: [UInt8]) -> [UInt8] {
        var bytes = input
        for _ in 0...below(4) { bytes = mutateOnce(bytes) }
        return bytes
    }

    mutating func mutateOnce(_ input: [UInt8]) -> [UInt8] {
        var bytes = input
        guard !bytes.isEmpty else { return [Self.interestingBytes[below(Self.interestingBytes.count)]] }
        let position = below(bytes.count)
        switch below(9) {
        case 0: bytes[position] ^= UInt8(1) << UInt8(below(8))
        case 1: bytes[position] = Self.interestingBytes[below(Self.interestingBytes.count)]
        case 2: bytes.insert(Self.interestingBytes[below(Self.interestingBytes.count)], at: position)
        case 3: bytes.removeSubrange(position..<min(bytes.count, position + 1 + below(16)))
        case 4:
            let end = min(bytes.count, position + 1 + below(64))
            bytes.insert(contentsOf: bytes[position..<end], at: below(bytes.count))
        case 5: bytes.removeSubrange(below(bytes.count)..<bytes.count)
        case 6, 7: bytes = replaceToken(bytes)
        default: bytes = repeatKey(bytes)
        }
        return bytes
    }

    /// A JSON number or literal (found from a random point on) replaced by an extreme value.
    mutating func replaceToken(_ bytes: [UInt8]) -> [UInt8] {
        let isTokenByte: (UInt8) -> Bool = {
            ($0 >= 0x30 && $0 <= 0x39) || [0x2D, 0x2E, 0x2B, 0x65, 0x45].contains($0)
                || ($0 >= 0x61 && $0 <= 0x7A)
        }
        var start = below(bytes.count)
        while start < bytes.count,
            !(bytes[start] >= 0x30 && bytes[start] <= 0x39) && bytes[start] != 0x74
                && bytes[start] != 0x66 && bytes[start] != 0x6E
        {
            start += 1
        }
        guard start < bytes.count else { return bytes }
        while start > 0, isTokenByte(bytes[start - 1]) { start -= 1 }
        var end = start
        while end < bytes.count, isTokenByte(bytes[end]) { end += 1 }
        var result = bytes
        result.replaceSubrange(
            start..<end, with: Array(Self.interestingValues[below(Self.interestingValues.count)].utf8))
        return result
    }

    /// A `"key": value` pair copied in front of itself (a duplicate key).
    mutating func repeatKey(_ bytes: [UInt8]) -> [UInt8] {
        guard let colon = bytes[below(bytes.count)...].firstIndex(of: UInt8(ascii: ":")),
            let quoteEnd = bytes[..<colon].lastIndex(of: UInt8(ascii: "\"")),
            let quoteStart = bytes[..<quoteEnd].lastIndex(of: UInt8(ascii: "\"")),
            let comma = bytes[colon...].firstIndex(where: { $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "}") })
        else { return bytes }
        var result = bytes
        result.insert(contentsOf: bytes[quoteStart..<comma] + [UInt8(ascii: ",")], at: quoteStart)
        return result
    }
}
