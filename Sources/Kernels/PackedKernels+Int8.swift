#if arch(x86_64)
import _Builtin_intrinsics.intel
import KernelsVNNI
#endif

extension Kernels {
    /// Decode matvecs of packed linears quantize the activations to int8 per quantization group and
    /// take integer dot products (`PackedKernel.Int8Decode`), as llama.cpp does: widths 1, 2, 3, 4 and
    /// 8 on AVX2 and on AVX-512 VNNI + VBMI (`CPUFeatures.vnni`). The result differs from the float
    /// kernels by at most `Σ_i (d_g/2)·|ŵ_i|` plus float rounding, `d_g = max_{i∈g}|x_i|/127` the
    /// group's activation step (tested against `referenceLinear`). Prefill takes int8 activations too,
    /// at the same widths (`PackedKernel.Int8Prefill` on VNNI, `Int8PrefillAVX2` elsewhere). Off
    /// here (the library's kernels stay exact unless asked); `pmq generate` and `pmq bench runtime`
    /// turn it on unless `--exact-activations` is given. Other widths and architectures keep the
    /// float kernels.
    /// A task-local, set for a scope with `Kernels.$int8Activations.withValue`.
    @TaskLocal public static var int8Activations = false
}

extension PackedOperands {
    /// The rows the int8 kernels walk: word rows, or 3-word blocks of 32 codes at 3 bits.
    var int8Rows: Int { bits == 3 ? wordRows / 3 : wordRows }
    /// Those rows per quantization group (groups are whole rows where the int8 kernels apply).
    var int8RowsPerGroup: Int { bits == 3 ? groupSize / 32 : groupSize / (32 / bits) }
}

extension PackedKernel {
    /// The decode matvec with int8 activations: per group `g` and output, `Σ_i x_i·q_i` becomes
    /// `d_g·Σ_i x̂_i·q_i` with `x̂_i = round(x_i/d_g)` in int8 and the codes as unsigned bytes, summed
    /// exactly in integers by `vpmaddubsw` (byte pairs → int16) and `vpmaddwd` (int16 pairs → int32);
    /// `Σ x` of the zero term is `d_g·Σ x̂` so that the group's algebra is exact for x̂.
    ///
    /// A word holds `32 / bits` codes of one output, `8 / bits` per byte: "plane" `p` of a word is
    /// its bytes' `p`-th codes, `(w >> bits·p) & mask` per byte, i.e. codes `p, P + p, 2P + p, 3P + p`
    /// (`P = 8 / bits`), and meets the four int8 inputs of those positions packed in one word
    /// (`Prepared.planes`), broadcast to the 8 outputs of a vector. 16-bit partial sums are widened
    /// every `rowsPerWiden` word rows, before they can overflow. Tiles of 16 outputs, threads, the
    /// row sweeps and the per-group flush are `Decode`'s.
    enum Int8Decode {
        static func applies(_ operands: PackedOperands) -> Bool {
            #if arch(x86_64)
            guard operands.int8Activations, Decode.applies(operands) else { return false }
            switch operands.bits {
            case 1, 2, 4: return true
            // 3 bits: whole 3-word blocks only (`in` a multiple of 32, as in every real model).
            case 3: return operands.inFeatures % 32 == 0
            case 8: return true
            default: return false
            }
            #else
            return false
            #endif
        }

        /// Per-call inputs shared by all tiles.
        struct Prepared: @unchecked Sendable {
            /// `[wordRows, 8 / bits]`: per word row and plane, four int8 inputs (zero past the last input).
            let planes: UnsafeMutablePointer<UInt32>
            /// Per group: the activation step `d_g` and `d_g·Σ x̂`.
            let steps: UnsafeMutablePointer<Float>
            let groupSums: UnsafeMutablePointer<Float>
            /// 8 bits on AVX2: `[wordRows, 2]`, a word row's inputs as int16 pairs, (x0, x2) then (x1, x3),
            /// the operands of `sweep8`'s `vpmaddwd` (made once here instead of once per tile).
            var pairs: UnsafeMutablePointer<UInt32>? = nil

            func deallocate() {
                planes.deallocate()
                steps.deallocate()
                groupSums.deallocate()
                pairs?.deallocate()
            }
        }

        /// Planes, steps and `d_g·Σ x̂` of every token of `operands` (token `t`'s at `t·planeStride`
        /// and `t·groups`).
        static func prepare(_ operands: PackedOperands) -> Prepared {
            let bits = operands.bits, tokens = operands.tokens
            let inputs = operands.inFeatures, groupSize = operands.groupSize, groups = operands.groups
            // Codes per word row (per 3-word block at 3 bits) and planes per row (block).
            let perRow = bits == 3 ? 32 : 32 / bits, planeCount = planeCount(bits: bits)
            let rowCount = operands.int8Rows
            let steps = UnsafeMutablePointer<Float>.allocate(capacity: tokens * groups)
            let groupSums = UnsafeMutablePointer<Float>.allocate(capacity: tokens * groups)
            let planes = UnsafeMutablePointer<UInt32>.allocate(capacity: tokens * rowCount * planeCount)
            planes.initialize(repeating: 0, count: tokens * rowCount * planeCount)
            // Where code k of a row lands among the row's plane bytes.
            let destination = UnsafeMutablePointer<Int>.allocate(capacity: perRow)
            defer { destination.deallocate() }
            for p in 0..<planeCount {
                for j in 0..<4 {
                    let k = bits == 3 ? input3(plane: p, byte: j, vnni: operands.vnni) : j * planeCount + p
                    if k >= 0 { destination[k] = 4 * p + j }
                }
            }
            let rowShift = perRow.trailingZeroBitCount, rowMask = perRow - 1 // perRow is a power of two
            // x·(127/peak) is within ±127; adding 1.5·2^23 rounds it to an integer (ties to even) in
            // the low mantissa bits.
            let magic: Float = 12_582_912, magicBits = Int32(bitPattern: magic.bitPattern)
            let shared = (
                planes: UnsafeSendable(planes), steps: UnsafeSendable(steps), sums: UnsafeSendable(groupSums),
                destination: UnsafeSendable(destination)
            )
            // Tokens on all cores (prefill): each writes its own planes, steps and sums.
            Parallel.perform(iterations: tokens, work: tokens * inputs * 16) { t in
                let planes = shared.planes.pointer, steps = shared.steps.pointer, groupSums = shared.sums.pointer
                let destination = shared.destination.pointer
                let x = operands.x + t * inputs
                let bytes = UnsafeMutableRawPointer(planes + t * rowCount * planeCount).assumingMemoryBound(
                    to: UInt8.self)
                for g in 0..<groups {
                    let range = (g * groupSize)..<min((g + 1) * groupSize, inputs)
                    let peak = absoluteMaximum(x + range.lowerBound, count: range.count)
                    let inverse = peak > 0 ? 127 / peak : 0
                    var sum: Int32 = 0
                    for i in range {
                        let q = Int32(bitPattern: (x[i] * inverse + magic).bitPattern) &- magicBits
                        bytes[(i >> rowShift) &* 4 &* planeCount &+ destination[i & rowMask]] = UInt8(
                            truncatingIfNeeded: q)
                        sum &+= q
                    }
                    steps[t * groups + g] = peak / 127
                    groupSums[t * groups + g] = peak / 127 * Float(sum)
                }
            }
            var prepared = Prepared(planes: planes, steps: steps, groupSums: groupSums)
            if bits == 8 && !operands.vnni {
                let count = tokens * rowCount
                let pairs = UnsafeMutablePointer<UInt32>.allocate(capacity: 2 * count)
                for row in 0..<count {
                    let word = planes[row]
                    // Byte k sign-extended to an int16 lane: bits 8k…8k+7 of `word`.
                    let lane = { (k: UInt32) in
                        UInt32(UInt16(bitPattern: Int16(Int8(truncatingIfNeeded: word >> (8 * k)))))
                    }
                    pairs[2 * row] = lane(0) | lane(2) << 16
                    pairs[2 * row + 1] = lane(1) | lane(3) << 16
                }
                prepared.pairs = pairs
            }
            return prepared
        }

        /// Planes per word row (per 3-word block at 3 bits): `Int8DotVNNI.planeCount`'s.
        static func planeCount(bits: Int) -> Int { bits == 3 ? 8 : 8 / bits }

        /// `max_i |x_i|` over `count` floats (NaN-free inputs; a NaN is skipped or kept).
        @inline(__always)
        static func absoluteMaximum(_ x: UnsafePointer<Float>, count: Int) -> Float {
            var i = 0, peak: Float = 0
            #if arch(x86_64)
            if count >= 8 {
                let signless = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF))
                var peaks = _mm256_setzero_ps()
                while i + 8 <= count {
                    peaks = _mm256_max_ps(peaks, _mm256_and_ps(_mm256_loadu_ps(x + i), signless))
                    i += 8
                }
                let lanes = unsafeBitCast(peaks, to: SIMD8<Float>.self)
                peak = max(
                    max(max(lanes[0], lanes[1]), max(lanes[2], lanes[3])),
                    max(max(lanes[4], lanes[5]), max(lanes[6], lanes[7])))
            }
            #endif
            while i < count {
                peak = max(peak, abs(x[i]))
                i += 1
            }
            return peak
        }

        /// 3 bits: the code of a 32-code block that byte `byte` of plane `plane` meets, in the VNNI
        /// kernel's order (`Int8DotVNNI.sources3`) or the AVX2 one's (`code3`); every byte meets one.
        static func input3(plane: Int, byte: Int, vnni: Bool) -> Int {
            #if arch(x86_64)
            return vnni ? Int8DotVNNI.code3(plane: plane, byte: byte) : code3(plane: plane, byte: byte)
            #else
            return -1
            #endif
        }

        /// Adds groups `groups`' terms of outputs `16·tiles` to `operands.y`.
        static func run(_ operands: PackedOperands, prepared: Prepared, groups: Range<Int>, tiles: Range<Int>) {
            #if arch(x86_64)
            if operands.vnni { return runVNNI(operands, prepared, groups, tiles) }
            switch operands.bits {
            case 1: run(Width1.self, operands, prepared, groups, tiles)
            case 2: run(Width2.self, operands, prepared, groups, tiles)
            case 3: run3AVX2(operands, prepared, groups, tiles)
            case 4: run(Width4.self, operands, prepared, groups, tiles)
            case 8: run8AVX2(operands, prepared, groups, tiles)
            default: preconditionFailure("no int8 decode kernel for width \(operands.bits)")
            }
            #else
            preconditionFailure("int8 decode kernel needs x86-64")
            #endif
        }

        #if arch(x86_64)
        /// `run` on AVX-512 VNNI: the same groups, sweeps and flushes, the integer sums from
        /// `Int8DotVNNI` (equal to the AVX2 kernel's, so the floats are too at 1, 2 and 4 bits).
        static func runVNNI(_ operands: PackedOperands, _ prepared: Prepared, _ groups: Range<Int>, _ tiles: Range<Int>)
        {
            let bits = operands.bits
            let rowsPerGroup = operands.int8RowsPerGroup, rowCount = operands.int8Rows
            let step = bits == 3 ? Decode.blocksPerSweep : Decode.rowsPerSweep
            Decode.withSums(tiles) { sums in
                for g in groups {
                    let rows = (g * rowsPerGroup)..<min((g + 1) * rowsPerGroup, rowCount)
                    sums.initialize(repeating: 0, count: tiles.count * Decode.tile)
                    for start in stride(from: rows.lowerBound, to: rows.upperBound, by: step) {
                        Int8DotVNNI.sweep(
                            bits: bits, qweight: operands.qweight, outFeatures: operands.outFeatures,
                            planes: prepared.planes, rows: start..<min(start + step, rows.upperBound), tiles: tiles,
                            sums: sums)
                    }
                    Int8DotVNNI.flush(
                        bits: bits, tiles: tiles, sums: sums, step: prepared.steps[g], groupSum: prepared.groupSums[g],
                        scales: operands.scales + g * operands.outFeatures,
                        zeros: operands.qzeros.map { $0 + g * operands.zeroWordsPerGroup }, y: operands.y)
                }
            }
        }

        typealias Words = SIMD8<UInt32>
        typealias Shorts = SIMD16<Int16>
        typealias Ints = SIMD8<Int32>

        /// Word rows whose 16-bit partial sums fit: each row adds at most `planes · 2 · maxCode · 127`.
        static func rowsPerWiden(bits: Int) -> Int { 32767 / ((8 / bits) * 2 * ((1 << bits) - 1) * 127) }

        static func run<W: PackedWidth>(
            _: W.Type, _ operands: PackedOperands, _ prepared: Prepared, _ groups: Range<Int>, _ tiles: Range<Int>
        ) {
            runGroups(W.self, operands, prepared, groups, tiles, step: Decode.rowsPerSweep) { rows, sums, first in
                sweep(W.self, operands, prepared, rows: rows, tiles: tiles, sums: sums, first: first)
            }
        }

        /// Group by group: `sweep(rows, sums, first)` over the group's rows (word rows, or 32-code blocks
        /// at 3 bits) `step` at a time, adding each tile's `Σ x̂·q` to `sums` (storing it on the group's
        /// first sweep, so `sums` needs no zeroing), then the group's flush (which stores into `y` on the
        /// first group with `operands.overwrite`).
        @inline(__always)
        static func runGroups<W: PackedWidth>(
            _: W.Type, _ operands: PackedOperands, _ prepared: Prepared, _ groups: Range<Int>, _ tiles: Range<Int>,
            step: Int, _ sweep: (Range<Int>, UnsafeMutablePointer<Float>, Bool) -> Void
        ) {
            let rowsPerGroup = operands.int8RowsPerGroup, rowCount = operands.int8Rows
            Decode.withSums(tiles) { sums in
                for g in groups {
                    let rows = (g * rowsPerGroup)..<min((g + 1) * rowsPerGroup, rowCount)
                    for start in stride(from: rows.lowerBound, to: rows.upperBound, by: step) {
                        sweep(start..<min(start + step, rows.upperBound), sums, start == rows.lowerBound)
                    }
                    Decode.flush(
                        W.self, operands, group: g, tiles: tiles, sums: sums, groupSum: prepared.groupSums[g],
                        factor: prepared.steps[g], overwrite: operands.overwrite && g == groups.lowerBound)
                }
            }
        }

        @inline(never)
        static func sweep<W: PackedWidth>(
            _: W.Type, _ operands: PackedOperands, _ prepared: Prepared, rows: Range<Int>,
            tiles: Range<Int>, sums: UnsafeMutablePointer<Float>, first: Bool
        ) {
            for tileIndex in tiles {
                let (a0, a1) = integerSums(W.self, operands, prepared, rows: rows, output: tileIndex * Decode.tile)
                Decode.add(
                    sums + (tileIndex - tiles.lowerBound) * Decode.tile, SIMDConvert.float(a0), SIMDConvert.float(a1),
                    first: first)
            }
        }

        /// `Σ_i x̂_i·q_i` over word rows `rows` for outputs `o ..< o + 16`, exact in int32.
        @inline(__always)
        static func integerSums<W: PackedWidth>(
            _: W.Type, _ operands: PackedOperands, _ prepared: Prepared, rows: Range<Int>,
            output o: Int
        ) -> (Ints, Ints) {
            let bits = W.bits, planeCount = 8 / W.bits
            let mask = Words(repeating: UInt32((1 << bits) - 1) * 0x0101_0101)
            let widen = rowsPerWiden(bits: bits)
            let ones = Shorts(repeating: 1)
            let out = operands.outFeatures
            var t0 = Ints(), t1 = Ints()
            var row = rows.lowerBound
            while row < rows.upperBound {
                let stop = min(row + widen, rows.upperBound)
                var s0 = Shorts(), s1 = Shorts()
                while row < stop {
                    let p = operands.qweight + (row &* out &+ o)
                    let w0 = UnsafeRawPointer(p).loadUnaligned(as: Words.self)
                    let w1 = UnsafeRawPointer(p + 8).loadUnaligned(as: Words.self)
                    let x = prepared.planes + row &* planeCount
                    for plane in 0..<planeCount {
                        let shift = Words(repeating: UInt32(bits * plane))
                        let xs = Words(repeating: x[plane])
                        s0 &+= maddubs((w0 &>> shift) & mask, xs)
                        s1 &+= maddubs((w1 &>> shift) & mask, xs)
                    }
                    row &+= 1
                }
                t0 &+= madd(s0, ones)
                t1 &+= madd(s1, ones)
            }
            return (t0, t1)
        }

        /// Per 16-bit lane: `a[2k]·b[2k] + a[2k+1]·b[2k+1]`, `a` unsigned and `b` signed bytes.
        @inline(__always)
        static func maddubs(_ a: Words, _ b: Words) -> Shorts {
            unsafeBitCast(
                _mm256_maddubs_epi16(unsafeBitCast(a, to: __m256i.self), unsafeBitCast(b, to: __m256i.self)),
                to: Shorts.self)
        }

        /// Per 32-bit lane: `a[2k]·b[2k] + a[2k+1]·b[2k+1]` of 16-bit lanes.
        @inline(__always)
        static func madd(_ a: Shorts, _ b: Shorts) -> Ints {
            unsafeBitCast(
                _mm256_madd_epi16(unsafeBitCast(a, to: __m256i.self), unsafeBitCast(b, to: __m256i.self)), to: Ints.self
            )
        }
        #endif
    }
}
