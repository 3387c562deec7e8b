import Kernels

/// GPTQ's in-block pass with 16 rows in the lanes of one SIMD vector. Inside a block each row is a
/// serial chain (quantize a column, feed its error into the next columns, quantize the next); one
/// row at a time the chain's latency (a division, rounding, the feedback) bounds the speed. Rows
/// are independent, so a tile of 16 rows runs the same chain once for all of them, with the same
/// operations per element as `quantizeBlock` (the scalar reference beside it): results are
/// bit-identical, which `GPTQTests.tilesEqualTheRowByRowPass` checks.
extension GPTQ {
    static let tileRows = 16
    /// Columns whose error feedback into the rest of the block is applied together (`feedback`).
    static let subBlock = 16
    typealias Lanes = SIMD16<Float>

    /// `quantizeBlock` for `rows`, 16 rows at a time.
    static func quantizeBlockInTiles(
        _ s: RowState, rows: Range<Int>, columns: Int, block: Range<Int>, blockSize: Int,
        groupSize: Int, groups: Int, basis: GroupBasis?, quantizer: GroupQuantizer
    ) {
        let blockStart = block.lowerBound, width = block.count
        // Columns loaded per row: the block, or the group basis's reach past it.
        let span = max(width, basis?.extent ?? 0)
        let running = UnsafeMutablePointer<Lanes>.allocate(capacity: span)
        let given = UnsafeMutablePointer<Lanes>.allocate(capacity: span)
        let snapshot = UnsafeMutablePointer<Lanes>.allocate(capacity: max(1, basis?.extent ?? 0))
        let codes = UnsafeMutablePointer<Lanes>.allocate(capacity: width)
        let scaled = UnsafeMutablePointer<Lanes>.allocate(capacity: width)
        let deltas = UnsafeMutablePointer<Lanes>.allocate(capacity: max(1, basis?.extent ?? 0))
        let rowCodes = UnsafeMutablePointer<UInt8>.allocate(capacity: width)
        let pending = UnsafeMutablePointer<Lanes>.allocate(capacity: subBlock)
        let staging = UnsafeMutablePointer<Float>.allocate(capacity: 2 * tileRows * span)
        let group = UnsafeMutablePointer<Float>.allocate(capacity: groupSize)
        defer {
            running.deallocate()
            given.deallocate()
            snapshot.deallocate()
            codes.deallocate()
            scaled.deallocate()
            deltas.deallocate()
            rowCodes.deallocate()
            pending.deallocate()
            staging.deallocate()
            group.deallocate()
        }
        // Lanes are read and written as floats (a vector's lane by index would go through the stack).
        func lanes(_ p: UnsafeMutablePointer<Lanes>) -> UnsafeMutablePointer<Float> {
            UnsafeMutableRawPointer(p).assumingMemoryBound(to: Float.self)
        }
        var tileStart = rows.lowerBound
        while tileStart < rows.upperBound {
            let count = min(tileRows, rows.upperBound - tileStart)
            // Transpose in: lane l holds row tileStart + l (missing lanes zero).
            running.initialize(repeating: Lanes(), count: span)
            given.initialize(repeating: Lanes(), count: span)
            let runningLanes = lanes(running), givenLanes = lanes(given)
            // The rows are copied whole first (vector loads, many cache misses in flight), then
            // transposed from the copy; transposing straight from the matrix waits on each row's misses.
            for lane in 0..<count {
                let r = tileStart + lane
                (staging + lane * span).update(from: s.w + r * columns + blockStart, count: span)
                (staging + (tileRows + lane) * span).update(from: s.original + r * columns + blockStart, count: span)
            }
            let live = s.live + blockStart
            for lane in 0..<count {
                let row = staging + lane * span, original = staging + (tileRows + lane) * span
                for k in 0..<span {
                    runningLanes[k * tileRows + lane] = row[k]
                    givenLanes[k * tileRows + lane] = original[k] * live[k]
                }
            }
            if let basis {
                basis.inverse.withUnsafeBufferPointer { inverse in
                    Self.snapshot(
                        snapshot, given: given, running: running, deltas: deltas, inverse: inverse.baseAddress!,
                        extent: basis.extent)
                }
            }
            // A group can start in an earlier block: its parameters carry over.
            var scale = Lanes(repeating: 1), zero = Lanes()
            for lane in 0..<count {
                scale[lane] = s.parameters[tileStart + lane].scale
                zero[lane] = s.parameters[tileStart + lane].zero
            }
            let maxCode = Lanes(repeating: Float(quantizer.maxCode))
            let limit = Lanes(repeating: 4_194_304), magic = Lanes(repeating: 12_582_912)
            var subStart = 0
            while subStart < width {
                let subEnd = min(subStart + subBlock, width)
                for k in subStart..<subEnd {
                    let j = blockStart + k
                    if j % groupSize == 0 {
                        let end = min(j + groupSize, columns)
                        // The group's weights as the reference takes them, 16 rows a vector: the basis's
                        // snapshot, or (first block) the given weights where the tile holds them.
                        let source: UnsafeMutablePointer<Lanes>? =
                            basis != nil ? snapshot + k : (end - blockStart <= span ? given + k : nil)
                        if let source, !quantizer.clipSearch {
                            (scale, zero) = Self.parameters(source, count: end - j, quantizer: quantizer)
                        } else {
                            for lane in 0..<count {
                                if let source {
                                    for c in 0..<(end - j) { group[c] = lanes(source)[c * tileRows + lane] }
                                } else {
                                    // The given weights, reaching past the tile's columns.
                                    let original = s.original + (tileStart + lane) * columns
                                    for c in j..<end { group[c - j] = original[c] * s.live[c] }
                                }
                                let p = quantizer.parameters(UnsafeBufferPointer(start: group, count: end - j))
                                scale[lane] = p.scale
                                zero[lane] = p.zero
                            }
                        }
                        for lane in 0..<count {
                            let r = tileStart + lane
                            s.parameters[r] = GroupQuantizer.Parameters(scale: scale[lane], zero: zero[lane])
                            s.scales[r * groups + j / groupSize] = scale[lane]
                            s.zeros[r * groups + j / groupSize] = zero[lane]
                        }
                    }
                    let value = running[k]
                    var code: Lanes
                    if quantizer.bits == 1 {
                        code = Lanes().replacing(with: 1, where: value .>= 0)
                    } else {
                        // Round half to even by adding 1.5 · 2²³ (exact below 2²²; beyond, the clamp
                        // gives what it gives to the rounded value).
                        var x = value / scale
                        x.replace(with: limit, where: x .> limit)
                        x.replace(with: -limit, where: x .< -limit)
                        x.replace(with: 0, where: x .!= x)
                        code = ((x + magic) - magic) + zero
                        code.replace(with: 0, where: code .< 0)
                        code.replace(with: maxCode, where: code .> maxCode)
                    }
                    let q = scale * (code - zero)
                    scaled[k] = (value - q) * Lanes(repeating: s.v[j * columns + j])
                    let difference = given[k] - q
                    codes[k] = code
                    running[k] = q
                    let differences = s.differences + k * s.rows + tileStart
                    if count == tileRows {
                        UnsafeMutableRawPointer(differences).storeBytes(of: difference, as: Lanes.self)
                    } else {
                        for lane in 0..<count { differences[lane] = difference[lane] }
                    }
                    // Error feedback inside the sub-block.
                    pending[k - subStart] = difference
                    Self.feedback(
                        running, from: pending + (k - subStart), count: 1, factor: s.v + j * columns + blockStart,
                        columns: columns, next: (k + 1)..<subEnd)
                }
                // The sub-block's feedback into the rest of the block, four columns at a time in registers:
                // each column takes the sub-block's differences in column order, as one at a time would.
                Self.feedback(
                    running, from: pending, count: subEnd - subStart,
                    factor: s.v + (blockStart + subStart) * columns + blockStart,
                    columns: columns, next: subEnd..<width)
                subStart = subEnd
            }
            // Transpose out: the block's dequantized weights and codes, row by row through `staging`
            // (whole rows stored at once), and each row's error energy in column order.
            let codeLanes = lanes(codes), scaledLanes = lanes(scaled)
            for lane in 0..<count {
                let r = tileStart + lane
                var energy = 0.0
                for k in 0..<width {
                    staging[k] = runningLanes[k * tileRows + lane]
                    // Codes are whole numbers in 0…255: the low byte of 2²³ + code is the code.
                    rowCodes[k] = UInt8(truncatingIfNeeded: (codeLanes[k * tileRows + lane] + 8_388_608).bitPattern)
                    let e = Double(scaledLanes[k * tileRows + lane])
                    energy += e * e
                }
                s.energy[r] += energy
                (s.w + r * columns + blockStart).update(from: staging, count: width)
                (s.codes + r * columns + blockStart).update(from: rowCodes, count: width)
            }
            tileStart += count
        }
    }

    /// `running[c] += Σ_i differences[i] · factor[i · columns + c]` for `c` in `next`, `i` in
    /// order, one fused multiply-add each: what feeding each difference forward on its own does,
    /// with each column held in registers over the `count` differences instead of loaded and
    /// stored once per difference.
    @inline(__always)
    static func feedback(
        _ running: UnsafeMutablePointer<Lanes>, from differences: UnsafeMutablePointer<Lanes>, count: Int,
        factor: UnsafePointer<Float>, columns: Int, next: Range<Int>
    ) {
        var c = next.lowerBound
        while c + 4 <= next.upperBound {
            var a0 = running[c], a1 = running[c + 1], a2 = running[c + 2], a3 = running[c + 3]
            for i in 0..<count {
                let d = differences[i], f = factor + i * columns + c
                a0.addProduct(d, Lanes(repeating: f[0]))
                a1.addProduct(d, Lanes(repeating: f[1]))
                a2.addProduct(d, Lanes(repeating: f[2]))
                a3.addProduct(d, Lanes(repeating: f[3]))
            }
            running[c] = a0
            running[c + 1] = a1
            running[c + 2] = a2
            running[c + 3] = a3
            c += 4
        }
        while c < next.upperBound {
            var a = running[c]
            for i in 0..<count { a.addProduct(differences[i], Lanes(repeating: factor[i * columns + c])) }
            running[c] = a
            c += 1
        }
    }

    /// The group basis's weights, `snapshot[k] = given[k] + Σ_{m ≤ k} (running[m] − given[m]) · T⁻¹[m, k]`
    /// with `m` in order, one fused multiply-add each (as adding each row of `T⁻¹` in turn would), four
    /// columns at a time in registers.
    @inline(__always)
    static func snapshot(
        _ snapshot: UnsafeMutablePointer<Lanes>, given: UnsafeMutablePointer<Lanes>,
        running: UnsafeMutablePointer<Lanes>, deltas: UnsafeMutablePointer<Lanes>, inverse: UnsafePointer<Float>,
        extent n: Int
    ) {
        for m in 0..<n { deltas[m] = running[m] - given[m] }
        var k = 0
        while k + 4 <= n {
            var a0 = given[k], a1 = given[k + 1], a2 = given[k + 2], a3 = given[k + 3]
            for m in 0...k {
                let d = deltas[m], row = inverse + m * n + k
                a0.addProduct(d, Lanes(repeating: row[0]))
                a1.addProduct(d, Lanes(repeating: row[1]))
                a2.addProduct(d, Lanes(repeating: row[2]))
                a3.addProduct(d, Lanes(repeating: row[3]))
            }
            // The triangle's corner: rows k + 1…k + 3 reach only the later columns.
            var row = inverse + (k + 1) * n + k
            a1.addProduct(deltas[k + 1], Lanes(repeating: row[1]))
            a2.addProduct(deltas[k + 1], Lanes(repeating: row[2]))
            a3.addProduct(deltas[k + 1], Lanes(repeating: row[3]))
            row = inverse + (k + 2) * n + k
            a2.addProduct(deltas[k + 2], Lanes(repeating: row[2]))
            a3.addProduct(deltas[k + 2], Lanes(repeating: row[3]))
            row = inverse + (k + 3) * n + k
            a3.addProduct(deltas[k + 3], Lanes(repeating: row[3]))
            snapshot[k] = a0
            snapshot[k + 1] = a1
            snapshot[k + 2] = a2
            snapshot[k + 3] = a3
            k += 4
        }
        while k < n {
            var a = given[k]
            for m in 0...k { a.addProduct(deltas[m], Lanes(repeating: inverse[m * n + k])) }
            snapshot[k] = a
            k += 1
        }
    }

    /// `GroupQuantizer.parameters` of 16 rows at once, the same operations lane by lane (min-max
    /// grid, or the sign grid's mean magnitude summed in column order).
    @inline(__always)
    static func parameters(
        _ values: UnsafeMutablePointer<Lanes>, count: Int, quantizer: GroupQuantizer
    ) -> (scale: Lanes, zero: Lanes) {
        if quantizer.bits == 1 {
            var sum = Lanes()
            for c in 0..<count {
                let value = values[c]
                sum += value.replacing(with: -value, where: value .< 0)
            }
            return (2 * (sum / Lanes(repeating: Float(count))), Lanes(repeating: 0.5))
        }
        // `min(low, v)` is `v < low ? v : low`, `max(high, v)` is `v >= high ? v : high`.
        var low = Lanes(), high = Lanes()
        for c in 0..<count {
            let value = values[c]
            low.replace(with: value, where: value .< low)
            high.replace(with: value, where: value .>= high)
        }
        let flat = (low .== 0) .& (high .== 0)
        low.replace(with: -1, where: flat)
        high.replace(with: 1, where: flat)
        let scale = (high - low) / Lanes(repeating: Float(quantizer.maxCode))
        return (scale, (-low / scale).rounded(.toNearestOrEven))
    }
}
