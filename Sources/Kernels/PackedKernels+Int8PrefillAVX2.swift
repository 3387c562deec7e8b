import CPrefetch

#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

extension PackedKernel {
    /// Prefill (4 or more tokens) with int8 activations on AVX2, where the CPU has no VNNI: widths
    /// 1, 2, 3, 4 and 8 (3 bits: `block3`, 8 bits: `block8`), the activations rounded per group as in
    /// `Int8Decode`. Per 16-output tile, group and block of four tokens, each plane's codes are unpacked
    /// once and meet the four tokens' inputs (3 bits: unpacked once per tile and group,
    /// `unpack3(op:blocks:tile:into:)`): `vpmaddubsw` (unsigned code bytes × int8 inputs, pairs summed to
    /// int16, at most 2·15·127) then `vpmaddwd` with ones (pairs to int32), added into int32 sums exact
    /// over the group, then `y += s·(d_g·Σ) + (−s·z)·(d_g·Σ x̂)` as in `Int8GemmVNNI`. The same integers as
    /// the decode kernel, so the same error bound (tested against the scalar reference).
    enum Int8PrefillAVX2 {
        static let blockTokens = 4

        static func applies(_ operands: PackedOperands) -> Bool {
            #if arch(x86_64)
            return !operands.vnni && [1, 2, 3, 4, 8].contains(operands.bits) && Int8Decode.applies(operands)
            #else
            return false
            #endif
        }

        static func run(_ operands: PackedOperands) {
            #if arch(x86_64)
            let out = operands.outFeatures, groups = operands.groups, tokens = operands.tokens
            let prepared = Int8Decode.prepare(operands)
            defer { prepared.deallocate() }
            let planeStride = operands.int8Rows * Int8Decode.planeCount(bits: operands.bits)
            // Blocks of four tokens, each plane word's four tokens side by side; the last block
            // repeats its last token (only real tokens are added to y).
            let blocks = (tokens + blockTokens - 1) / blockTokens
            let interleaved = UnsafeMutablePointer<UInt32>.allocate(capacity: blocks * blockTokens * planeStride)
            defer { interleaved.deallocate() }
            for b in 0..<blocks {
                let block = interleaved + b * blockTokens * planeStride
                for j in 0..<blockTokens {
                    let source = prepared.planes + min(b * blockTokens + j, tokens - 1) * planeStride
                    for k in 0..<planeStride { block[k * blockTokens + j] = source[k] }
                }
            }
            let tiles = out / Decode.tile, tableFloats = 2 * groups * Decode.tile
            let tables = Int8Prefill.tables(operands, tiles: tiles)
            defer { tables.deallocate() }
            let shared = (tables: UnsafeSendable(tables), planes: UnsafeSendable(interleaved))
            parallelFor(tiles, work: tokens * out * operands.inFeatures) { range in
                let inputs = Inputs(
                    operands: operands, planes: shared.planes.pointer, planeStride: planeStride,
                    steps: prepared.steps, groupSums: prepared.groupSums, tables: shared.tables.pointer,
                    tableFloats: tableFloats)
                switch operands.bits {
                case 1: run(inputs, tiles: range) { block(Width1.self, inputs, rows: $0, group: $1, tile: $2, t0: $3) }
                case 2: run(inputs, tiles: range) { block(Width2.self, inputs, rows: $0, group: $1, tile: $2, t0: $3) }
                case 3:
                    // Each 16-output tile's group of 32-code blocks is unpacked once into `planes`, then
                    // meets every block of four tokens.
                    let planes = UnsafeMutablePointer<Words>.allocate(capacity: 16 * operands.int8RowsPerGroup)
                    defer { planes.deallocate() }
                    run(inputs, tiles: range, unpack: { unpack3(op: operands, blocks: $0, tile: $1, into: planes) }) {
                        block3(inputs, planes: planes, blocks: $0, group: $1, tile: $2, t0: $3)
                    }
                case 8: run(inputs, tiles: range) { block8(inputs, rows: $0, group: $1, tile: $2, t0: $3) }
                default: run(inputs, tiles: range) { block(Width4.self, inputs, rows: $0, group: $1, tile: $2, t0: $3) }
                }
            }
            if tiles * Decode.tile < out { Tile.run(operands, outputs: (tiles * Decode.tile)..<out) }
            #else
            preconditionFailure("int8 prefill kernel needs x86-64")
            #endif
        }

        #if arch(x86_64)
        typealias Words = SIMD8<UInt32>
        typealias Ints = SIMD8<Int32>
        typealias Floats = SIMD8<Float>

        struct Inputs {
            let operands: PackedOperands
            let planes: UnsafePointer<UInt32>
            let planeStride: Int
            let steps: UnsafePointer<Float>
            let groupSums: UnsafePointer<Float>
            /// Per tile from tile 0: `[groups, 16]` scales then `[groups, 16]` offsets.
            let tables: UnsafePointer<Float>
            let tableFloats: Int
        }

        /// Tiles in chunks whose outputs for every token stay in L1 (`Int8Prefill.chunkTiles`); in a
        /// chunk, group by group across its tiles, `block(rows, group, tile, first token)` for each block
        /// of four tokens (rows: word rows, or 32-code blocks at 3 bits).
        @inline(__always)
        static func run(_ inputs: Inputs, tiles: Range<Int>, _ block: (Range<Int>, Int, Int, Int) -> Void) {
            run(inputs, tiles: tiles, unpack: { _, _ in }, block)
        }

        /// `run`, calling `unpack(rows, tile)` for each group's rows of a tile before its blocks of tokens.
        @inline(__always)
        static func run(
            _ inputs: Inputs, tiles: Range<Int>, unpack: (Range<Int>, Int) -> Void,
            _ block: (Range<Int>, Int, Int, Int) -> Void
        ) {
            let op = inputs.operands
            let chunk = Int8Prefill.chunkTiles(tokens: op.tokens)
            let rowsPerGroup = op.int8RowsPerGroup
            var start = tiles.lowerBound
            while start < tiles.upperBound {
                let chunkTiles = start..<min(start + chunk, tiles.upperBound)
                start = chunkTiles.upperBound
                for g in 0..<op.groups {
                    let rows = (g * rowsPerGroup)..<min((g + 1) * rowsPerGroup, op.int8Rows)
                    for tile in chunkTiles {
                        if g + 1 < op.groups { prefetch(op, group: g + 1, tile: tile) }
                        unpack(rows, tile)
                        var t0 = 0
                        while t0 < op.tokens {
                            block(rows, g, tile, t0)
                            t0 += blockTokens
                        }
                    }
                }
            }
        }

        /// Group `g`'s weight words of tile `tile` into L2: the walk across a chunk's tiles, group by group,
        /// reads each word row in runs of a few lines, too short for the hardware prefetcher.
        @inline(__always)
        static func prefetch(_ op: PackedOperands, group g: Int, tile: Int) {
            let rowsPerGroup = op.groupSize &* op.bits / 32
            let start = g &* rowsPerGroup, end = min(start &+ rowsPerGroup, op.wordRows)
            var p = op.qweight + (start &* op.outFeatures &+ tile &* Decode.tile)
            for _ in start..<end {
                pmq_prefetch_l2(p)
                pmq_prefetch_l2(p + (Decode.tile &- 1))
                p += op.outFeatures
            }
        }

        /// Group `g`'s rows of tile `tile` (outputs `16·tile ..< 16·tile + 16`) for the four tokens
        /// from `t0`, added to `y`.
        @inline(__always)
        static func block<W: PackedWidth>(
            _: W.Type, _ inputs: Inputs, rows: Range<Int>, group g: Int, tile: Int, t0: Int
        ) {
            let op = inputs.operands, bits = W.bits, planeCount = 8 / W.bits
            let mask = Words(repeating: UInt32((1 << bits) - 1) * 0x0101_0101)
            let o = tile &* Decode.tile
            let x = inputs.planes + (t0 / blockTokens) &* blockTokens &* inputs.planeStride
            // Token k, outputs o..<o+8 (a) and o+8..<o+16 (b).
            var a0 = Ints(), a1 = Ints(), a2 = Ints(), a3 = Ints()
            var b0 = Ints(), b1 = Ints(), b2 = Ints(), b3 = Ints()
            for row in rows {
                let (w0, w1) = words(op, row: row, output: o)
                let xr = x + row &* planeCount &* blockTokens
                for plane in 0..<planeCount {
                    let shift = Words(repeating: UInt32(bits &* plane))
                    let c0 = (w0 &>> shift) & mask, c1 = (w1 &>> shift) & mask
                    let xp = xr + plane &* blockTokens
                    let x0 = Words(repeating: xp[0]), x1 = Words(repeating: xp[1])
                    let x2 = Words(repeating: xp[2]), x3 = Words(repeating: xp[3])
                    a0 &+= dot(c0, x0)
                    b0 &+= dot(c1, x0)
                    a1 &+= dot(c0, x1)
                    b1 &+= dot(c1, x1)
                    a2 &+= dot(c0, x2)
                    b2 &+= dot(c1, x2)
                    a3 &+= dot(c0, x3)
                    b3 &+= dot(c1, x3)
                }
            }
            add(inputs, group: g, tile: tile, t0: t0, (a0, a1, a2, a3), (b0, b1, b2, b3))
        }

        /// 8 bits: `vpmaddubsw` would overflow (2·255·127), so as in the decode (`sweep8`) a word's even
        /// and odd code bytes are int16 lanes and meet each token's inputs, sign-extended to int16 in the
        /// same pairs, in `vpmaddwd` (at most 2·255·127 a lane, exact in int32 over the group).
        @inline(__always)
        static func block8(_ inputs: Inputs, rows: Range<Int>, group g: Int, tile: Int, t0: Int) {
            let op = inputs.operands, o = tile &* Decode.tile
            let bytes = Words(repeating: 0x00FF_00FF)
            let x = inputs.planes + (t0 / blockTokens) &* blockTokens &* inputs.planeStride
            var a0 = Ints(), a1 = Ints(), a2 = Ints(), a3 = Ints()
            var b0 = Ints(), b1 = Ints(), b2 = Ints(), b3 = Ints()
            for row in rows {
                let (w0, w1) = words(op, row: row, output: o)
                let even0 = shorts(w0 & bytes), odd0 = shorts((w0 &>> 8) & bytes)
                let even1 = shorts(w1 & bytes), odd1 = shorts((w1 &>> 8) & bytes)
                let xr = x + row &* blockTokens
                @inline(__always) func add(_ k: Int, _ a: inout Ints, _ b: inout Ints) {
                    // Token k's inputs x0…x3 as int16 pairs (x0, x2) and (x1, x3).
                    let word = shorts(Words(repeating: xr[k]))
                    let xEven = (word &<< 8) &>> 8, xOdd = word &>> 8
                    a &+= Int8Decode.madd(even0, xEven) &+ Int8Decode.madd(odd0, xOdd)
                    b &+= Int8Decode.madd(even1, xEven) &+ Int8Decode.madd(odd1, xOdd)
                }
                add(0, &a0, &b0)
                add(1, &a1, &b1)
                add(2, &a2, &b2)
                add(3, &a3, &b3)
            }
            add(inputs, group: g, tile: tile, t0: t0, (a0, a1, a2, a3), (b0, b1, b2, b3))
        }

        @inline(__always)
        static func shorts(_ words: Words) -> SIMD16<Int16> { unsafeBitCast(words, to: SIMD16<Int16>.self) }

        /// Word row `row`'s words for outputs `o ..< o + 8` and `o + 8 ..< o + 16`.
        @inline(__always)
        static func words(_ op: PackedOperands, row: Int, output o: Int) -> (Words, Words) {
            let p = UnsafeRawPointer(op.qweight + (row &* op.outFeatures &+ o))
            return (p.loadUnaligned(as: Words.self), p.loadUnaligned(fromByteOffset: 32, as: Words.self))
        }

        /// A block's sums into `y`: token `t0 + k`'s from `low.k` (outputs `16·tile ..< +8`) and `high.k`
        /// (the next 8), for the block's real tokens only.
        @inline(__always)
        static func add(
            _ inputs: Inputs, group g: Int, tile: Int, t0: Int, _ low: (Ints, Ints, Ints, Ints),
            _ high: (Ints, Ints, Ints, Ints)
        ) {
            let op = inputs.operands, o = tile &* Decode.tile
            let table = inputs.tables + tile &* inputs.tableFloats
            let scales = table + g &* Decode.tile, offsets = table + (op.groups &+ g) &* Decode.tile
            let count = min(blockTokens, op.tokens &- t0)
            add(inputs, token: t0, group: g, output: o, low.0, high.0, scales, offsets)
            if count > 1 { add(inputs, token: t0 &+ 1, group: g, output: o, low.1, high.1, scales, offsets) }
            if count > 2 { add(inputs, token: t0 &+ 2, group: g, output: o, low.2, high.2, scales, offsets) }
            if count > 3 { add(inputs, token: t0 &+ 3, group: g, output: o, low.3, high.3, scales, offsets) }
        }

        /// Per 32-bit lane, the four products of unsigned code bytes `codes` and int8 inputs `x`,
        /// summed: `vpmaddubsw` (pairs to int16, at most 2·15·127 in magnitude) then `vpmaddwd` with ones.
        @inline(__always)
        static func dot(_ codes: Words, _ x: Words) -> Ints {
            let pairs = _mm256_maddubs_epi16(unsafeBitCast(codes, to: __m256i.self), unsafeBitCast(x, to: __m256i.self))
            return unsafeBitCast(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)), to: Ints.self)
        }

        /// `y[t, o ..< o + 16] += s·(d·Σ) + (−s·z)·(d·Σ x̂)` for token `t` and group `g`.
        @inline(__always)
        static func add(
            _ inputs: Inputs, token t: Int, group g: Int, output o: Int, _ low: Ints, _ high: Ints,
            _ scales: UnsafePointer<Float>, _ offsets: UnsafePointer<Float>
        ) {
            let op = inputs.operands
            let step = Floats(repeating: inputs.steps[t &* op.groups &+ g])
            let groupSum = Floats(repeating: inputs.groupSums[t &* op.groups &+ g])
            let y = op.y + (t &* op.outFeatures &+ o)
            add(y, low, step, groupSum, scales, offsets)
            add(y + 8, high, step, groupSum, scales + 8, offsets + 8)
        }

        /// Eight outputs of `add`. The int32 → float conversion is the intrinsic: the SIMD
        /// initializer became a generic call in large functions (docs/KERNELS.md).
        @inline(__always)
        static func add(
            _ y: UnsafeMutablePointer<Float>, _ sums: Ints, _ step: Floats, _ groupSum: Floats,
            _ scales: UnsafePointer<Float>, _ offsets: UnsafePointer<Float>
        ) {
            let raw = UnsafeMutableRawPointer(y)
            let converted = unsafeBitCast(_mm256_cvtepi32_ps(unsafeBitCast(sums, to: __m256i.self)), to: Floats.self)
            var value = raw.loadUnaligned(as: Floats.self)
            value.addProduct(UnsafeRawPointer(scales).loadUnaligned(as: Floats.self), converted * step)
            value.addProduct(UnsafeRawPointer(offsets).loadUnaligned(as: Floats.self), groupSum)
            raw.storeBytes(of: value, as: Floats.self)
        }
        #endif
    }
}
