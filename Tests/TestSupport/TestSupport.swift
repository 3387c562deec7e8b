import Foundation

/// What several test targets share: where the committed fixtures are, and a deterministic
/// generator for test inputs.
public enum TestFixtures {
    /// `Tests/Fixtures` (tiny models, GPTQ and packing cases, tokenizers).
    public static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")
    /// `Tests/Fixtures/tiny`: one tiny random model per architecture with transformers' logits.
    public static let tiny = root.appendingPathComponent("tiny")

    /// 64 calibration tokens spread over a vocabulary of `vocab`.
    public static func calibrationTokens(vocab: Int) -> [Int] { (0..<64).map { ($0 * 37 + 11) % vocab } }
}

/// Deterministic pseudo-random numbers for test inputs (a 64-bit LCG).
public struct TestGenerator {
    public var state: UInt64
    public init(state: UInt64) { self.state = state }
    public mutating func next() -> UInt64 {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return state >> 33
    }
    public mutating func float() -> Float { Float(next() % 1_000_000) / 500_000 - 1 }
    public mutating func int(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}
