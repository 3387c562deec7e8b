#if arch(x86_64)
import KernelsAVX512
#endif

/// bf16 weights: the linear layer that reads them without widening the whole matrix, and the
/// widening helpers the bf16 and FP8 prefill paths share.
extension Kernels {
    /// The bf16 linear layer. Decode (fewer than 4 tokens): dot products straight from bf16 against
    /// x split into even and odd elements once per token (`dotsBF16`). Prefill: each chunk of weight
    /// rows is widened to f32 once and reused for every token.
    static func linearBF16(
        _ x: [Float], tokens: Int, weight w: [UInt16], outFeatures: Int, inFeatures: Int,
        bias: [Float]?
    ) -> [Float] {
        precondition(x.count == tokens * inFeatures && w.count == outFeatures * inFeatures && inFeatures % 2 == 0)
        var y = [Float](repeating: 0, count: tokens * outFeatures)
        let half = inFeatures / 2
        // x deinterleaved per token: [even half | odd half].
        var split = [Float](repeating: 0, count: tokens * inFeatures)
        for t in 0..<tokens {
            for i in 0..<half {
                split[t * inFeatures + i] = x[t * inFeatures + 2 * i]
                split[t * inFeatures + half + i] = x[t * inFeatures + 2 * i + 1]
            }
        }
        let wide = CPUFeatures.useAVX512
        split.withUnsafeBufferPointer { xs in
            x.withUnsafeBufferPointer { x in
                w.withUnsafeBufferPointer { w in
                    y.withUnsafeMutableBufferPointer { y in
                        let buffers = BuffersBF16(
                            xSplit: xs.baseAddress!, x: x.baseAddress!, w: w.baseAddress!, y: y.baseAddress!)
                        let chunk = 16
                        let chunks = (outFeatures + chunk - 1) / chunk
                        let body: @Sendable (Int) -> Void = { c in
                            let first = c * chunk, last = min(first + chunk, outFeatures)
                            if tokens >= 4 {
                                let scratch = UnsafeMutablePointer<Float>.allocate(
                                    capacity: (last - first) * inFeatures)
                                defer { scratch.deallocate() }
                                for o in first..<last {
                                    widenBF16(
                                        buffers.w + o * inFeatures, into: scratch + (o - first) * inFeatures,
                                        count: inFeatures)
                                }
                                widenedRowProducts(
                                    buffers.x, scratch, rows: first..<last, tokens: tokens, inFeatures: inFeatures,
                                    outFeatures: outFeatures, bias: bias, y: buffers.y)
                            } else {
                                for t in 0..<tokens {
                                    let even = buffers.xSplit + t * inFeatures, out = buffers.y + t * outFeatures
                                    dotsBF16(
                                        even, even + half, buffers.w, inFeatures: inFeatures, rows: first..<last,
                                        into: out, wide: wide)
                                    if let bias { for o in first..<last { out[o] += bias[o] } }
                                }
                            }
                        }
                        Parallel.perform(iterations: chunks, work: tokens * outFeatures * inFeatures, body)
                    }
                }
            }
        }
        return y
    }

    /// `y[o] = Σ_j even[j]·w[o, 2j] + odd[j]·w[o, 2j+1]` for the bf16 rows `rows` of `w` (`inFeatures`
    /// wide, even). `wide`: the AVX-512 kernel (`BF16Dot512`, 32 weights a vector, four rows a pass so
    /// that each load of x serves four rows), else AVX2: one row at a time (16 weights a vector), which
    /// reads the rows as one sequential stream (the bf16 synthetic Mixtral's decode 26.8 → 31.5 tokens/s
    /// on the Zen 3 against four rows a pass; docs/KERNELS.md). The two sum in different orders; both are
    /// tested against the scalar reference.
    @inline(__always)
    static func dotsBF16(
        _ even: UnsafePointer<Float>, _ odd: UnsafePointer<Float>, _ w: UnsafePointer<UInt16>, inFeatures: Int,
        rows: Range<Int>, into y: UnsafeMutablePointer<Float>, wide: Bool
    ) {
        #if arch(x86_64)
        if wide {
            BF16Dot512.rows(even: even, odd: odd, w: w, inFeatures: inFeatures, rows: rows, y: y)
            return
        }
        #endif
        let pairs = inFeatures / 2
        for o in rows { y[o] = dotBF16(even, odd, w + o * inFeatures, pairs: pairs) }
    }

    /// `y[t, o] = x[t] · scratch[o − rows.lowerBound] (+ bias[o])` for the weight rows `rows`, already
    /// widened to f32 in `scratch` (one row of `inFeatures` each): four tokens per pass with `dot4`,
    /// then one at a time. The prefill half of the bf16 and FP8 kernels.
    @inline(__always)
    static func widenedRowProducts(
        _ x: UnsafePointer<Float>, _ scratch: UnsafePointer<Float>, rows: Range<Int>, tokens: Int, inFeatures: Int,
        outFeatures: Int, bias: [Float]?, y: UnsafeMutablePointer<Float>
    ) {
        var t = 0
        while t + 4 <= tokens {
            for o in rows {
                let sums = dot4(
                    x + t * inFeatures, inFeatures, scratch + (o - rows.lowerBound) * inFeatures, inFeatures)
                for r in 0..<4 { y[(t + r) * outFeatures + o] = sums[r] + (bias?[o] ?? 0) }
            }
            t += 4
        }
        while t < tokens {
            for o in rows {
                y[t * outFeatures + o] =
                    dot(x + t * inFeatures, scratch + (o - rows.lowerBound) * inFeatures, inFeatures) + (bias?[o] ?? 0)
            }
            t += 1
        }
    }

    /// `Σ_j even[j]·w[2j] + odd[j]·w[2j+1]` over `pairs` bf16 pairs: two values per 32-bit word,
    /// widened by a shift and a mask (no per-lane conversion calls).
    @inline(__always)
    static func dotBF16(
        _ even: UnsafePointer<Float>, _ odd: UnsafePointer<Float>, _ w: UnsafePointer<UInt16>, pairs: Int
    ) -> Float {
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), b0 = SIMD8<Float>(), b1 = SIMD8<Float>()
        let raw = UnsafeRawPointer(w), re = UnsafeRawPointer(even), ro = UnsafeRawPointer(odd)
        let low = SIMD8<UInt32>(repeating: 0xFFFF_0000)
        var j = 0
        while j + 16 <= pairs {
            let w0 = raw.loadUnaligned(fromByteOffset: 4 * j, as: SIMD8<UInt32>.self)
            let w1 = raw.loadUnaligned(fromByteOffset: 4 * (j + 8), as: SIMD8<UInt32>.self)
            a0.addProduct(
                unsafeBitCast(w0 &<< 16, to: SIMD8<Float>.self),
                re.loadUnaligned(fromByteOffset: 4 * j, as: SIMD8<Float>.self))
            b0.addProduct(
                unsafeBitCast(w0 & low, to: SIMD8<Float>.self),
                ro.loadUnaligned(fromByteOffset: 4 * j, as: SIMD8<Float>.self))
            a1.addProduct(
                unsafeBitCast(w1 &<< 16, to: SIMD8<Float>.self),
                re.loadUnaligned(fromByteOffset: 4 * (j + 8), as: SIMD8<Float>.self))
            b1.addProduct(
                unsafeBitCast(w1 & low, to: SIMD8<Float>.self),
                ro.loadUnaligned(fromByteOffset: 4 * (j + 8), as: SIMD8<Float>.self))
            j += 16
        }
        var sum = ((a0 + a1) + (b0 + b1)).sum()
        while j < pairs {
            sum += even[j] * widen(w[2 * j]) + odd[j] * widen(w[2 * j + 1])
            j += 1
        }
        return sum
    }

    /// A bf16 value as f32 (exact: bf16 is f32's upper half).
    @inline(__always)
    static func widen(_ bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

    @inline(__always)
    static func widenBF16(_ source: UnsafePointer<UInt16>, into destination: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { destination[i] = widen(source[i]) }
    }

    struct BuffersBF16: @unchecked Sendable {
        let xSplit: UnsafePointer<Float>
        let x: UnsafePointer<Float>
        let w: UnsafePointer<UInt16>
        let y: UnsafeMutablePointer<Float>
    }
}
