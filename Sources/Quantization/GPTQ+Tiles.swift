import Kernels

/// GPTQ's in-block pass with 16 rows in the lanes of one SIMD vector. Inside a block each row is a
/// serial chain (quantize a column, feed its error into the next columns, quantize the next); one
/// row at a time the chain's latency (a division, rounding, the feedback) bounds the speed. Rows
/// are independent, so a tile of 16 rows runs the same chain once for all of them, with the same
/// operations per element as `quantizeBlock` (the scalar reference beside it): results are
/// bit-identical, which `GPTQTests.tilesEqualTheRowByRowPass` checks.
extension GPTQ {
    static let tileRows = 16
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
        let group = UnsafeMutablePointer<Float>.allocate(capacity: groupSize)
        defer {
            running.deallocate()
            given.deallocate()
            snapshot.deallocate()
            codes.deallocate()
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
            for lane in 0..<count {
                let row = s.w + (tileStart + lane) * columns + blockStart
                let original = s.original + (tileStart + lane) * columns + blockStart, live = s.live + blockStart
                for k in 0..<span {
                    runningLanes[k * tileRows + lane] = row[k]
                    givenLanes[k * tileRows + lane] = original[k] * live[k]
                }
            }
            if let basis {
                let n = basis.extent
                for k in 0..<n { snapshot[k] = given[k] }
                basis.inverse.withUnsafeBufferPointer { inverse in
                    for m in 0..<n {
                        let delta = running[m] - given[m]
                        let row = inverse.baseAddress! + m * n
                        for k in m..<n { snapshot[k].addProduct(delta, Lanes(repeating: row[k])) }
                    }
                }
            }
            // A group can start in an earlier block: its parameters carry over.
            var scale = Lanes(repeating: 1), zero = Lanes()
            for lane in 0..<count {
                scale[lane] = s.parameters[tileStart + lane].scale
                zero[lane] = s.parameters[tileStart + lane].zero
            }
            var energy = SIMD16<Double>()
            let maxCode = Lanes(repeating: Float(quantizer.maxCode))
            let limit = Lanes(repeating: 4_194_304), magic = Lanes(repeating: 12_582_912)
            for j in block {
                let k = j - blockStart
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
                let scaled = SIMD16<Double>((value - q) * Lanes(repeating: s.v[j * columns + j]))
                energy += scaled * scaled
                let difference = given[k] - q
                codes[k] = code
                running[k] = q
                let differences = s.differences + k * s.rows + tileStart
                if count == tileRows {
                    UnsafeMutableRawPointer(differences).storeBytes(of: difference, as: Lanes.self)
                } else {
                    for lane in 0..<count { differences[lane] = difference[lane] }
                }
                // Error feedback inside the block.
                let factor = s.v + j * columns + blockStart
                for next in (k + 1)..<max(k + 1, width) {
                    running[next].addProduct(difference, Lanes(repeating: factor[next]))
                }
            }
            // Transpose out: the block's dequantized weights and codes.
            let codeLanes = lanes(codes)
            for lane in 0..<count {
                let r = tileStart + lane
                s.energy[r] += energy[lane]
                let row = s.w + r * columns + blockStart, rowCodes = s.codes + r * columns + blockStart
                for k in 0..<width {
                    row[k] = runningLanes[k * tileRows + lane]
                    rowCodes[k] = UInt8(codeLanes[k * tileRows + lane])
                }
            }
            tileStart += count
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
