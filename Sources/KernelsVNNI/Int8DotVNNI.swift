#if arch(x86_64)
import _Builtin_intrinsics.intel

/// Integer dot products of packed GPTQ codes with int8 activations on AVX-512 VNNI and VBMI. This
/// module is compiled for Skylake-AVX512 plus VNNI and VBMI; `Kernels.CPUFeatures` calls into
/// it only when the CPU reports all of them. Nothing here may run on another CPU.
///
/// A vector holds the same word row of 16 outputs (`qweight` is `[wordRows, out]`). "Plane" `p` of
/// a word is the `p`-th code of each of its bytes, `(w >> bits·p) & mask` per byte (codes
/// `p, P + p, 2P + p, 3P + p` with `P = 8 / bits`); one `vpdpbusd` multiplies its four unsigned
/// bytes with four int8 inputs broadcast from `planes` and adds the four products to the output's
/// int32 sum, exactly (no 16-bit intermediate, so 8-bit codes work too). At 3 bits a block of three
/// words holds 32 codes, two of them straddling words; see `sources3`.
///
/// Sums are exact integers; each sweep adds them, converted to float, to 16 floats per tile in
/// `sums`, as `Kernels`' AVX2 int8 kernel does per sweep, so the two give the same floats.
public enum Int8DotVNNI {
    typealias Words = SIMD16<UInt32>
    typealias Ints = SIMD16<Int32>

    /// Planes per word row (1, 2, 4, 8 bits) or per 32-code block (3 bits).
    public static func planeCount(bits: Int) -> Int { bits == 3 ? 8 : 8 / bits }

    /// 3 bits: the code of a 32-code block that byte `byte` of plane `plane` meets (see `sources3`).
    public static func code3(plane: Int, byte: Int) -> Int {
        plane < 6 ? 10 * (plane / 2) + 4 * (plane % 2) + byte : [8, 9, 18, 19, 28, 29, 30, 31][4 * (plane - 6) + byte]
    }

    /// For word rows (1, 2, 4, 8 bits) or 3-word blocks (3 bits) `rows` and outputs `16·tiles`:
    /// adds `Σ_i x̂_i·q_i` to `sums` (16 floats per tile, from `tiles.lowerBound`). `planes` is
    /// `[rows or blocks, planeCount(bits)]` of four int8 inputs each, in the order the codes are read.
    public static func sweep(
        bits: Int, qweight: UnsafePointer<UInt32>, outFeatures: Int, planes: UnsafePointer<UInt32>,
        rows: Range<Int>, tiles: Range<Int>, sums: UnsafeMutablePointer<Float>
    ) {
        switch bits {
        case 1: sweep(bits: 1, qweight, outFeatures, planes, rows, tiles, sums)
        case 2: sweep(bits: 2, qweight, outFeatures, planes, rows, tiles, sums)
        case 3: sweep3(qweight, outFeatures, planes, rows, tiles, sums)
        case 4: sweep(bits: 4, qweight, outFeatures, planes, rows, tiles, sums)
        case 8: sweep(bits: 8, qweight, outFeatures, planes, rows, tiles, sums)
        default: preconditionFailure("no VNNI kernel for width \(bits)")
        }
    }

    @inline(__always)
    static func sweep(
        bits: Int, _ qweight: UnsafePointer<UInt32>, _ out: Int, _ planes: UnsafePointer<UInt32>,
        _ rows: Range<Int>, _ tiles: Range<Int>, _ sums: UnsafeMutablePointer<Float>
    ) {
        let planeCount = 8 / bits
        let mask = Words(repeating: bits == 8 ? ~0 : UInt32((1 << bits) - 1) * 0x0101_0101)
        for tileIndex in tiles {
            let o = tileIndex &* 16
            // Four independent chains: dpbusd's latency is several of its issue slots.
            var a0 = Ints(), a1 = Ints(), a2 = Ints(), a3 = Ints()
            var row = rows.lowerBound
            while row < rows.upperBound {
                let w = load(qweight + (row &* out &+ o))
                let x = planes + row &* planeCount
                let base = planeCount == 1 ? (row & 1) : planeCount == 2 ? 2 * (row & 1) : 0
                for plane in 0..<planeCount {
                    let codes = plane == 0 ? w & mask : (w &>> UInt32(bits * plane)) & mask
                    let xs = Words(repeating: x[plane])
                    switch (base + plane) & 3 {
                    case 0: a0 = dot(a0, codes, xs)
                    case 1: a1 = dot(a1, codes, xs)
                    case 2: a2 = dot(a2, codes, xs)
                    default: a3 = dot(a3, codes, xs)
                    }
                }
                row &+= 1
            }
            add(sums + (tileIndex &- tiles.lowerBound) &* 16, (a0 &+ a1) &+ (a2 &+ a3))
        }
    }

    /// Byte `i` of dword `d` of each qword reads the 8 bits from `32·d + 3·(4j + i)`: codes
    /// `4j ..< 4j + 4` of a word holding codes at every third bit, for planes `j = 0, 1`.
    static let controls: (Words, Words) = {
        func control(_ j: Int) -> Words {
            var bytes = SIMD64<UInt8>()
            for q in 0..<8 {
                for d in 0..<2 {
                    for i in 0..<4 { bytes[8 * q + 4 * d + i] = UInt8(32 * d + 3 * min(4 * j + i, 9)) }
                }
            }
            return unsafeBitCast(bytes, to: Words.self)
        }
        return (control(0), control(1))
    }()

    /// A 3-bit block `w0, w1, w2` (code `k` at bit `3k` of the 96) as four words holding codes at
    /// every third bit from bit 0: `w0` codes 0–9, `s1 = w0 >> 30 | w1 << 2` codes 10–19,
    /// `s2 = w1 >> 28 | w2 << 4` codes 20–29, and the rest gathered into one: codes 8, 9 of `w0`,
    /// 18, 19 of `s1`, 28, 29 of `s2` and 30, 31 (`w2 >> 26`). Eight planes of four codes each:
    /// codes 0–3 and 4–7 of each (`code3`).
    @inline(__always)
    static func sources3(_ w0: Words, _ w1: Words, _ w2: Words) -> (Words, Words, Words, Words) {
        let s1 = (w0 &>> 30) | (w1 &<< 2), s2 = (w1 &>> 28) | (w2 &<< 4)
        let rest =
            ((w0 &>> 24) & 0x3F) | ((s1 &>> 18) & 0xFC0) | ((s2 &>> 12) & 0x3_F000) | ((w2 &>> 26) &<< 18)
        return (w0, s1, s2, rest)
    }

    /// 3 bits: a block is three words of 32 codes, read as the eight planes of `sources3`, each a
    /// `vpmultishiftqb` byte gather (`controls`) masked to 3 bits.
    static func sweep3(
        _ qweight: UnsafePointer<UInt32>, _ out: Int, _ planes: UnsafePointer<UInt32>,
        _ blocks: Range<Int>, _ tiles: Range<Int>, _ sums: UnsafeMutablePointer<Float>
    ) {
        let mask = Words(repeating: 0x0707_0707)
        let (c0, c1) = controls
        for tileIndex in tiles {
            let o = tileIndex &* 16
            var a0 = Ints(), a1 = Ints(), a2 = Ints(), a3 = Ints()
            var block = blocks.lowerBound
            while block < blocks.upperBound {
                let p = qweight + (3 &* block &* out &+ o)
                let (u0, u1, u2, u3) = sources3(load(p), load(p + out), load(p + 2 &* out))
                let x = planes + block &* 8
                a0 = dot(a0, gather(c0, u0) & mask, Words(repeating: x[0]))
                a1 = dot(a1, gather(c1, u0) & mask, Words(repeating: x[1]))
                a2 = dot(a2, gather(c0, u1) & mask, Words(repeating: x[2]))
                a3 = dot(a3, gather(c1, u1) & mask, Words(repeating: x[3]))
                a0 = dot(a0, gather(c0, u2) & mask, Words(repeating: x[4]))
                a1 = dot(a1, gather(c1, u2) & mask, Words(repeating: x[5]))
                a2 = dot(a2, gather(c0, u3) & mask, Words(repeating: x[6]))
                a3 = dot(a3, gather(c1, u3) & mask, Words(repeating: x[7]))
                block &+= 1
            }
            add(sums + (tileIndex &- tiles.lowerBound) &* 16, (a0 &+ a1) &+ (a2 &+ a3))
        }
    }

    @inline(__always)
    static func load(_ pointer: UnsafePointer<UInt32>) -> Words {
        UnsafeRawPointer(pointer).loadUnaligned(as: Words.self)
    }

    /// `acc + Σ_{k<4} a.byte[4l+k]·b.byte[4l+k]` per 32-bit lane `l`, `a` unsigned, `b` signed.
    @inline(__always)
    static func dot(_ acc: Ints, _ a: Words, _ b: Words) -> Ints {
        unsafeBitCast(
            _mm512_dpbusd_epi32(
                unsafeBitCast(acc, to: __m512i.self), unsafeBitCast(a, to: __m512i.self),
                unsafeBitCast(b, to: __m512i.self)),
            to: Ints.self)
    }

    /// Per byte `b` of each qword: the 8 bits of that qword of `data` from bit `control.byte[b] mod 64`.
    @inline(__always)
    static func gather(_ control: Words, _ data: Words) -> Words {
        unsafeBitCast(
            _mm512_multishift_epi64_epi8(
                unsafeBitCast(control, to: __m512i.self), unsafeBitCast(data, to: __m512i.self)),
            to: Words.self)
    }

    /// `sums[0..<16] += Float(s)`.
    @inline(__always)
    static func add(_ sums: UnsafeMutablePointer<Float>, _ s: Ints) {
        let converted = unsafeBitCast(_mm512_cvtepi32_ps(unsafeBitCast(s, to: __m512i.self)), to: SIMD16<Float>.self)
        let raw = UnsafeMutableRawPointer(sums)
        raw.storeBytes(of: raw.loadUnaligned(as: SIMD16<Float>.self) + converted, as: SIMD16<Float>.self)
    }
}
#endif

#if arch(x86_64)
extension Int8DotVNNI {
    /// The end of a group for tiles `tiles`: `y[o ..< o + 16] += s·(d·Σ − z·d·Σ x̂)` with `Σ` from
    /// `sums` (16 floats per tile from `tiles.lowerBound`), `d` = `step`, `d·Σ x̂` = `groupSum`, the
    /// group's fp16 scales `scales[o]` and packed v1 zeros `zeros` (the group's row of `qzeros`;
    /// nil at width 1, whose zero is ½). 16 lanes at once; `Kernels`' `Decode.flush` in AVX2 does the
    /// same per 8.
    public static func flush(
        bits: Int, tiles: Range<Int>, sums: UnsafePointer<Float>, step: Float, groupSum: Float,
        scales: UnsafePointer<UInt16>, zeros: UnsafePointer<UInt32>?, y: UnsafeMutablePointer<Float>
    ) {
        switch bits {
        case 1: flush(bits: 1, tiles, sums, step, groupSum, scales, zeros, y)
        case 2: flush(bits: 2, tiles, sums, step, groupSum, scales, zeros, y)
        case 3: flush(bits: 3, tiles, sums, step, groupSum, scales, zeros, y)
        case 4: flush(bits: 4, tiles, sums, step, groupSum, scales, zeros, y)
        default: flush(bits: 8, tiles, sums, step, groupSum, scales, zeros, y)
        }
    }

    @inline(__always)
    static func flush(
        bits: Int, _ tiles: Range<Int>, _ sums: UnsafePointer<Float>, _ step: Float, _ groupSum: Float,
        _ scales: UnsafePointer<UInt16>, _ zeros: UnsafePointer<UInt32>?, _ y: UnsafeMutablePointer<Float>
    ) {
        let total = SIMD16<Float>(repeating: groupSum)
        for tileIndex in tiles {
            let o = tileIndex &* 16
            let s = unsafeBitCast(
                _mm512_cvtph_ps(UnsafeRawPointer(scales + o).loadUnaligned(as: __m256i.self)), to: SIMD16<Float>.self)
            let z = zeros16(bits: bits, zeros, output: o)
            let a = UnsafeRawPointer(sums + (tileIndex &- tiles.lowerBound) &* 16).loadUnaligned(
                as: SIMD16<Float>.self)
            let raw = UnsafeMutableRawPointer(y + o)
            var r = raw.loadUnaligned(as: SIMD16<Float>.self)
            r.addProduct(s, a * step - z * total)
            raw.storeBytes(of: r, as: SIMD16<Float>.self)
        }
    }

    /// Zeros of outputs `o ..< o + 16` (`o` a multiple of 16) from a group's row of v1 `qzeros`:
    /// widths 2, 4 and 8 store `zero − 1` borrowed across the word (restored by adding
    /// `Σ 2^(bits·k)` to the whole word), width 3 stores `(zero − 1) mod 8` per value.
    @inline(__always)
    static func zeros16(bits: Int, _ zeros: UnsafePointer<UInt32>?, output o: Int) -> SIMD16<Float> {
        guard bits != 1, let zeros else { return SIMD16(repeating: 0.5) }
        let codes: SIMD16<UInt32>
        switch bits {
        case 3:
            // 48 bits from bit 3·o = 48·(o / 16): two words, offset 0 or 16.
            let position = 3 &* o, index = position &>> 5
            let stream = (UInt64(zeros[index &+ 1]) << 32 | UInt64(zeros[index])) >> UInt64(position & 31)
            let low = UInt32(truncatingIfNeeded: stream), high = UInt32(truncatingIfNeeded: stream >> 24)
            let shifts = SIMD16<UInt32>(0, 3, 6, 9, 12, 15, 18, 21, 0, 3, 6, 9, 12, 15, 18, 21)
            let words = SIMD16<UInt32>(lowHalf: SIMD8(repeating: low), highHalf: SIMD8(repeating: high))
            codes = ((words &>> shifts) &+ 1) & 7
        case 8:
            let w = zeros + (o &>> 2)
            let restored = SIMD4<UInt32>(w[0], w[1], w[2], w[3]) &+ 0x0101_0101
            codes = unsafeBitCast(
                _mm512_cvtepu8_epi32(unsafeBitCast(restored, to: __m128i.self)), to: SIMD16<UInt32>.self)
        case 4:
            let w = zeros + (o &>> 3)
            let words = SIMD16<UInt32>(
                lowHalf: SIMD8(repeating: w[0] &+ 0x1111_1111), highHalf: SIMD8(repeating: w[1] &+ 0x1111_1111))
            let shifts = SIMD16<UInt32>(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28)
            codes = (words &>> shifts) & 15
        default: // 2
            let word = SIMD16<UInt32>(repeating: zeros[o &>> 4] &+ 0x5555_5555)
            let shifts = SIMD16<UInt32>(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
            codes = (word &>> shifts) & 3
        }
        return unsafeBitCast(_mm512_cvtepi32_ps(unsafeBitCast(codes, to: __m512i.self)), to: SIMD16<Float>.self)
    }
}
#endif
