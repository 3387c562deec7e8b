/// `exp` on eight lanes at once: Cephes' single-precision range reduction (x = n·ln 2 + r,
/// ln 2 split in two) and degree-6 polynomial, 2ⁿ put in the exponent bits. Largest relative
/// error 1.2e-7 against `exp` in Double over [−87, 88] (tested); inputs below −87.3 give
/// ≈ 1e-38 instead of a denormal or 0, inputs above 88.3 give ≈ 2e38. About 4× `expf` per value
/// on AVX2 (docs/KERNELS.md). `pointwiseMin`/`pointwiseMax` are not inlined by Swift 6.3 and
/// the SIMD `rounded` is lowered lane by lane, hence the `replacing` and the 1.5·2²³ trick.
extension Kernels {
    @inlinable @inline(__always)
    public static func exp(_ input: SIMD8<Float>) -> SIMD8<Float> {
        let low = SIMD8<Float>(repeating: -87.3), high = SIMD8<Float>(repeating: 88.3)
        let x = input.replacing(with: low, where: input .< low).replacing(with: high, where: input .> high)
        // n = round(x · log2 e): adding 1.5 · 2²³ rounds to an integer, held in the low mantissa bits.
        let shifted = x * 1.442695041 + 12_582_912
        let n = shifted - 12_582_912
        let r = x - n * 0.693359375 + n * 2.12194440e-4
        var p = SIMD8<Float>(repeating: 1.9875691500e-4)
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        p = p * (r * r) + r + 1
        let integer = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000
        return p * unsafeBitCast((integer &+ 127) &<< 23, to: SIMD8<Float>.self)
    }

    /// `exp` of one value through the eight-lane kernel (for loop tails).
    @inlinable @inline(__always)
    public static func exp(_ value: Float) -> Float { exp(SIMD8(repeating: value))[0] }

    /// Loads eight floats from `pointer` (no alignment needed).
    @inlinable @inline(__always)
    public static func load8(_ pointer: UnsafePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(pointer).loadUnaligned(as: SIMD8<Float>.self)
    }
}
