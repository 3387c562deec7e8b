/// FNV-1a, 64-bit: the one hash behind pmq's fingerprints (profile checkpoints, calibration tokens,
/// model digests, measured-front work folders). Each `add` folds in one element, a byte or a whole
/// integer, as the fingerprints written so far were computed.
public struct FNV1a: Sendable {
    public private(set) var value: UInt64

    /// The standard offset basis, optionally xor-ed with `seed`.
    public init(seed: UInt64 = 0) { value = 0xcbf2_9ce4_8422_2325 ^ seed }

    public mutating func add(_ element: UInt64) { value = (value ^ element) &* 0x0000_0100_0000_01B3 }

    public mutating func add(_ element: Int) { add(UInt64(truncatingIfNeeded: element)) }

    public mutating func add<Bytes: Sequence>(bytes: Bytes) where Bytes.Element == UInt8 {
        for byte in bytes { add(UInt64(byte)) }
    }

    /// The hash of `elements`, one element each.
    public static func hash<Elements: Sequence>(_ elements: Elements) -> UInt64 where Elements.Element == Int {
        var hasher = FNV1a()
        for element in elements { hasher.add(element) }
        return hasher.value
    }

    public var hex: String { String(value, radix: 16) }
}
