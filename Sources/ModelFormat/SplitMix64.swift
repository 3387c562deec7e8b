import Foundation

/// SplitMix64 (Steele, Lea & Flood 2014): small, seedable, identical on every platform — the one
/// generator behind every seeded draw in pmq (synthetic profiles, the random baseline, OTP's
/// Gumbel noise and minibatches, sampling in `generate`, test data).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    public mutating func uniform() -> Double { (Double(next() >> 11) + 0.5) / 9_007_199_254_740_992 }
    /// Uniform in (0, 1), never 0 or 1 in Float.
    public mutating func uniformFloat() -> Float { (Float(next() >> 41) + 0.5) / 8_388_608 }
    /// Uniform integer in `0..<bound`.
    public mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
    /// Standard normal (Box–Muller).
    public mutating func gaussian() -> Double {
        sqrt(-2 * log(uniform())) * cos(2 * Double.pi * uniform())
    }
}
