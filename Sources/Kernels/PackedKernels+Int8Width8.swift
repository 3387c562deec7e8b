#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// 8-bit codes with int8 activations on AVX2 (decode: attention and head at `--attention-bits 8`). At
/// 8 bits `vpmaddubsw` would overflow its int16 pair sums (2 · 255 · 127), so the codes go through
/// `vpmaddwd` instead: a word's even bytes (`w & 0x00FF00FF`) and odd bytes (`(w >> 8) & 0x00FF00FF`)
/// are two int16 codes a lane, and the row's four int8 inputs, sign-extended to int16 in the same
/// pairs (`Prepared.pairs`), meet them in one `vpmaddwd` each, summed exactly in int32 over the group
/// (at most 64 · 64770 at groups of 256). The same flush as the other widths.
extension PackedKernel.Int8Decode {
    #if arch(x86_64)
    /// `run` at 8 bits on AVX2: the same groups, sweeps and flushes.
    static func run8AVX2(
        _ operands: PackedOperands, _ prepared: Prepared, _ groups: Range<Int>, _ tiles: Range<Int>
    ) {
        runGroups(Width8.self, operands, prepared, groups, tiles, step: PackedKernel.Decode.rowsPerSweep) {
            sweep8(operands, prepared, rows: $0, tiles: tiles, sums: $1, first: $2)
        }
    }

    @inline(never)
    static func sweep8(
        _ operands: PackedOperands, _ prepared: Prepared, rows: Range<Int>, tiles: Range<Int>,
        sums: UnsafeMutablePointer<Float>, first: Bool
    ) {
        let out = operands.outFeatures, bytes = Words(repeating: 0x00FF_00FF), pairs = prepared.pairs!
        for tileIndex in tiles {
            let o = tileIndex &* PackedKernel.Decode.tile
            var t0 = Ints(), t1 = Ints()
            for row in rows {
                // The row's inputs x0…x3 as int16 pairs: (x0, x2) and (x1, x3).
                let even = unsafeBitCast(Words(repeating: pairs[2 &* row]), to: Shorts.self)
                let odd = unsafeBitCast(Words(repeating: pairs[2 &* row &+ 1]), to: Shorts.self)
                let p = operands.qweight + (row &* out &+ o)
                let w0 = UnsafeRawPointer(p).loadUnaligned(as: Words.self)
                let w1 = UnsafeRawPointer(p + 8).loadUnaligned(as: Words.self)
                t0 &+= madd(unsafeBitCast(w0 & bytes, to: Shorts.self), even)
                t0 &+= madd(unsafeBitCast((w0 &>> 8) & bytes, to: Shorts.self), odd)
                t1 &+= madd(unsafeBitCast(w1 & bytes, to: Shorts.self), even)
                t1 &+= madd(unsafeBitCast((w1 &>> 8) & bytes, to: Shorts.self), odd)
            }
            PackedKernel.Decode.add(
                sums + (tileIndex - tiles.lowerBound) * PackedKernel.Decode.tile, SIMDConvert.float(t0),
                SIMDConvert.float(t1),
                first: first)
        }
    }
    #endif
}
