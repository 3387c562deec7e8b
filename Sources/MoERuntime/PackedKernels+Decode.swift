import QuantEngine

/// A code width as a type, so that each width gets its own specialised decode loop (masks and
/// trip counts become constants).
protocol PackedWidth {
    static var bits: Int { get }
}
enum Width1: PackedWidth { static var bits: Int { 1 } }
enum Width2: PackedWidth { static var bits: Int { 2 } }
enum Width4: PackedWidth { static var bits: Int { 4 } }
enum Width8: PackedWidth { static var bits: Int { 8 } }

extension PackedKernel {
    /// The decode matvec (one token, `g_idx` in natural order, groups of whole blocks): by far the
    /// most time of a packed decode step is spent here.
    ///
    /// Tiles of 16 outputs (two SIMD8 vectors) walk down the word rows of their columns, two rows
    /// (blocks) at a time for independent FMA chains. Per group, `Σ_i x_i·q_i` accumulates in
    /// float; at the end of the group `s·(Σ x_i q_i − z·Σ x_i)` is added to the result.
    ///
    /// Codes are never shifted down: `w & (mask << position)` converted to float is
    /// `q · 2^position`, exact, and it meets `x_i · 2^−position` (scaled once per call in
    /// `prepare`). The top code of a word is `w >> (32 − bits)` instead (its masked value would
    /// set the sign bit), and 3 bits' straddling codes are assembled from two words.
    enum Decode {
        static let tile = 16

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
                case 0...9: return 3 * k
                case 11...20: return 3 * k - 32
                case 22...30: return 3 * k - 64
                default: return 0
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
            for k in 0..<perBlock { factors[k] = Float(sign: .plus, exponent: -position(k, bits: operands.bits), significand: 1) }
            for i in 0..<operands.inFeatures { scaledX[i] = operands.x[i] * factors[i % perBlock] }
            let groupSums = UnsafeMutablePointer<Float>.allocate(capacity: operands.groups)
            groupSums.initialize(repeating: 0, count: operands.groups)
            for i in 0..<operands.inFeatures { groupSums[i / operands.groupSize] += operands.x[i] }
            return Prepared(scaledX: scaledX, groupSums: groupSums, blocks: blocks)
        }

        static func run(_ operands: PackedOperands, prepared: Prepared, tiles: Range<Int>) {
            switch operands.bits {
            case 1: run(Width1.self, operands, prepared, tiles)
            case 2: run(Width2.self, operands, prepared, tiles)
            case 3: run3(operands, prepared, tiles)
            case 4: run(Width4.self, operands, prepared, tiles)
            case 8: run(Width8.self, operands, prepared, tiles)
            default: preconditionFailure("unsupported width \(operands.bits)")
            }
        }

        typealias Vector = SIMD8<Float>
        typealias Words = SIMD8<UInt32>

        @inline(__always)
        static func float(_ codes: Words) -> Vector {
            Vector(unsafeBitCast(codes, to: SIMD8<Int32>.self))
        }

        @inline(__always)
        static func load(_ pointer: UnsafePointer<UInt32>) -> Words {
            UnsafeRawPointer(pointer).loadUnaligned(as: Words.self)
        }

        /// Adds one group's `s·(Σ x q − z·Σ x)` for outputs `o ..< o + 16`.
        @inline(__always)
        static func flush(_ operands: PackedOperands, group g: Int, output o: Int, sum: Float,
                          _ a0: Vector, _ a1: Vector, _ r0: inout Vector, _ r1: inout Vector) {
            let sums = Vector(repeating: sum)
            r0.addProduct(operands.scales8(group: g, output: o), a0 - operands.zeros8(group: g, output: o) * sums)
            r1.addProduct(operands.scales8(group: g, output: o + 8), a1 - operands.zeros8(group: g, output: o + 8) * sums)
        }

        /// Widths 1, 2, 4, 8: a block is one word row of `32 / bits` codes.
        static func run<W: PackedWidth>(_: W.Type, _ operands: PackedOperands, _ prepared: Prepared, _ tiles: Range<Int>) {
            let bits = W.bits, perWord = 32 / W.bits
            let out = operands.outFeatures
            let rowsPerGroup = operands.groupSize / perWord
            let top = UInt32(32 - bits), mask = UInt32((1 << bits) - 1)
            for tileIndex in tiles {
                let o = tileIndex * tile
                var r0 = Vector(), r1 = Vector()
                for g in 0..<operands.groups {
                    let firstRow = g * rowsPerGroup, endRow = min(firstRow + rowsPerGroup, operands.wordRows)
                    var a0 = Vector(), a1 = Vector(), b0 = Vector(), b1 = Vector()
                    var row = firstRow
                    // Two rows at a time: four independent FMA chains.
                    while row + 2 <= endRow {
                        let pa = operands.qweight + row * out + o, pb = pa + out
                        let wa0 = load(pa), wa1 = load(pa + 8), wb0 = load(pb), wb1 = load(pb + 8)
                        let xa = prepared.scaledX + row * perWord, xb = xa + perWord
                        for k in 0..<(perWord - 1) {
                            let m = Words(repeating: mask << UInt32(bits * k))
                            let va = Vector(repeating: xa[k]), vb = Vector(repeating: xb[k])
                            a0.addProduct(va, float(wa0 & m))
                            a1.addProduct(va, float(wa1 & m))
                            b0.addProduct(vb, float(wb0 & m))
                            b1.addProduct(vb, float(wb1 & m))
                        }
                        let va = Vector(repeating: xa[perWord - 1]), vb = Vector(repeating: xb[perWord - 1])
                        a0.addProduct(va, float(wa0 &>> top))
                        a1.addProduct(va, float(wa1 &>> top))
                        b0.addProduct(vb, float(wb0 &>> top))
                        b1.addProduct(vb, float(wb1 &>> top))
                        row += 2
                    }
                    if row < endRow {
                        let pa = operands.qweight + row * out + o
                        let wa0 = load(pa), wa1 = load(pa + 8)
                        let xa = prepared.scaledX + row * perWord
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
                    flush(operands, group: g, output: o, sum: prepared.groupSums[g], a0 + b0, a1 + b1, &r0, &r1)
                }
                let y = UnsafeMutableRawPointer(operands.y + o)
                y.storeBytes(of: r0, as: Vector.self)
                y.storeBytes(of: r1, toByteOffset: 32, as: Vector.self)
            }
        }

        /// Width 3: a block is three word rows holding 32 codes; codes 10 and 21 straddle words.
        /// Codes of the first and third word accumulate in `a`, the second word's in `b`.
        static func run3(_ operands: PackedOperands, _ prepared: Prepared, _ tiles: Range<Int>) {
            let out = operands.outFeatures
            let blocksPerGroup = operands.groupSize / 32
            let fullBlocks = operands.wordRows / 3
            let seven = Words(repeating: 7)
            for tileIndex in tiles {
                let o = tileIndex * tile
                var r0 = Vector(), r1 = Vector()
                for g in 0..<operands.groups {
                    let firstBlock = g * blocksPerGroup, endBlock = min(firstBlock + blocksPerGroup, prepared.blocks)
                    var a0 = Vector(), a1 = Vector(), b0 = Vector(), b1 = Vector()
                    for block in firstBlock..<endBlock {
                        let p = operands.qweight + 3 * block * out + o
                        let u0, u1, u2, v0, v1, v2: Words
                        if block < fullBlocks {
                            u0 = load(p); v0 = load(p + 8)
                            u1 = load(p + out); v1 = load(p + out + 8)
                            u2 = load(p + 2 * out); v2 = load(p + 2 * out + 8)
                        } else {
                            // The last, partial block: rows past the end read as zero (their x is zero).
                            let rows = operands.wordRows - 3 * block
                            u0 = load(p); v0 = load(p + 8)
                            u1 = rows > 1 ? load(p + out) : Words(); v1 = rows > 1 ? load(p + out + 8) : Words()
                            u2 = Words(); v2 = Words()
                        }
                        let x = prepared.scaledX + 32 * block
                        for k in 0..<10 {
                            let m = Words(repeating: 7 << UInt32(3 * k))
                            let x0 = Vector(repeating: x[k]), x1 = Vector(repeating: x[11 + k])
                            a0.addProduct(x0, float(u0 & m))
                            a1.addProduct(x0, float(v0 & m))
                            let n = Words(repeating: 7 << UInt32(3 * k + 1))
                            b0.addProduct(x1, float(u1 & n))
                            b1.addProduct(x1, float(v1 & n))
                        }
                        for k in 22..<31 {
                            let m = Words(repeating: 7 << UInt32(3 * k - 64))
                            let x2 = Vector(repeating: x[k])
                            a0.addProduct(x2, float(u2 & m))
                            a1.addProduct(x2, float(v2 & m))
                        }
                        let x10 = Vector(repeating: x[10]), x21 = Vector(repeating: x[21]), x31 = Vector(repeating: x[31])
                        b0.addProduct(x10, float(((u0 &>> 30) | (u1 &<< 2)) & seven))
                        b1.addProduct(x10, float(((v0 &>> 30) | (v1 &<< 2)) & seven))
                        b0.addProduct(x21, float(((u1 &>> 31) | (u2 &<< 1)) & seven))
                        b1.addProduct(x21, float(((v1 &>> 31) | (v2 &<< 1)) & seven))
                        a0.addProduct(x31, float(u2 &>> 29))
                        a1.addProduct(x31, float(v2 &>> 29))
                    }
                    flush(operands, group: g, output: o, sum: prepared.groupSums[g], a0 + b0, a1 + b1, &r0, &r1)
                }
                let y = UnsafeMutableRawPointer(operands.y + o)
                y.storeBytes(of: r0, as: Vector.self)
                y.storeBytes(of: r1, toByteOffset: 32, as: Vector.self)
            }
        }
    }
}
