#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// 3-bit codes with int8 activations on AVX2 (no VBMI byte gather): decode (`Int8Decode.run3AVX2`) and
/// prefill (`Int8PrefillAVX2.block3`).
///
/// A 32-code block is three words per output, code `k` at bits `3k…3k+2` of the 96 (GPTQ's packing);
/// codes 2, 5, 10, 13, 18, 21, 26 and 29 straddle a byte or word boundary, the other 24 lie inside a
/// byte at an offset `3k mod 8` in 0…5. The four codes of each offset sit in four different byte
/// positions of the three words, so one byte blend of the words per offset pair (`unpack3`) puts them
/// side by side: shifted by the offset and masked with `0x07070707`, that word holds four codes, one a
/// byte, ready for `vpmaddubsw` as at 1, 2 and 4 bits. The straddling codes are assembled with shifts
/// into two more planes. `code3(plane:byte:)` says which code each byte holds; `Int8Decode.prepare`
/// places the int8 inputs to match.
extension PackedKernel.Int8Decode {
    /// 3 bits on AVX2: the code of a 32-code block that byte `byte` of plane `plane` of `unpack3` holds.
    static func code3(plane: Int, byte: Int) -> Int {
        [
            0, 24, 16, 8, 1, 25, 17, 9, 11, 3, 27, 19, 12, 4, 28, 20,
            22, 14, 6, 30, 23, 15, 7, 31, 2, 5, 13, 18, 10, 21, 26, 29,
        ][4 * plane + byte]
    }

    #if arch(x86_64)
    /// The eight code planes of one block (`code3`), one code per byte, from its three words.
    @inline(__always)
    static func unpack3(_ w0: Words, _ w1: Words, _ w2: Words) -> (
        Words, Words, Words, Words, Words, Words, Words, Words
    ) {
        let mask = Words(repeating: 0x0707_0707)
        let outer = Words(repeating: 0xFF00_00FF), second = Words(repeating: 0x0000_FF00)
        let third = Words(repeating: 0x00FF_0000)
        // Offsets 0 and 3: bytes 0 and 3 of w0, 2 of w1, 1 of w2; 1 and 4: 1 of w0, 0 and 3 of w1, 2 of w2;
        // 2 and 5: 2 of w0, 1 of w1, 0 and 3 of w2.
        let m0 = (w0 & outer) | (w1 & third) | (w2 & second)
        let m1 = (w0 & second) | (w1 & outer) | (w2 & third)
        let m2 = (w0 & third) | (w1 & second) | (w2 & outer)
        // Codes 2 (w0 bits 6–8), 5 (15–17), 13 (w1 7–9), 18 (22–24) into bytes 0…3.
        let s0 =
            ((w0 &>> 6) & 0x7) | ((w0 &>> 7) & 0x700) | ((w1 &<< 9) & 0x7_0000) | ((w1 &<< 2) & 0x700_0000)
        // Codes 10 (w0 bits 30–31, w1 bit 0), 21 (w1 bit 31, w2 bits 0–1), 26 (w2 14–16), 29 (23–25).
        let s1 =
            (w0 &>> 30) | ((w1 &<< 2) & 0x4) | ((w1 &>> 23) & 0x100) | ((w2 &<< 9) & 0x600)
            | ((w2 &<< 2) & 0x7_0000) | ((w2 &<< 1) & 0x700_0000)
        return (
            m0 & mask, (m0 &>> 3) & mask, (m1 &>> 1) & mask, (m1 &>> 4) & mask, (m2 &>> 2) & mask,
            (m2 &>> 5) & mask, s0, s1
        )
    }

    /// `run` at 3 bits on AVX2: the same groups, sweeps (two blocks of three word rows) and flushes.
    static func run3AVX2(
        _ operands: PackedOperands, _ prepared: Prepared, _ groups: Range<Int>, _ tiles: Range<Int>
    ) {
        runGroups(Width3.self, operands, prepared, groups, tiles, step: PackedKernel.Decode.blocksPerSweep) {
            sweep3(operands, prepared, blocks: $0, tiles: tiles, sums: $1, first: $2)
        }
    }

    @inline(never)
    static func sweep3(
        _ operands: PackedOperands, _ prepared: Prepared, blocks: Range<Int>, tiles: Range<Int>,
        sums: UnsafeMutablePointer<Float>, first: Bool
    ) {
        for tileIndex in tiles {
            let o = tileIndex &* PackedKernel.Decode.tile
            var t0 = Ints(), t1 = Ints()
            for block in blocks {
                let x = prepared.planes + block &* 8
                t0 &+= blockSum3(operands, block: block, output: o, x)
                t1 &+= blockSum3(operands, block: block, output: o &+ 8, x)
            }
            PackedKernel.Decode.add(
                sums + (tileIndex - tiles.lowerBound) * PackedKernel.Decode.tile, SIMDConvert.float(t0),
                SIMDConvert.float(t1),
                first: first)
        }
    }

    /// `Σ x̂·q` of one block for outputs `o ..< o + 8`: the eight planes' byte products summed in int16
    /// (at most 8 · 2 · 7 · 127 = 14224), then widened.
    @inline(__always)
    static func blockSum3(_ operands: PackedOperands, block: Int, output o: Int, _ x: UnsafePointer<UInt32>) -> Ints {
        let out = operands.outFeatures
        let p = operands.qweight + (3 &* block &* out &+ o)
        let (c0, c1, c2, c3, c4, c5, c6, c7) = unpack3(
            UnsafeRawPointer(p).loadUnaligned(as: Words.self),
            UnsafeRawPointer(p + out).loadUnaligned(as: Words.self),
            UnsafeRawPointer(p + 2 &* out).loadUnaligned(as: Words.self))
        var s = maddubs(c0, Words(repeating: x[0]))
        s &+= maddubs(c1, Words(repeating: x[1]))
        s &+= maddubs(c2, Words(repeating: x[2]))
        s &+= maddubs(c3, Words(repeating: x[3]))
        s &+= maddubs(c4, Words(repeating: x[4]))
        s &+= maddubs(c5, Words(repeating: x[5]))
        s &+= maddubs(c6, Words(repeating: x[6]))
        s &+= maddubs(c7, Words(repeating: x[7]))
        return madd(s, Shorts(repeating: 1))
    }
    #endif
}

extension PackedKernel.Int8PrefillAVX2 {
    #if arch(x86_64)
    /// The eight code planes (`Int8Decode.unpack3`) of outputs `16·tile ..< +8` then `+8 ..< +16` for each
    /// 32-code block of `blocks`, 16 plane vectors a block from `planes`.
    @inline(__always)
    static func unpack3(op: PackedOperands, blocks: Range<Int>, tile: Int, into planes: UnsafeMutablePointer<Words>) {
        let o = tile &* PackedKernel.Decode.tile, out = op.outFeatures
        func load(_ q: UnsafePointer<UInt32>) -> Words { UnsafeRawPointer(q).loadUnaligned(as: Words.self) }
        var destination = planes
        for block in blocks {
            let p = op.qweight + (3 &* block &* out &+ o)
            for half in 0..<2 {
                let q = p + half &* 8
                let c = PackedKernel.Int8Decode.unpack3(load(q), load(q + out), load(q + 2 &* out))
                destination[0] = c.0
                destination[1] = c.1
                destination[2] = c.2
                destination[3] = c.3
                destination[4] = c.4
                destination[5] = c.5
                destination[6] = c.6
                destination[7] = c.7
                destination += 8
            }
        }
    }

    /// `block` at 3 bits: group `g`'s 32-code blocks of tile `tile` for the four tokens from `t0`, their
    /// planes unpacked by `unpack3` into `planes`. Per token the eight planes' int16 pair sums are added in
    /// int16 (at most 8 · 2 · 7 · 127 = 14224) and widened once a block.
    @inline(__always)
    static func block3(
        _ inputs: Inputs, planes: UnsafePointer<Words>, blocks: Range<Int>, group g: Int, tile: Int, t0: Int
    ) {
        typealias Decode8 = PackedKernel.Int8Decode
        let x = inputs.planes + (t0 / blockTokens) &* blockTokens &* inputs.planeStride
        let ones = Decode8.Shorts(repeating: 1)
        var a0 = Ints(), a1 = Ints(), a2 = Ints(), a3 = Ints()
        var b0 = Ints(), b1 = Ints(), b2 = Ints(), b3 = Ints()
        var c = planes
        for block in blocks {
            let xb = x + block &* 8 &* blockTokens
            // Token k's inputs for plane q are at xb[q · 4 + k].
            @inline(__always) func sums(_ k: Int) -> (Ints, Ints) {
                func input(_ q: Int) -> Words { Words(repeating: xb[q &* blockTokens &+ k]) }
                var low = Decode8.maddubs(c[0], input(0)), high = Decode8.maddubs(c[8], input(0))
                low &+= Decode8.maddubs(c[1], input(1))
                high &+= Decode8.maddubs(c[9], input(1))
                low &+= Decode8.maddubs(c[2], input(2))
                high &+= Decode8.maddubs(c[10], input(2))
                low &+= Decode8.maddubs(c[3], input(3))
                high &+= Decode8.maddubs(c[11], input(3))
                low &+= Decode8.maddubs(c[4], input(4))
                high &+= Decode8.maddubs(c[12], input(4))
                low &+= Decode8.maddubs(c[5], input(5))
                high &+= Decode8.maddubs(c[13], input(5))
                low &+= Decode8.maddubs(c[6], input(6))
                high &+= Decode8.maddubs(c[14], input(6))
                low &+= Decode8.maddubs(c[7], input(7))
                high &+= Decode8.maddubs(c[15], input(7))
                return (Decode8.madd(low, ones), Decode8.madd(high, ones))
            }
            var (l, h) = sums(0)
            a0 &+= l
            b0 &+= h
            (l, h) = sums(1)
            a1 &+= l
            b1 &+= h
            (l, h) = sums(2)
            a2 &+= l
            b2 &+= h
            (l, h) = sums(3)
            a3 &+= l
            b3 &+= h
            c += 16
        }
        add(inputs, group: g, tile: tile, t0: t0, (a0, a1, a2, a3), (b0, b1, b2, b3))
    }
    #endif
}
