#if arch(x86_64)
import _Builtin_intrinsics.intel

/// Prefill (several tokens) of packed GPTQ linears with int8 activations on AVX-512 VNNI: each
/// word row's codes are unpacked into bytes once per plane and meet sixteen tokens' int8 inputs
/// (`vpdpbusd` with each token's four inputs broadcast; then eight, then four at a time). Per output
/// tile (16 outputs), group and block of tokens the sums stay in int32 registers over the whole
/// group and are then added to `y` as `s·d_g·Σ + (−s·z)·d_g·Σ x̂`.
public enum Int8GemmVNNI {
    typealias Words = SIMD16<UInt32>
    typealias Ints = SIMD16<Int32>
    typealias Floats = SIMD16<Float>

    /// The operands of one call; token `t`'s planes start at `planes + t·planeStride` (layout of
    /// `Int8DotVNNI.sweep`), its steps `d_g` and `d_g·Σ x̂` at `t·groups`. `tables` holds per tile
    /// (tile 0 being `tiles.lowerBound`) `[groups, 16]` scales `s` then `[groups, 16]` offsets `−s·z`
    /// (`Kernels`' `Tile.fillTable` layout).
    public struct Operands {
        public var bits: Int
        public var qweight: UnsafePointer<UInt32>
        public var outFeatures: Int
        public var groups: Int
        /// Word rows (3-word blocks at 3 bits) per group, and in all.
        public var rowsPerGroup: Int
        public var rowCount: Int
        public var planes: UnsafePointer<UInt32>
        public var planeStride: Int
        /// The same planes, tokens interleaved per block (`interleave`): the blocks of sixteen and
        /// eight tokens read their broadcasts from here, one base address for all their tokens.
        public var interleaved: UnsafePointer<UInt32>
        public var steps: UnsafePointer<Float>
        public var groupSums: UnsafePointer<Float>
        public var tables: UnsafePointer<Float>
        public var tokens: Int
        /// Tiles per chunk (`PackedKernel.Int8Prefill.chunkTiles`): a chunk's outputs for every token stay in L1.
        public var chunkTiles: Int
        /// `[tokens, outFeatures]`, added to.
        public var y: UnsafeMutablePointer<Float>

        public init(
            bits: Int, qweight: UnsafePointer<UInt32>, outFeatures: Int, groups: Int, rowsPerGroup: Int,
            rowCount: Int, planes: UnsafePointer<UInt32>, planeStride: Int, interleaved: UnsafePointer<UInt32>,
            steps: UnsafePointer<Float>,
            groupSums: UnsafePointer<Float>, tables: UnsafePointer<Float>,
            tokens: Int, chunkTiles: Int, y: UnsafeMutablePointer<Float>
        ) {
            self.bits = bits
            self.qweight = qweight
            self.outFeatures = outFeatures
            self.groups = groups
            self.rowsPerGroup = rowsPerGroup
            self.rowCount = rowCount
            self.planes = planes
            self.planeStride = planeStride
            self.interleaved = interleaved
            self.steps = steps
            self.groupSums = groupSums
            self.tables = tables
            self.tokens = tokens
            self.chunkTiles = chunkTiles
            self.y = y
        }
    }

    /// Tokens in blocks as `run` takes them: sixteen at a time, then eight, then the rest.
    public static func blockSize(first t0: Int, tokens: Int) -> Int {
        tokens &- t0 >= 16 ? 16 : tokens &- t0 >= 8 ? 8 : 0
    }

    /// Copies `planes` (token `t`'s `planeStride` words at `t·planeStride`) into `interleaved` by
    /// blocks: a block of `n` tokens from token `t0` holds, from `t0·planeStride`, each plane word's
    /// `n` tokens side by side (`[planeStride, n]`). Tokens past the last block of eight are not copied.
    public static func interleave(
        planes: UnsafePointer<UInt32>, planeStride: Int, tokens: Int, into interleaved: UnsafeMutablePointer<UInt32>
    ) {
        var t0 = 0
        while true {
            let n = blockSize(first: t0, tokens: tokens)
            guard n > 0 else { return }
            let block = interleaved + t0 &* planeStride
            for j in 0..<n {
                let source = planes + (t0 &+ j) &* planeStride
                for k in 0..<planeStride { block[k &* n &+ j] = source[k] }
            }
            t0 &+= n
        }
    }

    /// Adds `x · Ŵᵀ` for outputs `16·tiles` of every token to `y`.
    public static func run(_ operands: Operands, tiles: Range<Int>) {
        switch operands.bits {
        case 1: run(Width1.self, operands, tiles)
        case 2: run(Width2.self, operands, tiles)
        case 3: run(Width3.self, operands, tiles)
        case 4: run(Width4.self, operands, tiles)
        case 8: run(Width8.self, operands, tiles)
        default: preconditionFailure("no VNNI kernel for width \(operands.bits)")
        }
    }

    /// One specialisation per width (a type parameter, so that plane counts, shifts and masks are
    /// constants: with the width as an argument the loop divided by it for every row).
    static func run<W: CodeWidth>(_: W.Type, _ op: Operands, _ tiles: Range<Int>) {
        let controls = Int8DotVNNI.controls
        // Tiles in chunks whose outputs for every token stay in L1 (`op.chunkTiles`); in a chunk, group
        // by group across its tiles: the tiles' words of a row are adjacent, so the reads run along
        // each row instead of striding a whole row per tile. (Group by group across all tiles sent
        // every group's sums through L2.)
        let chunk = max(1, op.chunkTiles)
        var chunkStart = tiles.lowerBound
        while chunkStart < tiles.upperBound {
            let chunkTiles = chunkStart..<min(chunkStart &+ chunk, tiles.upperBound)
            chunkStart = chunkTiles.upperBound
            run(W.self, op, tiles, chunk: chunkTiles, controls)
        }
    }

    @inline(__always)
    static func run<W: CodeWidth>(
        _: W.Type, _ op: Operands, _ tiles: Range<Int>, chunk: Range<Int>, _ controls: (Words, Words)
    ) {
        let bits = W.bits, planeCount = Int8DotVNNI.planeCount(bits: W.bits)
        for g in 0..<op.groups {
            let rows = (g &* op.rowsPerGroup)..<min((g &+ 1) &* op.rowsPerGroup, op.rowCount)
            for tileIndex in chunk {
                let o = tileIndex &* 16
                let table = op.tables + (tileIndex &- tiles.lowerBound) &* 2 &* op.groups &* 16
                let scale = load(table + g &* 16), offset = load(table + (op.groups &+ g) &* 16)
                var t0 = 0
                // Sixteen tokens, then eight: vpdpbusd issues on two ports with a latency of several
                // cycles, so that many independent chains keep both busy, and each code vector's
                // unpacking is shared by that many tokens.
                while t0 &+ 16 <= op.tokens {
                    block(tokens: 16, W.self, op, rows, group: g, output: o, first: t0, scale, offset, controls)
                    t0 &+= 16
                }
                while t0 &+ 8 <= op.tokens {
                    block(tokens: 8, W.self, op, rows, group: g, output: o, first: t0, scale, offset, controls)
                    t0 &+= 8
                }
                while t0 < op.tokens {
                    // Four tokens (the last block repeats its last token; only real ones are added).
                    let t1 = min(t0 &+ 1, op.tokens &- 1), t2 = min(t0 &+ 2, op.tokens &- 1)
                    let t3 = min(t0 &+ 3, op.tokens &- 1)
                    let x0 = op.planes + t0 &* op.planeStride, x1 = op.planes + t1 &* op.planeStride
                    let x2 = op.planes + t2 &* op.planeStride, x3 = op.planes + t3 &* op.planeStride
                    // Two accumulators per token (even and odd planes, or rows at 8 bits): eight
                    // independent vpdpbusd chains, enough to cover its latency.
                    var a0 = Ints(), a1 = Ints(), a2 = Ints(), a3 = Ints()
                    var b0 = Ints(), b1 = Ints(), b2 = Ints(), b3 = Ints()
                    for row in rows {
                        let base = row &* planeCount
                        planesOfRow(bits: bits, op.qweight, op.outFeatures, controls, row: row, output: o) {
                            plane, codes in
                            let k = base &+ plane
                            if planeCount == 1 ? row & 1 == 0 : plane & 1 == 0 {
                                a0 = Int8DotVNNI.dot(a0, codes, Words(repeating: x0[k]))
                                a1 = Int8DotVNNI.dot(a1, codes, Words(repeating: x1[k]))
                                a2 = Int8DotVNNI.dot(a2, codes, Words(repeating: x2[k]))
                                a3 = Int8DotVNNI.dot(a3, codes, Words(repeating: x3[k]))
                            } else {
                                b0 = Int8DotVNNI.dot(b0, codes, Words(repeating: x0[k]))
                                b1 = Int8DotVNNI.dot(b1, codes, Words(repeating: x1[k]))
                                b2 = Int8DotVNNI.dot(b2, codes, Words(repeating: x2[k]))
                                b3 = Int8DotVNNI.dot(b3, codes, Words(repeating: x3[k]))
                            }
                        }
                    }
                    a0 &+= b0
                    a1 &+= b1
                    a2 &+= b2
                    a3 &+= b3
                    let count = min(4, op.tokens &- t0)
                    add(op, token: t0, group: g, output: o, sums: a0, scale: scale, offset: offset)
                    if count > 1 {
                        add(op, token: t0 &+ 1, group: g, output: o, sums: a1, scale: scale, offset: offset)
                    }
                    if count > 2 {
                        add(op, token: t0 &+ 2, group: g, output: o, sums: a2, scale: scale, offset: offset)
                    }
                    if count > 3 {
                        add(op, token: t0 &+ 3, group: g, output: o, sums: a3, scale: scale, offset: offset)
                    }
                    t0 &+= 4
                }
            }
        }
    }

    /// Group `g`'s rows `rows` of outputs `o ..< o + 16` for tokens `first ..< first + tokens`
    /// (16 or 8, a constant where inlined: the chains past it fold away), one int32 chain per token,
    /// added to `y` at the end.
    @inline(__always)
    static func block<W: CodeWidth>(
        tokens: Int, _: W.Type, _ op: Operands, _ rows: Range<Int>, group g: Int, output o: Int, first t0: Int,
        _ scale: Floats, _ offset: Floats, _ controls: (Words, Words)
    ) {
        let planeCount = Int8DotVNNI.planeCount(bits: W.bits)
        let x = op.interleaved + t0 &* op.planeStride
        var a0 = Ints(), a1 = Ints(), a2 = Ints(), a3 = Ints()
        var a4 = Ints(), a5 = Ints(), a6 = Ints(), a7 = Ints()
        var a8 = Ints(), a9 = Ints(), a10 = Ints(), a11 = Ints()
        var a12 = Ints(), a13 = Ints(), a14 = Ints(), a15 = Ints()
        for row in rows {
            let base = row &* planeCount
            planesOfRow(bits: W.bits, op.qweight, op.outFeatures, controls, row: row, output: o) { plane, codes in
                // The block's tokens side by side: every broadcast is one base plus a constant.
                let p = x + (base &+ plane) &* tokens
                a0 = Int8DotVNNI.dot(a0, codes, Words(repeating: p[0]))
                a1 = Int8DotVNNI.dot(a1, codes, Words(repeating: p[1]))
                a2 = Int8DotVNNI.dot(a2, codes, Words(repeating: p[2]))
                a3 = Int8DotVNNI.dot(a3, codes, Words(repeating: p[3]))
                a4 = Int8DotVNNI.dot(a4, codes, Words(repeating: p[4]))
                a5 = Int8DotVNNI.dot(a5, codes, Words(repeating: p[5]))
                a6 = Int8DotVNNI.dot(a6, codes, Words(repeating: p[6]))
                a7 = Int8DotVNNI.dot(a7, codes, Words(repeating: p[7]))
                guard tokens > 8 else { return }
                a8 = Int8DotVNNI.dot(a8, codes, Words(repeating: p[8]))
                a9 = Int8DotVNNI.dot(a9, codes, Words(repeating: p[9]))
                a10 = Int8DotVNNI.dot(a10, codes, Words(repeating: p[10]))
                a11 = Int8DotVNNI.dot(a11, codes, Words(repeating: p[11]))
                a12 = Int8DotVNNI.dot(a12, codes, Words(repeating: p[12]))
                a13 = Int8DotVNNI.dot(a13, codes, Words(repeating: p[13]))
                a14 = Int8DotVNNI.dot(a14, codes, Words(repeating: p[14]))
                a15 = Int8DotVNNI.dot(a15, codes, Words(repeating: p[15]))
            }
        }
        @inline(__always) func add(_ k: Int, _ sums: Ints) {
            Self.add(op, token: t0 &+ k, group: g, output: o, sums: sums, scale: scale, offset: offset)
        }
        add(0, a0)
        add(1, a1)
        add(2, a2)
        add(3, a3)
        add(4, a4)
        add(5, a5)
        add(6, a6)
        add(7, a7)
        guard tokens > 8 else { return }
        add(8, a8)
        add(9, a9)
        add(10, a10)
        add(11, a11)
        add(12, a12)
        add(13, a13)
        add(14, a14)
        add(15, a15)
    }

    /// Calls `body(plane, codes)` for each plane of word row (3-word block at 3 bits) `row` of
    /// outputs `o ..< o + 16`: the codes as unsigned bytes, in `Int8DotVNNI.sweep`'s plane order.
    @inline(__always)
    static func planesOfRow(
        bits: Int, _ qweight: UnsafePointer<UInt32>, _ out: Int, _ controls: (Words, Words), row: Int,
        output o: Int, _ body: (Int, Words) -> Void
    ) {
        if bits == 3 {
            let mask = Words(repeating: 0x0707_0707)
            let (c0, c1) = controls
            let p = qweight + (3 &* row &* out &+ o)
            let (u0, u1, u2, u3) = Int8DotVNNI.sources3(
                Int8DotVNNI.load(p), Int8DotVNNI.load(p + out), Int8DotVNNI.load(p + 2 &* out))
            body(0, Int8DotVNNI.gather(c0, u0) & mask)
            body(1, Int8DotVNNI.gather(c1, u0) & mask)
            body(2, Int8DotVNNI.gather(c0, u1) & mask)
            body(3, Int8DotVNNI.gather(c1, u1) & mask)
            body(4, Int8DotVNNI.gather(c0, u2) & mask)
            body(5, Int8DotVNNI.gather(c1, u2) & mask)
            body(6, Int8DotVNNI.gather(c0, u3) & mask)
            body(7, Int8DotVNNI.gather(c1, u3) & mask)
            return
        }
        let mask = Words(repeating: bits == 8 ? ~0 : UInt32((1 << bits) - 1) * 0x0101_0101)
        let w = Int8DotVNNI.load(qweight + (row &* out &+ o))
        for plane in 0..<(8 / bits) {
            body(plane, plane == 0 ? w & mask : (w &>> UInt32(bits * plane)) & mask)
        }
    }

    @inline(__always)
    static func load(_ pointer: UnsafePointer<Float>) -> Floats {
        UnsafeRawPointer(pointer).loadUnaligned(as: Floats.self)
    }

    /// `y[t, o ..< o + 16] += s·(d·Σ) + (−s·z)·(d·Σ x̂)` for token `t` and group `g`.
    @inline(__always)
    static func add(
        _ op: Operands, token t: Int, group g: Int, output o: Int, sums: Ints, scale: Floats, offset: Floats
    ) {
        let converted = unsafeBitCast(_mm512_cvtepi32_ps(unsafeBitCast(sums, to: __m512i.self)), to: Floats.self)
        let step = op.steps[t &* op.groups &+ g], groupSum = op.groupSums[t &* op.groups &+ g]
        let raw = UnsafeMutableRawPointer(op.y + (t &* op.outFeatures &+ o))
        var y = raw.loadUnaligned(as: Floats.self)
        y.addProduct(scale, converted * step)
        y.addProduct(offset, Floats(repeating: groupSum))
        raw.storeBytes(of: y, as: Floats.self)
    }
}

/// A code width as a type, so that each width gets its own specialised loops.
protocol CodeWidth { static var bits: Int { get } }
enum Width1: CodeWidth { static var bits: Int { 1 } }
enum Width2: CodeWidth { static var bits: Int { 2 } }
enum Width3: CodeWidth { static var bits: Int { 3 } }
enum Width4: CodeWidth { static var bits: Int { 4 } }
enum Width8: CodeWidth { static var bits: Int { 8 } }
#endif
