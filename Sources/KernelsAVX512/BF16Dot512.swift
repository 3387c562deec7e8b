#if arch(x86_64)
import CPrefetch

/// The AVX-512 twin of `Kernels.dotsBF16`, the bf16 decode kernel: 32 bf16 weights a vector (16
/// 32-bit words, each two weights widened by a shift and a mask), four weight rows at a time
/// against the same even and odd halves of x. Compiled for Skylake-AVX512; `Kernels` calls it only
/// when `CPUFeatures` allows AVX-512. Sums in a different order from the AVX2 kernel; both are
/// tested against the scalar reference.
public enum BF16Dot512 {
    typealias Words = SIMD16<UInt32>
    typealias Floats = SIMD16<Float>

    /// `y[o] = Σ_j even[j]·w[o, 2j] + odd[j]·w[o, 2j+1]` for `o` in `rows`, `w` with `inFeatures`
    /// (even) bf16 values a row.
    public static func rows(
        even: UnsafePointer<Float>, odd: UnsafePointer<Float>, w: UnsafePointer<UInt16>, inFeatures: Int,
        rows: Range<Int>, y: UnsafeMutablePointer<Float>
    ) {
        let pairs = inFeatures / 2
        var o = rows.lowerBound
        while o + 4 <= rows.upperBound {
            four(even, odd, w + o &* inFeatures, inFeatures, pairs, y + o)
            o &+= 4
        }
        while o < rows.upperBound {
            y[o] = one(even, odd, w + o &* inFeatures, pairs)
            o &+= 1
        }
    }

    @inline(__always)
    static func high(_ v: Words) -> Floats { unsafeBitCast(v &<< 16, to: Floats.self) }

    @inline(__always)
    static func low(_ v: Words) -> Floats { unsafeBitCast(v & Words(repeating: 0xFFFF_0000), to: Floats.self) }

    @inline(__always)
    static func widen(_ bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

    @inline(__always)
    static func four(
        _ even: UnsafePointer<Float>, _ odd: UnsafePointer<Float>, _ w: UnsafePointer<UInt16>, _ stride: Int,
        _ pairs: Int, _ y: UnsafeMutablePointer<Float>
    ) {
        var e0 = Floats(), e1 = Floats(), e2 = Floats(), e3 = Floats()
        var o0 = Floats(), o1 = Floats(), o2 = Floats(), o3 = Floats()
        let re = UnsafeRawPointer(even), ro = UnsafeRawPointer(odd)
        let r0 = UnsafeRawPointer(w), r1 = UnsafeRawPointer(w + stride)
        let r2 = UnsafeRawPointer(w + 2 &* stride), r3 = UnsafeRawPointer(w + 3 &* stride)
        // Software prefetch 2 KiB ahead in each row (past a row's end: the rows that follow). The
        // hardware prefetchers stop at 4 KiB boundaries and the four streams share them; measured on
        // [3584, 1024] and [1024, 3584] bf16 matvecs, 7–10% faster, the synthetic Mixtral's bf16 decode
        // 38.7–44.1 → 46.4–51.0 tokens/s (docs/KERNELS.md). Swift cannot emit a prefetch: `CPrefetch`.
        let ahead = 2048
        var j = 0
        while j &+ 16 <= pairs {
            let offset = 4 &* j
            pmq_prefetch(r0 + (offset &+ ahead))
            pmq_prefetch(r1 + (offset &+ ahead))
            pmq_prefetch(r2 + (offset &+ ahead))
            pmq_prefetch(r3 + (offset &+ ahead))
            let xe = re.loadUnaligned(fromByteOffset: offset, as: Floats.self)
            let xo = ro.loadUnaligned(fromByteOffset: offset, as: Floats.self)
            let w0 = r0.loadUnaligned(fromByteOffset: offset, as: Words.self)
            let w1 = r1.loadUnaligned(fromByteOffset: offset, as: Words.self)
            let w2 = r2.loadUnaligned(fromByteOffset: offset, as: Words.self)
            let w3 = r3.loadUnaligned(fromByteOffset: offset, as: Words.self)
            e0.addProduct(high(w0), xe)
            o0.addProduct(low(w0), xo)
            e1.addProduct(high(w1), xe)
            o1.addProduct(low(w1), xo)
            e2.addProduct(high(w2), xe)
            o2.addProduct(low(w2), xo)
            e3.addProduct(high(w3), xe)
            o3.addProduct(low(w3), xo)
            j &+= 16
        }
        var sums = SIMD4<Float>((e0 + o0).sum(), (e1 + o1).sum(), (e2 + o2).sum(), (e3 + o3).sum())
        while j < pairs {
            for r in 0..<4 {
                let row = w + r &* stride
                sums[r] += even[j] * widen(row[2 &* j]) + odd[j] * widen(row[2 &* j &+ 1])
            }
            j &+= 1
        }
        for r in 0..<4 { y[r] = sums[r] }
    }

    @inline(__always)
    static func one(
        _ even: UnsafePointer<Float>, _ odd: UnsafePointer<Float>, _ w: UnsafePointer<UInt16>, _ pairs: Int
    ) -> Float {
        var e = Floats(), o = Floats()
        let re = UnsafeRawPointer(even), ro = UnsafeRawPointer(odd), rw = UnsafeRawPointer(w)
        var j = 0
        while j &+ 16 <= pairs {
            let offset = 4 &* j
            let words = rw.loadUnaligned(fromByteOffset: offset, as: Words.self)
            e.addProduct(high(words), re.loadUnaligned(fromByteOffset: offset, as: Floats.self))
            o.addProduct(low(words), ro.loadUnaligned(fromByteOffset: offset, as: Floats.self))
            j &+= 16
        }
        var sum = (e + o).sum()
        while j < pairs {
            sum += even[j] * widen(w[2 &* j]) + odd[j] * widen(w[2 &* j &+ 1])
            j &+= 1
        }
        return sum
    }
}
#endif
