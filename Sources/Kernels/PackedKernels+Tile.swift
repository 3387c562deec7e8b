extension PackedKernel {
    /// The general packed path: prefill (several tokens), act-order `g_idx`, groups that split a
    /// word, outputs that do not fill a decode tile. Tiles of 16 outputs × a few word rows of
    /// inputs (`depth`) are dequantized (`scale · q − scale · zero`, one FMA per weight) into
    /// scratch allocated once per call and thread, then multiplied with every token, four tokens
    /// per pass so that each weight vector loaded serves four rows of `x`. As in the decode kernel,
    /// a chunk's tiles are walked across the same few word rows before moving down, so that the
    /// reads form a few contiguous streams and the slice of `x` stays in L1.
    enum Tile {
        static let width = 16

        /// Inputs per step: 8 word rows' worth (2 blocks at 3 bits), a multiple of the block.
        static func depth(bits: Int) -> Int { bits == 3 ? 64 : 8 * (32 / bits) }

        typealias Vector = SIMD8<Float>
        typealias Words = SIMD8<UInt32>

        /// Adds `x · Ŵᵀ` for `outputs` (starting at a multiple of `width`) to `y`.
        static func run(_ operands: PackedOperands, outputs: Range<Int>) {
            guard !outputs.isEmpty else { return }
            let depth = depth(bits: operands.bits)
            let tiles = (outputs.count + width - 1) / width
            let scratchBytes = UnsafeMutableRawPointer.allocate(byteCount: 4 * depth * width, alignment: 64)
            defer { scratchBytes.deallocate() }
            let scratch = scratchBytes.bindMemory(to: Float.self, capacity: depth * width)
            // Per tile, group and lane: scale and −scale·zero (read once per call from the fp16
            // scales and packed zeros).
            let tableFloats = tiles * 2 * operands.groups * width
            let tableBytes = UnsafeMutableRawPointer.allocate(byteCount: 4 * tableFloats, alignment: 64)
            defer { tableBytes.deallocate() }
            let tables = tableBytes.bindMemory(to: Float.self, capacity: tableFloats)
            for tile in 0..<tiles {
                let o = outputs.lowerBound + tile * width
                fillTable(
                    operands, tables + tile * 2 * operands.groups * width, output: o,
                    lanes: min(width, outputs.upperBound - o))
            }
            for k0 in stride(from: 0, to: operands.inFeatures, by: depth) {
                let k1 = min(k0 + depth, operands.inFeatures)
                for tile in 0..<tiles {
                    let o = outputs.lowerBound + tile * width, lanes = min(width, outputs.upperBound - o)
                    dequantize(
                        operands, tables + tile * 2 * operands.groups * width, into: scratch, output: o, lanes: lanes,
                        inputs: k0..<k1)
                    multiply(operands, scratch, output: o, lanes: lanes, inputs: k0..<k1)
                }
            }
        }

        static func fillTable(
            _ operands: PackedOperands, _ table: UnsafeMutablePointer<Float>, output o: Int, lanes: Int
        ) {
            let offsets = table + operands.groups * width
            for g in 0..<operands.groups {
                for v in 0..<2 {
                    let base = g * width + 8 * v
                    if 8 * v + 8 <= lanes {
                        let s = operands.scales8(group: g, output: o + 8 * v)
                        let z = operands.zeros8(group: g, output: o + 8 * v)
                        UnsafeMutableRawPointer(table + base).storeBytes(of: s, as: Vector.self)
                        UnsafeMutableRawPointer(offsets + base).storeBytes(of: -(s * z), as: Vector.self)
                    } else {
                        for l in 0..<8 {
                            let lane = 8 * v + l
                            let s = lane < lanes ? operands.scale(group: g, output: o + lane) : 0
                            let z = lane < lanes ? operands.zero(group: g, output: o + lane) : 0
                            table[base + l] = s
                            offsets[base + l] = -(s * z)
                        }
                    }
                }
            }
        }

        /// Word row `row` of outputs `o ..< o + 8`, zero past the last row or output.
        @inline(__always)
        static func words(_ operands: PackedOperands, row: Int, output o: Int, lanes: Int) -> Words {
            guard row < operands.wordRows, lanes > 0 else { return Words() }
            let p = operands.qweight + row * operands.outFeatures + o
            if lanes >= 8 { return UnsafeRawPointer(p).loadUnaligned(as: Words.self) }
            var w = Words()
            for l in 0..<lanes { w[l] = p[l] }
            return w
        }

        /// Code `k` of a block held in words `w0, w1, w2` (the latter two only at 3 bits).
        @inline(__always)
        static func code(_ k: Int, bits: Int, _ w0: Words, _ w1: Words, _ w2: Words) -> Words {
            if bits != 3 { return (w0 &>> UInt32(bits * k)) & UInt32((1 << bits) - 1) }
            let seven = Words(repeating: 7)
            switch k {
            case 0...9: return (w0 &>> UInt32(3 * k)) & seven
            case 10: return ((w0 &>> 30) | (w1 &<< 2)) & seven
            case 11...20: return (w1 &>> UInt32(3 * k - 32)) & seven
            case 21: return ((w1 &>> 31) | (w2 &<< 1)) & seven
            default: return (w2 &>> UInt32(3 * k - 64)) & seven
            }
        }

        /// Scratch row `i − inputs.lowerBound` = weights `Ŵ[o ..< o + 16, i]`.
        static func dequantize(
            _ operands: PackedOperands, _ table: UnsafeMutablePointer<Float>, into scratch: UnsafeMutablePointer<Float>,
            output o: Int, lanes: Int, inputs: Range<Int>
        ) {
            switch operands.bits {
            case 1: dequantize(Width1.self, operands, table, into: scratch, output: o, lanes: lanes, inputs: inputs)
            case 2: dequantize(Width2.self, operands, table, into: scratch, output: o, lanes: lanes, inputs: inputs)
            case 3: dequantize(Width3.self, operands, table, into: scratch, output: o, lanes: lanes, inputs: inputs)
            case 4: dequantize(Width4.self, operands, table, into: scratch, output: o, lanes: lanes, inputs: inputs)
            case 8: dequantize(Width8.self, operands, table, into: scratch, output: o, lanes: lanes, inputs: inputs)
            default: preconditionFailure("unsupported width \(operands.bits)")
            }
        }

        static func dequantize<W: PackedWidth>(
            _: W.Type, _ operands: PackedOperands, _ table: UnsafeMutablePointer<Float>,
            into scratch: UnsafeMutablePointer<Float>, output o: Int, lanes: Int, inputs: Range<Int>
        ) {
            let bits = W.bits
            let perBlock = bits == 3 ? 32 : 32 / bits, wordsPerBlock = bits == 3 ? 3 : 1
            let offsets = table + operands.groups * width
            let groupSize = operands.groupSize
            // One group per block: natural order with groups of whole blocks.
            let blockGroups = operands.naturalOrder && groupSize % perBlock == 0
            let firstBlock = inputs.lowerBound / perBlock, endBlock = (inputs.upperBound + perBlock - 1) / perBlock
            let mask = Words(repeating: UInt32((1 << bits) - 1))
            for v in 0..<2 {
                let vectorLanes = min(8, lanes - 8 * v)
                for block in firstBlock..<endBlock {
                    let row = block &* wordsPerBlock
                    let w0 = words(operands, row: row, output: o + 8 * v, lanes: vectorLanes)
                    let w1 =
                        wordsPerBlock > 1
                        ? words(operands, row: row + 1, output: o + 8 * v, lanes: vectorLanes) : Words()
                    let w2 =
                        wordsPerBlock > 1
                        ? words(operands, row: row + 2, output: o + 8 * v, lanes: vectorLanes) : Words()
                    let first = block &* perBlock, count = min(first + perBlock, inputs.upperBound) &- first
                    let destination = UnsafeMutableRawPointer(scratch + (first - inputs.lowerBound) * width + 8 * v)
                    @inline(__always) func store(_ k: Int, _ codes: Words, _ s: Vector, _ offset: Vector) {
                        let q = SIMDConvert.float(unsafeBitCast(codes, to: SIMD8<Int32>.self))
                        destination.storeBytes(
                            of: offset.addingProduct(q, s), toByteOffset: 4 &* width &* k, as: Vector.self)
                    }
                    @inline(__always) func entry(_ g: Int) -> (Vector, Vector) {
                        let index: Int = g &* width &+ 8 &* v
                        let s = UnsafeRawPointer(table + index).load(as: Vector.self)
                        return (s, UnsafeRawPointer(offsets + index).load(as: Vector.self))
                    }
                    @inline(__always) func code(_ k: Int, _ w: inout Words) -> Words {
                        if bits == 3 { return Tile.code(k, bits: 3, w0, w1, w2) }
                        defer { w &>>= UInt32(bits) }
                        return w & mask
                    }
                    var w = w0
                    if blockGroups {
                        let (s, offset) = entry(first / groupSize)
                        for k in 0..<count { store(k, code(k, &w), s, offset) }
                    } else if operands.naturalOrder {
                        // Groups split a block: advance at each multiple of the group size.
                        var g = first / groupSize, boundary = (g + 1) * groupSize
                        for k in 0..<count {
                            if first &+ k == boundary { g &+= 1; boundary &+= groupSize }
                            let (s, offset) = entry(g)
                            store(k, code(k, &w), s, offset)
                        }
                    } else {
                        for k in 0..<count {
                            let (s, offset) = entry(Int(operands.gIdx[first &+ k]))
                            store(k, code(k, &w), s, offset)
                        }
                    }
                }
            }
        }

        /// `y[t, o ..< o + lanes] += Σ_i x[t, i] · scratch[i]` for every token.
        static func multiply(
            _ operands: PackedOperands, _ scratch: UnsafeMutablePointer<Float>, output o: Int, lanes: Int,
            inputs: Range<Int>
        ) {
            let tokens = operands.tokens, stride = operands.inFeatures, out = operands.outFeatures
            let count = inputs.count
            let w = UnsafeRawPointer(scratch)
            @inline(__always) func add(_ a0: Vector, _ a1: Vector, token t: Int) {
                let y = operands.y + t * out + o
                if lanes == width {
                    let raw = UnsafeMutableRawPointer(y)
                    raw.storeBytes(of: raw.loadUnaligned(as: Vector.self) + a0, as: Vector.self)
                    raw.storeBytes(
                        of: raw.loadUnaligned(fromByteOffset: 32, as: Vector.self) + a1, toByteOffset: 32,
                        as: Vector.self)
                } else {
                    for l in 0..<lanes { y[l] += l < 8 ? a0[l] : a1[l - 8] }
                }
            }
            var t = 0
            while t + 4 <= tokens {
                let x0 = operands.x + t * stride + inputs.lowerBound
                let x1 = x0 + stride, x2 = x1 + stride, x3 = x2 + stride
                var a0 = Vector(), a1 = Vector(), b0 = Vector(), b1 = Vector()
                var c0 = Vector(), c1 = Vector(), d0 = Vector(), d1 = Vector()
                for i in 0..<count {
                    let w0 = w.load(fromByteOffset: 64 * i, as: Vector.self)
                    let w1 = w.load(fromByteOffset: 64 * i + 32, as: Vector.self)
                    let v0 = Vector(repeating: x0[i]), v1 = Vector(repeating: x1[i])
                    let v2 = Vector(repeating: x2[i]), v3 = Vector(repeating: x3[i])
                    a0.addProduct(v0, w0); a1.addProduct(v0, w1)
                    b0.addProduct(v1, w0); b1.addProduct(v1, w1)
                    c0.addProduct(v2, w0); c1.addProduct(v2, w1)
                    d0.addProduct(v3, w0); d1.addProduct(v3, w1)
                }
                add(a0, a1, token: t)
                add(b0, b1, token: t + 1)
                add(c0, c1, token: t + 2)
                add(d0, d1, token: t + 3)
                t += 4
            }
            while t < tokens {
                let x0 = operands.x + t * stride + inputs.lowerBound
                var a0 = Vector(), a1 = Vector(), b0 = Vector(), b1 = Vector()
                var i = 0
                while i + 2 <= count {
                    let v0 = Vector(repeating: x0[i]), v1 = Vector(repeating: x0[i + 1])
                    a0.addProduct(v0, w.load(fromByteOffset: 64 * i, as: Vector.self))
                    a1.addProduct(v0, w.load(fromByteOffset: 64 * i + 32, as: Vector.self))
                    b0.addProduct(v1, w.load(fromByteOffset: 64 * i + 64, as: Vector.self))
                    b1.addProduct(v1, w.load(fromByteOffset: 64 * i + 96, as: Vector.self))
                    i += 2
                }
                if i < count {
                    let v0 = Vector(repeating: x0[i])
                    a0.addProduct(v0, w.load(fromByteOffset: 64 * i, as: Vector.self))
                    a1.addProduct(v0, w.load(fromByteOffset: 64 * i + 32, as: Vector.self))
                }
                add(a0 + b0, a1 + b1, token: t)
                t += 1
            }
        }
    }
}
