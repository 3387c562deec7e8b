/// Decimal text to the nearest Double without `strtod`, for the common case: at most 19 significant
/// digits and a decimal exponent within ±22 of them (every number pmq writes into a profile). glibc's
/// `strtod` takes a multi-precision path for most 17-digit numbers, a tenth of reading a
/// DeepSeek-V3-shaped profile.
///
/// The digits w (< 10¹⁹) and power p = 10^|q| (exact in a Double for |q| ≤ 22) give the value w·p or
/// w / p. With a = Double(w) and the exact integer e = w − a, the quotient is q₀ + c where q₀ = a / p
/// rounded, r = a − q₀·p exact (one fused multiply-add) and c = (r + e) / p, good to about 2⁻⁵⁰ of
/// its size; a product is hi + c with hi = a·p, lo = a·p − hi exact and c = lo + e·p. The result
/// s = q₀ + c is the correctly rounded value unless the remainder d = (q₀ − s) + c lies within 2⁻⁴⁰
/// of a step of s from a point halfway to a neighbour: then, and for anything else, nil, and the
/// caller asks `strtod`. `StrictJSONTests` compares the two on millions of texts, bit for bit.
enum FastDecimal {
    static let powers: [Double] = (0...22).map { exponent in
        var value = 1.0
        for _ in 0..<exponent { value *= 10 }
        return value
    }

    /// The number in `text` (JSON number syntax, already checked), or nil for `strtod` to read.
    static func parse(_ text: UnsafeBufferPointer<UInt8>) -> Double? {
        var index = 0
        let negative = text.count > 0 && text[0] == UInt8(ascii: "-")
        if negative { index = 1 }
        var digits: UInt64 = 0, significant = 0, exponent = 0
        var fraction = false
        while index < text.count {
            let byte = text[index]
            if byte == UInt8(ascii: ".") {
                fraction = true
            } else {
                let digit = byte &- UInt8(ascii: "0")
                guard digit < 10 else { break }
                if digits != 0 || digit != 0 {
                    significant += 1
                    guard significant <= 19 else { return nil }
                    digits = digits &* 10 &+ UInt64(digit)
                }
                if fraction { exponent -= 1 }
            }
            index += 1
        }
        if index < text.count {
            // `e` or `E`, an optional sign, digits.
            index += 1
            var negativeExponent = false
            if index < text.count, text[index] == UInt8(ascii: "-") || text[index] == UInt8(ascii: "+") {
                negativeExponent = text[index] == UInt8(ascii: "-")
                index += 1
            }
            var written = 0
            while index < text.count {
                written = written * 10 + Int(text[index] &- UInt8(ascii: "0"))
                guard written < 1000 else { return nil }
                index += 1
            }
            exponent += negativeExponent ? -written : written
        }
        guard digits != 0 else { return negative ? -0.0 : 0.0 }
        guard let magnitude = value(digits, exponent) else { return nil }
        return negative ? -magnitude : magnitude
    }

    /// digits · 10^exponent correctly rounded, or nil when this method cannot tell.
    static func value(_ digits: UInt64, _ exponent: Int) -> Double? {
        guard (-22...22).contains(exponent) else { return nil }
        let a = Double(digits)
        // |e| ≤ half an ulp of a (≤ 2¹⁰ for digits < 2⁶⁴): exact as a Double.
        let e = Double(Int64(bitPattern: digits &- UInt64(a)))
        if exponent == 0 { return a }
        let p = powers[abs(exponent)]
        let base: Double, c: Double
        if exponent < 0 {
            base = a / p
            let r = a.addingProduct(-base, p)
            c = (r + e) / p
        } else {
            base = a * p
            let lo = (-base).addingProduct(a, p)
            c = lo + e * p
        }
        let s = base + c
        guard s.isFinite, s.isNormal else { return nil }
        let d = (base - s) + c
        let up = (s.nextUp - s) / 2, down = (s - s.nextDown) / 2
        let tolerance = min(up, down) * 0x1p-40
        guard d < up - tolerance, d > -down + tolerance else { return nil }
        return s
    }
}
