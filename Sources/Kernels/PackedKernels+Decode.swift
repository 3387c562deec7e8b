/// A code width as a type, so that each width gets its own specialised decode loop (masks and
/// trip counts become constants).
protocol PackedWidth {
    static var bits: Int { get }
}
enum Width1: PackedWidth { static var bits: Int { 1 } }
enum Width2: PackedWidth { static var bits: Int { 2 } }
enum Width4: PackedWidth { static var bits: Int { 4 } }
enum Width8: PackedWidth { static var bits: Int { 8 } }
enum Width3: PackedWidth { static var bits: Int { 3 } }

extension PackedKernel {
    /// The decode matvec (one token, `g_idx` in natural order, groups of whole blocks): by far the
    /// most time of a packed decode step is spent here.
    ///
    /// Tiles of 16 outputs (two SIMD8 vectors); threads take ranges of groups (`splitGroups`). Group by group, the
    /// chunk's tiles are swept across 8 word rows at a time (two rows per step, eight independent
    /// FMA chains), each tile's `Σ_i x_i·q_i` kept in scratch; at the end of the group
    /// `s·(Σ x_i q_i − z·Σ x_i)` is added to `y`.
    ///
    /// Codes are never shifted down: `w & (mask << position)` converted to float is
    /// `q · 2^position`, exact, and it meets `x_i · 2^−position` (scaled once per call in
    /// `prepare`). The top code of a word is `w >> (32 − bits)` instead (its masked value would
    /// set the sign bit), and 3 bits' straddling codes are assembled from two words.
    enum Decode {
        static let tile = 16
        /// Calls with fewer tokens run the decode kernel once per token (measured here on
        /// [1024, 1008]: one decode matvec 0.086 ms, two tokens through the tile path 0.29 ms).
        static let maxTokens = 4

        static func applies(_ operands: PackedOperands) -> Bool {
            operands.naturalOrder && operands.groupSize % operands.valuesPerBlock == 0
                && operands.outFeatures >= tile
        }

        /// Per-call inputs shared by all tiles: `x` scaled per code position (zero-padded to whole
        /// blocks) and `Σ x_i` per group.
        struct Prepared: @unchecked Sendable {
            let scaledX: UnsafeMutablePointer<Float>
            let groupSums: UnsafeMutablePointer<Float>
            let blocks: Int

            func deallocate() {
                scaledX.deallocate()
                groupSums.deallocate()
            }
        }

        /// Bit position of code `k` of a block as the decode loop reads it (0 for codes read by a
        /// shift: a word's top code and 3 bits' straddling codes).
        static func position(_ k: Int, bits: Int) -> Int {
            if bits == 3 {
                switch k {
                case 0...6: return 3 * k
                case 7...9: return 3 * k - 21
                case 11...17: return 3 * k - 32
                case 18...20: return 3 * k - 54
                case 22...28: return 3 * k - 64
                case 29...31: return 3 * k - 87
                default: return 0 // 10 and 21, assembled from two words
                }
            }
            let perWord = 32 / bits
            return k == perWord - 1 ? 0 : bits * k
        }

        static func prepare(_ operands: PackedOperands) -> Prepared {
            let perBlock = operands.valuesPerBlock
            let blocks = (operands.wordRows + operands.wordsPerBlock - 1) / operands.wordsPerBlock
            let scaledX = UnsafeMutablePointer<Float>.allocate(capacity: blocks * perBlock)
            scaledX.initialize(repeating: 0, count: blocks * perBlock)
            var factors = [Float](repeating: 1, count: perBlock)
            for k in 0..<perBlock {
                factors[k] = Float(sign: .plus, exponent: -position(k, bits: operands.bits), significand: 1)
            }
            let inputs = operands.inFeatures
            factors.withUnsafeBufferPointer { factors in
                for start in stride(from: 0, to: inputs, by: perBlock) {
                    for k in 0..<min(perBlock, inputs - start) {
                        scaledX[start + k] = operands.x[start + k] * factors[k]
                    }
                }
            }
            let groupSums = UnsafeMutablePointer<Float>.allocate(capacity: operands.groups)
            for g in 0..<operands.groups {
                var sum: Float = 0
                for i in (g * operands.groupSize)..<min((g + 1) * operands.groupSize, inputs) { sum += operands.x[i] }
                groupSums[g] = sum
            }
            return Prepared(scaledX: scaledX, groupSums: groupSums, blocks: blocks)
        }

        /// Adds groups `groups`' terms of outputs `16·tiles` to `operands.y`.
        static func run(_ operands: PackedOperands, prepared: Prepared, groups: Range<Int>, tiles: Range<Int>) {
            switch operands.bits {
            case 1: run(Width1.self, operands, prepared, groups, tiles)
            case 2: run(Width2.self, operands, prepared, groups, tiles)
            case 3: run3(operands, prepared, groups, tiles)
            case 4: run(Width4.self, operands, prepared, groups, tiles)
            case 8: run(Width8.self, operands, prepared, groups, tiles)
            default: preconditionFailure("unsupported width \(operands.bits)")
            }
        }

        typealias Vector = SIMD8<Float>
        typealias Words = SIMD8<UInt32>

        @inline(__always)
        static func float(_ codes: Words) -> Vector {
            SIMDConvert.float(unsafeBitCast(codes, to: SIMD8<Int32>.self))
        }

        @inline(__always)
        static func load(_ pointer: UnsafePointer<UInt32>) -> Words {
            UnsafeRawPointer(pointer).loadUnaligned(as: Words.self)
        }

        /// Rows walked per sweep across the tiles: the sweep reads this many contiguous streams
        /// (each row's words for all the chunk's outputs), which the prefetcher follows. Walking
        /// all of a group's rows for one tile before the next touched one cache line per page in
        /// up to 32 pages at once: 8 bits ran at half the speed of 4. Measured here (best of 41,
        /// [14336, 4096]): 8 rows beat 2, 4, 16 and 32.
        static let rowsPerSweep = 8
        /// 3-bit blocks (three word rows each) per sweep: about `rowsPerSweep` word rows.
        static let blocksPerSweep = max(1, rowsPerSweep / 3)

        /// Group by group; within a group, a few rows at a time across all tiles of the chunk, each
        /// tile's `Σ x q` kept in scratch until the group ends.
        static func run<W: PackedWidth>(
            _: W.Type, _ operands: PackedOperands, _ prepared: Prepared, _ groups: Range<Int>, _ tiles: Range<Int>
        ) {
            let rowsPerGroup = operands.groupSize / (32 / W.bits)
            withSums(tiles) { sums in
                for g in groups {
                    let rows = (g * rowsPerGroup)..<min((g + 1) * rowsPerGroup, operands.wordRows)
                    sums.initialize(repeating: 0, count: tiles.count * tile)
                    for start in stride(from: rows.lowerBound, to: rows.upperBound, by: rowsPerSweep) {
                        sweep(
                            W.self, operands, prepared, rows: start..<min(start + rowsPerSweep, rows.upperBound),
                            tiles: tiles, sums: sums)
                    }
                    flush(W.self, operands, group: g, tiles: tiles, sums: sums, groupSum: prepared.groupSums[g])
                }
            }
        }

        static func run3(_ operands: PackedOperands, _ prepared: Prepared, _ groups: Range<Int>, _ tiles: Range<Int>) {
            let blocksPerGroup = operands.groupSize / 32
            withSums(tiles) { sums in
                for g in groups {
                    let blocks = (g * blocksPerGroup)..<min((g + 1) * blocksPerGroup, prepared.blocks)
                    sums.initialize(repeating: 0, count: tiles.count * tile)
                    let step = blocksPerSweep
                    for start in stride(from: blocks.lowerBound, to: blocks.upperBound, by: step) {
                        sweep3(
                            operands, prepared, blocks: start..<min(start + step, blocks.upperBound), tiles: tiles,
                            sums: sums)
                    }
                    flush(Width3.self, operands, group: g, tiles: tiles, sums: sums, groupSum: prepared.groupSums[g])
                }
            }
        }

        /// Scratch for the chunk's per-tile sums (16 floats a tile), allocated once per chunk.
        static func withSums(_ tiles: Range<Int>, _ body: (UnsafeMutablePointer<Float>) -> Void) {
            let bytes = UnsafeMutableRawPointer.allocate(byteCount: 4 * tiles.count * tile, alignment: 64)
            defer { bytes.deallocate() }
            body(bytes.bindMemory(to: Float.self, capacity: tiles.count * tile))
        }

        /// Adds group `g`'s `s·(f·Σ x q − z·Σ x)` to `y` for every tile, `Σ x q` from `sums` and
        /// `Σ x` = `groupSum` (`f` = `factor`: 1 here, the group's activation scale for int8 sums); with
        /// `overwrite`, `y = s·(…)` (from zero, as if `y` had been zeroed).
        @inline(__always)
        static func flush<W: PackedWidth>(
            _: W.Type, _ operands: PackedOperands, group g: Int, tiles: Range<Int>, sums: UnsafeMutablePointer<Float>,
            groupSum: Float, factor: Float? = nil, overwrite: Bool = false
        ) {
            let sum = Vector(repeating: groupSum)
            for tileIndex in tiles {
                let o = tileIndex * tile
                let a = UnsafeRawPointer(sums + (tileIndex - tiles.lowerBound) * tile)
                let y = UnsafeMutableRawPointer(operands.y + o)
                var r0 = Vector(), r1 = Vector()
                if !overwrite {
                    r0 = y.loadUnaligned(as: Vector.self)
                    r1 = y.loadUnaligned(fromByteOffset: 32, as: Vector.self)
                }
                var s0 = a.load(as: Vector.self), s1 = a.load(fromByteOffset: 32, as: Vector.self)
                if let factor { s0 *= factor; s1 *= factor }
                let (z0, z1) = zeros16(W.self, operands, group: g, output: o)
                r0.addProduct(operands.scales8(group: g, output: o), s0 - z0 * sum)
                r1.addProduct(operands.scales8(group: g, output: o + 8), s1 - z1 * sum)
                y.storeBytes(of: r0, as: Vector.self)
                y.storeBytes(of: r1, toByteOffset: 32, as: Vector.self)
            }
        }

        /// Zeros of a tile's outputs `o ..< o + 16` in group `g` (`PackedOperands.zeros8`'s values). At
        /// 2, 4 and 8 bits the tile's zero words are unpacked here with constant shifts: the flush
        /// runs once per tile and group, and `zeros8` (a switch over the width, called out of line
        /// from the int8 decode) took a tenth of its time.
        @inline(__always)
        static func zeros16<W: PackedWidth>(_: W.Type, _ operands: PackedOperands, group g: Int, output o: Int) -> (
            Vector, Vector
        ) {
            guard W.bits == 2 || W.bits == 4 || W.bits == 8, operands.qzeros != nil else {
                return (
                    operands.zeros8(bits: W.bits, group: g, output: o),
                    operands.zeros8(bits: W.bits, group: g, output: o + 8)
                )
            }
            let mask = Words(repeating: UInt32((1 << W.bits) - 1)), first = o / (32 / W.bits)
            let word = { (k: Int) in operands.restoredZeroWord(bits: W.bits, group: g, index: first + k) }
            switch W.bits {
            case 2:
                let w = Words(repeating: word(0))
                return (
                    smallFloat((w &>> Words(0, 2, 4, 6, 8, 10, 12, 14)) & mask),
                    smallFloat((w &>> Words(16, 18, 20, 22, 24, 26, 28, 30)) & mask)
                )
            case 4:
                let shifts = Words(0, 4, 8, 12, 16, 20, 24, 28)
                return (
                    smallFloat((Words(repeating: word(0)) &>> shifts) & mask),
                    smallFloat((Words(repeating: word(1)) &>> shifts) & mask)
                )
            default:
                let shifts = Words(0, 8, 16, 24, 0, 8, 16, 24)
                let (a, b, c, d) = (word(0), word(1), word(2), word(3))
                return (
                    smallFloat((Words(a, a, a, a, b, b, b, b) &>> shifts) & mask),
                    smallFloat((Words(c, c, c, c, d, d, d, d) &>> shifts) & mask)
                )
            }
        }

        /// `sums[0..<16] += (a0, a1)`, or `= (a0, a1)` on a group's `first` sweep.
        @inline(__always)
        static func add(_ sums: UnsafeMutablePointer<Float>, _ a0: Vector, _ a1: Vector, first: Bool = false) {
            let raw = UnsafeMutableRawPointer(sums)
            if first {
                raw.storeBytes(of: a0, as: Vector.self)
                raw.storeBytes(of: a1, toByteOffset: 32, as: Vector.self)
                return
            }
            raw.storeBytes(of: raw.load(as: Vector.self) + a0, as: Vector.self)
            raw.storeBytes(of: raw.load(fromByteOffset: 32, as: Vector.self) + a1, toByteOffset: 32, as: Vector.self)
        }

        @inline(never)
        static func sweep<W: PackedWidth>(
            _: W.Type, _ operands: PackedOperands, _ prepared: Prepared, rows: Range<Int>,
            tiles: Range<Int>, sums: UnsafeMutablePointer<Float>
        ) {
            for tileIndex in tiles {
                let (a0, a1) = groupSums(W.self, operands, prepared, rows: rows, output: tileIndex * tile)
                add(sums + (tileIndex - tiles.lowerBound) * tile, a0, a1)
            }
        }

        @inline(never)
        static func sweep3(
            _ operands: PackedOperands, _ prepared: Prepared, blocks: Range<Int>, tiles: Range<Int>,
            sums: UnsafeMutablePointer<Float>
        ) {
            for tileIndex in tiles {
                let (a0, a1) = groupSums3(operands, prepared, blocks: blocks, output: tileIndex * tile)
                add(sums + (tileIndex - tiles.lowerBound) * tile, a0, a1)
            }
        }

        /// `Σ_i x_i·q_i` over word rows `rows` for outputs `o ..< o + 16` (widths 1, 2, 4, 8: a block
        /// is one word row of `32 / bits` codes), two rows at a time for four independent FMA chains.
        @inline(__always)
        static func groupSums<W: PackedWidth>(
            _: W.Type, _ operands: PackedOperands, _ prepared: Prepared, rows: Range<Int>,
            output o: Int
        ) -> (Vector, Vector) {
            let bits = W.bits, perWord = 32 / W.bits
            let out = operands.outFeatures
            let top = UInt32(32 - bits), mask = UInt32((1 << bits) - 1)
            var a0 = Vector(), a1 = Vector(), b0 = Vector(), b1 = Vector()
            var c0 = Vector(), c1 = Vector(), d0 = Vector(), d1 = Vector()
            var row = rows.lowerBound
            while row + 2 <= rows.upperBound {
                let pa = operands.qweight + (row &* out &+ o), pb = pa + out
                let wa0 = load(pa), wa1 = load(pa + 8), wb0 = load(pb), wb1 = load(pb + 8)
                let xa = prepared.scaledX + row &* perWord, xb = xa + perWord
                // Codes k and k + 1 into separate accumulators: eight independent FMA chains.
                var k = 0
                while k + 2 < perWord {
                    let m = Words(repeating: mask << UInt32(bits * k)),
                        n = Words(repeating: mask << UInt32(bits * (k + 1)))
                    let va = Vector(repeating: xa[k]), vb = Vector(repeating: xb[k])
                    a0.addProduct(va, float(wa0 & m))
                    a1.addProduct(va, float(wa1 & m))
                    b0.addProduct(vb, float(wb0 & m))
                    b1.addProduct(vb, float(wb1 & m))
                    let vc = Vector(repeating: xa[k + 1]), vd = Vector(repeating: xb[k + 1])
                    c0.addProduct(vc, float(wa0 & n))
                    c1.addProduct(vc, float(wa1 & n))
                    d0.addProduct(vd, float(wb0 & n))
                    d1.addProduct(vd, float(wb1 & n))
                    k += 2
                }
                if k < perWord - 1 {
                    let m = Words(repeating: mask << UInt32(bits * k))
                    let va = Vector(repeating: xa[k]), vb = Vector(repeating: xb[k])
                    a0.addProduct(va, float(wa0 & m))
                    a1.addProduct(va, float(wa1 & m))
                    b0.addProduct(vb, float(wb0 & m))
                    b1.addProduct(vb, float(wb1 & m))
                }
                let vc = Vector(repeating: xa[perWord - 1]), vd = Vector(repeating: xb[perWord - 1])
                c0.addProduct(vc, float(wa0 &>> top))
                c1.addProduct(vc, float(wa1 &>> top))
                d0.addProduct(vd, float(wb0 &>> top))
                d1.addProduct(vd, float(wb1 &>> top))
                row &+= 2
            }
            a0 += c0; a1 += c1; b0 += d0; b1 += d1
            if row < rows.upperBound {
                let pa = operands.qweight + (row &* out &+ o)
                let wa0 = load(pa), wa1 = load(pa + 8)
                let xa = prepared.scaledX + row &* perWord
                for k in 0..<(perWord - 1) {
                    let m = Words(repeating: mask << UInt32(bits * k))
                    let va = Vector(repeating: xa[k])
                    a0.addProduct(va, float(wa0 & m))
                    a1.addProduct(va, float(wa1 & m))
                }
                let va = Vector(repeating: xa[perWord - 1])
                a0.addProduct(va, float(wa0 &>> top))
                a1.addProduct(va, float(wa1 &>> top))
            }
            return (a0 + b0, a1 + b1)
        }

        /// `v` as a float for `v < 2^23`, by bits alone: `v` in the mantissa of 2^23, minus 2^23.
        @inline(__always)
        static func smallFloat(_ v: Words) -> Vector {
            unsafeBitCast(v | 0x4B00_0000, to: Vector.self) - 8_388_608
        }

        /// Adds codes at in-place positions `3j + offset`, `j < count`, of `w` (for outputs `o`, `o + 8`).
        @inline(__always)
        static func inPlace3(
            _ u: Words, _ v: Words, _ x: UnsafeMutablePointer<Float>, offset: Int, count: Int,
            _ a0: inout Vector, _ a1: inout Vector, _ b0: inout Vector, _ b1: inout Vector
        ) {
            var j = 0
            while j + 2 <= count {
                let m = Words(repeating: 7 << UInt32(3 * j + offset)),
                    n = Words(repeating: 7 << UInt32(3 * j + 3 + offset))
                let x0 = Vector(repeating: x[j]), x1 = Vector(repeating: x[j + 1])
                a0.addProduct(x0, smallFloat(u & m))
                a1.addProduct(x0, smallFloat(v & m))
                b0.addProduct(x1, smallFloat(u & n))
                b1.addProduct(x1, smallFloat(v & n))
                j += 2
            }
            if j < count {
                let m = Words(repeating: 7 << UInt32(3 * j + offset))
                let x0 = Vector(repeating: x[j])
                a0.addProduct(x0, smallFloat(u & m))
                a1.addProduct(x0, smallFloat(v & m))
            }
        }

        /// Width 3: a block is three word rows holding 32 codes; codes 10 and 21 straddle words.
        /// Swift 6.3 would not inline `SIMD8<Float>(SIMD8<Int32>)` here (it called it out of line,
        /// 10× slower), so codes become floats by the mantissa trick, which needs values below 2^23:
        /// a word's codes above bit 20 are shifted down once (`position(_:bits:)` says where each
        /// code is read).
        @inline(__always)
        static func groupSums3(_ operands: PackedOperands, _ prepared: Prepared, blocks: Range<Int>, output o: Int) -> (
            Vector, Vector
        ) {
            let seven = Words(repeating: 7)
            var a0 = Vector(), a1 = Vector(), b0 = Vector(), b1 = Vector()
            for block in blocks {
                let (u0, v0) = words3(operands, block: block, row: 0, output: o)
                let (u1, v1) = words3(operands, block: block, row: 1, output: o)
                let (u2, v2) = words3(operands, block: block, row: 2, output: o)
                let x = prepared.scaledX + 32 &* block
                inPlace3(u0, v0, x, offset: 0, count: 7, &a0, &a1, &b0, &b1) // codes 0…6
                inPlace3(u0 &>> 21, v0 &>> 21, x + 7, offset: 0, count: 3, &a0, &a1, &b0, &b1) // 7…9
                inPlace3(u1, v1, x + 11, offset: 1, count: 7, &a0, &a1, &b0, &b1) // 11…17
                inPlace3(u1 &>> 22, v1 &>> 22, x + 18, offset: 0, count: 3, &a0, &a1, &b0, &b1) // 18…20
                inPlace3(u2, v2, x + 22, offset: 2, count: 7, &a0, &a1, &b0, &b1) // 22…28
                inPlace3(u2 &>> 23, v2 &>> 23, x + 29, offset: 0, count: 3, &a0, &a1, &b0, &b1) // 29…31
                let x10 = Vector(repeating: x[10]), x21 = Vector(repeating: x[21])
                a0.addProduct(x10, smallFloat(((u0 &>> 30) | (u1 &<< 2)) & seven))
                a1.addProduct(x10, smallFloat(((v0 &>> 30) | (v1 &<< 2)) & seven))
                b0.addProduct(x21, smallFloat(((u1 &>> 31) | (u2 &<< 1)) & seven))
                b1.addProduct(x21, smallFloat(((v1 &>> 31) | (v2 &<< 1)) & seven))
            }
            return (a0 + b0, a1 + b1)
        }

        /// Words of block `block`, row `row` (0, 1, 2), for outputs `o ..< o + 16`; zero past the
        /// last row (the last block may be partial; its x is zero there).
        @inline(__always)
        static func words3(_ operands: PackedOperands, block: Int, row: Int, output o: Int) -> (Words, Words) {
            let r = 3 &* block &+ row
            guard r < operands.wordRows else { return (Words(), Words()) }
            let p = operands.qweight + (r &* operands.outFeatures &+ o)
            return (load(p), load(p + 8))
        }
    }
}
