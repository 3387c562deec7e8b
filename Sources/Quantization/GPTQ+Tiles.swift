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
        let group = UnsafeMutablePointer<Float>.allocate(capacity: groupSize)
        // One column's code, dequantized value, difference and scaled error, read back lane by lane.
        let outputs = UnsafeMutablePointer<Lanes>.allocate(capacity: 4)
        let outputLanes = UnsafeMutableRawPointer(outputs).assumingMemoryBound(to: Float.self)
        defer {
            outputs.deallocate()
            running.deallocate()
            given.deallocate()
            snapshot.deallocate()
            group.deallocate()
        }
        var tileStart = rows.lowerBound
        while tileStart < rows.upperBound {
            let count = min(tileRows, rows.upperBound - tileStart)
            // Transpose in: lane l holds row tileStart + l (missing lanes zero). Lanes are written as
            // floats (a vector's lane by index would go through the stack).
            running.initialize(repeating: Lanes(), count: span)
            given.initialize(repeating: Lanes(), count: span)
            let runningLanes = UnsafeMutableRawPointer(running).assumingMemoryBound(to: Float.self)
            let givenLanes = UnsafeMutableRawPointer(given).assumingMemoryBound(to: Float.self)
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
            var energy = (0..<tileRows).map { _ in 0.0 }
            let maxCode = Lanes(repeating: Float(quantizer.maxCode))
            let limit = Lanes(repeating: 4_194_304), magic = Lanes(repeating: 12_582_912)
            for j in block {
                let k = j - blockStart
                if j % groupSize == 0 {
                    let end = min(j + groupSize, columns)
                    let snapshotLanes = UnsafeMutableRawPointer(snapshot).assumingMemoryBound(to: Float.self)
                    for lane in 0..<count {
                        if basis != nil {
                            for c in j..<end { group[c - j] = snapshotLanes[(c - blockStart) * tileRows + lane] }
                        } else {
                            // Nothing updated yet (first block): the given weights, which may reach past it.
                            let original = s.original + (tileStart + lane) * columns
                            for c in j..<end { group[c - j] = original[c] * s.live[c] }
                        }
                        let p = quantizer.parameters(UnsafeBufferPointer(start: group, count: end - j))
                        scale[lane] = p.scale
                        zero[lane] = p.zero
                        s.parameters[tileStart + lane] = p
                        s.scales[(tileStart + lane) * groups + j / groupSize] = p.scale
                        s.zeros[(tileStart + lane) * groups + j / groupSize] = p.zero
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
                let scaled = (value - q) * Lanes(repeating: s.v[j * columns + j])
                let difference = given[k] - q
                outputs[0] = code
                outputs[1] = q
                outputs[2] = difference
                outputs[3] = scaled
                for lane in 0..<count {
                    let r = tileStart + lane
                    s.codes[r * columns + j] = Int(outputLanes[lane])
                    s.dequantized[r * columns + j] = outputLanes[tileRows + lane]
                    s.differences[r * blockSize + k] = outputLanes[2 * tileRows + lane]
                    let e = Double(outputLanes[3 * tileRows + lane])
                    energy[lane] += e * e
                }
                // Error feedback inside the block.
                let factor = s.v + j * columns + blockStart
                for next in (k + 1)..<max(k + 1, width) {
                    running[next].addProduct(difference, Lanes(repeating: factor[next]))
                }
            }
            for lane in 0..<count {
                let r = tileStart + lane
                s.energy[r] += energy[lane]
                let row = s.w + r * columns + blockStart
                for k in 0..<width { row[k] = runningLanes[k * tileRows + lane] }
            }
            tileStart += count
        }
    }
}
