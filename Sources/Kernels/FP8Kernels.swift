import ModelFormat

/// A block-scaled FP8 matrix as the checkpoint stores it: one byte per weight (E4M3 or E5M2) and
/// one f32 scale per `blockRows × blockColumns` block (edge blocks partial).
public struct FP8Weights: Sendable {
    public let codes: [UInt8]
    public let scales: [Float]
    public let format: TensorDType
    public let blockRows: Int
    public let blockColumns: Int

    public init(codes: [UInt8], scales: [Float], format: TensorDType, blockRows: Int, blockColumns: Int) {
        precondition(FP8.table(format) != nil, "not an FP8 dtype: \(format)")
        self.codes = codes
        self.scales = scales
        self.format = format
        self.blockRows = blockRows
        self.blockColumns = blockColumns
    }

    public var byteCount: Int { codes.count + 4 * scales.count }

    public func dequantized(rows: Int, columns: Int) -> [Float] {
        codes.withUnsafeBytes {
            FP8.dequantize(
                codes: $0, dtype: format, rows: rows, columns: columns, scales: scales, blockRows: blockRows,
                blockColumns: blockColumns)
        }
    }
}

extension Kernels {
    /// `x · Wᵀ (+ bias)` straight from FP8. Decode (fewer than 4 tokens): dot products from the
    /// codes (`dotFP8`). Prefill: each chunk of 16 weight rows is widened to f32 once, eight codes
    /// at a time (the code's sign and low seven bits placed in an f32's top bits, then two
    /// multiplies: by the power of two that fixes the exponent bias, exact, and by the block's
    /// scale, the same rounding as `FP8.dequantize`), and reused for every token.
    static func linearFP8(
        _ x: [Float], tokens: Int, weights: FP8Weights, outFeatures: Int, inFeatures: Int, bias: [Float]?
    ) -> [Float] {
        precondition(x.count == tokens * inFeatures && weights.codes.count == outFeatures * inFeatures)
        var y = [Float](repeating: 0, count: tokens * outFeatures)
        // E4M3: bits s.eeee.mmm → f32 bits s | (eeeemmm << 20), then × 2^(127−7); E5M2: << 21, × 2^(127−15).
        let shift: UInt32 = weights.format == .f8e4m3 ? 20 : 21
        let bias2 = Float(sign: .plus, exponent: weights.format == .f8e4m3 ? 120 : 112, significand: 1)
        let scaleColumns = (inFeatures + weights.blockColumns - 1) / weights.blockColumns
        let blockRows = weights.blockRows, blockColumns = weights.blockColumns
        x.withUnsafeBufferPointer { x in
            weights.codes.withUnsafeBufferPointer { codes in
                weights.scales.withUnsafeBufferPointer { scales in
                    y.withUnsafeMutableBufferPointer { y in
                        let buffers = BuffersFP8(
                            x: x.baseAddress!, codes: codes.baseAddress!, scales: scales.baseAddress!,
                            y: y.baseAddress!)
                        let chunk = 16
                        let chunks = (outFeatures + chunk - 1) / chunk
                        let body: @Sendable (Int) -> Void = { c in
                            let first = c * chunk, last = min(first + chunk, outFeatures)
                            if tokens < 4 {
                                // Decode: dot products straight from the codes, the scale once per block.
                                for t in 0..<tokens {
                                    for o in first..<last {
                                        buffers.y[t * outFeatures + o] =
                                            dotFP8(
                                                buffers.x + t * inFeatures, buffers.codes + o * inFeatures,
                                                count: inFeatures,
                                                scales: buffers.scales + (o / blockRows) * scaleColumns,
                                                blockColumns: blockColumns, shift: shift, bias: bias2) + (bias?[o] ?? 0)
                                    }
                                }
                                return
                            }
                            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: (last - first) * inFeatures)
                            defer { scratch.deallocate() }
                            for o in first..<last {
                                let row = scratch + (o - first) * inFeatures
                                let source = buffers.codes + o * inFeatures
                                let scaleRow = buffers.scales + (o / blockRows) * scaleColumns
                                var start = 0
                                while start < inFeatures {
                                    let end = min(start + blockColumns, inFeatures)
                                    widenFP8(
                                        source + start, into: row + start, count: end - start, shift: shift,
                                        bias: bias2, scale: scaleRow[start / blockColumns])
                                    start = end
                                }
                            }
                            widenedRowProducts(
                                buffers.x, scratch, rows: first..<last, tokens: tokens, inFeatures: inFeatures,
                                outFeatures: outFeatures, bias: bias, y: buffers.y)
                        }
                        Parallel.perform(iterations: chunks, work: tokens * outFeatures * inFeatures, body)
                    }
                }
            }
        }
        return y
    }

    /// `Σ x[i]·w[i]` over one FP8 row: per block of `blockColumns`, the codes' f32 bit patterns
    /// (exponent bias not yet applied) times x in SIMD, then the block's sum times the exponent
    /// fix and the block's scale. Not bit-identical to widening first (the scale is applied to
    /// a block's sum, not to each weight): the same value to rounding.
    @inline(__always)
    static func dotFP8(
        _ x: UnsafePointer<Float>, _ codes: UnsafePointer<UInt8>, count: Int, scales: UnsafePointer<Float>,
        blockColumns: Int, shift: UInt32, bias: Float
    ) -> Float {
        let signMask = SIMD8<UInt32>(repeating: 0x80), magnitudeMask = SIMD8<UInt32>(repeating: 0x7F)
        let shiftSplat = SIMD8<UInt32>(repeating: shift)
        let raw = UnsafeRawPointer(codes), rawX = UnsafeRawPointer(x)
        var total: Float = 0
        var start = 0, block = 0
        while start < count {
            let end = min(start + blockColumns, count)
            var a0 = SIMD8<Float>(), a1 = SIMD8<Float>()
            var i = start
            while i + 16 <= end {
                let b0 = SIMD8<UInt32>(truncatingIfNeeded: raw.loadUnaligned(fromByteOffset: i, as: SIMD8<UInt8>.self))
                let b1 = SIMD8<UInt32>(
                    truncatingIfNeeded: raw.loadUnaligned(fromByteOffset: i + 8, as: SIMD8<UInt8>.self))
                let w0 = ((b0 & signMask) &<< 24) | ((b0 & magnitudeMask) &<< shiftSplat)
                let w1 = ((b1 & signMask) &<< 24) | ((b1 & magnitudeMask) &<< shiftSplat)
                a0.addProduct(
                    unsafeBitCast(w0, to: SIMD8<Float>.self),
                    rawX.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self))
                a1.addProduct(
                    unsafeBitCast(w1, to: SIMD8<Float>.self),
                    rawX.loadUnaligned(fromByteOffset: 4 * (i + 8), as: SIMD8<Float>.self))
                i += 16
            }
            var sum = (a0 + a1).sum()
            while i < end {
                let byte = UInt32(codes[i])
                sum += Float(bitPattern: ((byte & 0x80) << 24) | ((byte & 0x7F) << shift)) * x[i]
                i += 1
            }
            total += sum * bias * scales[block]
            start = end
            block += 1
        }
        return total
    }

    /// `count` FP8 codes → f32 values times `scale`, eight at a time.
    @inline(__always)
    static func widenFP8(
        _ source: UnsafePointer<UInt8>, into destination: UnsafeMutablePointer<Float>, count: Int, shift: UInt32,
        bias: Float, scale: Float
    ) {
        let signMask = SIMD8<UInt32>(repeating: 0x80), magnitudeMask = SIMD8<UInt32>(repeating: 0x7F)
        let biasSplat = SIMD8<Float>(repeating: bias), scaleSplat = SIMD8<Float>(repeating: scale)
        let shiftSplat = SIMD8<UInt32>(repeating: shift)
        let raw = UnsafeRawPointer(source), out = UnsafeMutableRawPointer(destination)
        var i = 0
        while i + 8 <= count {
            let bytes = SIMD8<UInt32>(truncatingIfNeeded: raw.loadUnaligned(fromByteOffset: i, as: SIMD8<UInt8>.self))
            let bits = ((bytes & signMask) &<< 24) | ((bytes & magnitudeMask) &<< shiftSplat)
            let value = unsafeBitCast(bits, to: SIMD8<Float>.self) * biasSplat * scaleSplat
            out.storeBytes(of: value, toByteOffset: 4 * i, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            let byte = UInt32(source[i])
            let bits = ((byte & 0x80) << 24) | ((byte & 0x7F) << shift)
            destination[i] = Float(bitPattern: bits) * bias * scale
            i += 1
        }
    }

    struct BuffersFP8: @unchecked Sendable {
        let x: UnsafePointer<Float>
        let codes: UnsafePointer<UInt8>
        let scales: UnsafePointer<Float>
        let y: UnsafeMutablePointer<Float>
    }
}
