import Foundation

/// A size budget: nominal average bits per parameter (as papers report) or real bytes.
public enum Budget: Sendable, Equatable, CustomStringConvertible {
    /// `Σ params·width ≤ (numerator/denominator) · Σ params`.
    case bits(numerator: Int128, denominator: Int128)
    /// `Σ packed bytes ≤ bytes`.
    case bytes(Int64)

    /// Parses an average bit width such as `2.5` exactly (no binary rounding).
    public static func parseBits(_ text: String) throws -> Budget {
        guard let (numerator, denominator) = parseDecimal(text), numerator > 0 else {
            throw SolverError.badBudget(
                "'\(text)' is not a positive number of bits (a decimal of at most \(maximumDigits) digits)")
        }
        return .bits(numerator: numerator, denominator: denominator)
    }

    /// Parses a size such as `11.2GB`, `900MiB`, `123456789` (bytes). GB/MB/KB are powers of
    /// 1000, GiB/MiB/KiB powers of 1024. Fractional bytes are dropped.
    public static func parseSize(_ text: String) throws -> Budget {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Int128)] = [
            ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10),
            ("TB", 1_000_000_000_000), ("GB", 1_000_000_000), ("MB", 1_000_000), ("KB", 1000), ("kB", 1000), ("B", 1),
        ]
        var number = trimmed
        var multiplier: Int128 = 1
        for (suffix, factor) in units where trimmed.hasSuffix(suffix) {
            number = String(trimmed.dropLast(suffix.count)).trimmingCharacters(in: .whitespaces)
            multiplier = factor
            break
        }
        guard let (numerator, denominator) = parseDecimal(number), numerator > 0 else {
            throw SolverError.badBudget(
                "'\(text)' is not a size (at most \(maximumDigits) digits; examples: 11.2GB, 900MiB, 123456789)")
        }
        let bytes = numerator * multiplier / denominator
        guard bytes > 0, bytes <= Int128(Int64.max) else { throw SolverError.badBudget("'\(text)' is out of range") }
        return .bytes(Int64(bytes))
    }

    static let maximumDigits = 18

    /// Exact decimal → rational (`"2.54"` → 254/100). No exponents, no signs, at most `maximumDigits` digits.
    static func parseDecimal(_ text: String) -> (Int128, Int128)? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), parts.allSatisfy({ $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) })
        else { return nil }
        let whole = String(parts[0]), fraction = parts.count == 2 ? String(parts[1]) : ""
        // At most 18 digits: every product the program forms with the budget (× parameters, × a unit) stays
        // within Int128.
        guard !(whole.isEmpty && fraction.isEmpty), whole.count + fraction.count <= maximumDigits else { return nil }
        guard let numerator = Int128(whole + fraction) else { return nil }
        var denominator: Int128 = 1
        for _ in 0..<fraction.count { denominator *= 10 }
        return (numerator, denominator)
    }

    public var description: String {
        switch self {
        case let .bits(numerator, denominator): return "\(formatRational(numerator, denominator)) bits"
        case let .bytes(count): return "\(count) bytes (\(formatGB(count)))"
        }
    }

    /// Budget value as a plain number: average bits, or bytes.
    public var value: Double {
        switch self {
        case let .bits(numerator, denominator): return Double(numerator) / Double(denominator)
        case let .bytes(count): return Double(count)
        }
    }

    public var kind: String {
        switch self {
        case .bits: return "bits"
        case .bytes: return "bytes"
        }
    }
}

func formatRational(_ numerator: Int128, _ denominator: Int128) -> String {
    let value = Double(numerator) / Double(denominator)
    return value == value.rounded() ? String(Int(value)) : String(value)
}

/// `12.345 GB` style, decimal gigabytes.
public func formatGB(_ bytes: Int64) -> String {
    let gigabytes = Double(bytes) / 1e9
    if gigabytes >= 1 { return String(format: "%.3f GB", gigabytes) }
    return String(format: "%.3f MB", Double(bytes) / 1e6)
}
