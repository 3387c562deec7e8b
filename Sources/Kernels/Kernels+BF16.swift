import CPrefetch
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
    /// wide, even): four rows at a time, so that each load of x serves four weight rows. `wide`: the
    /// AVX-512 kernel (`BF16Dot512`, 32 weights a vector), else AVX2 (16). The two sum in different
    /// orders; both are tested against the scalar reference.
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
        var o = rows.lowerBound
        while o + 4 <= rows.upperBound {
            let sums = dotBF16x4(even, odd, w + o * inFeatures, stride: inFeatures, pairs: pairs)
            for r in 0..<4 { y[o + r] = sums[r] }
            o += 4
        }
        while o < rows.upperBound {
            y[o] = dotBF16(even, odd, w + o * inFeatures, pairs: pairs)
            o += 1
        }
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

    /// `dotBF16` of four weight rows (`stride` apart) with the same x: each load of x serves four rows.
    @inline(__always)
    static func dotBF16x4(
        _ even: UnsafePointer<Float>, _ odd: UnsafePointer<Float>, _ w: UnsafePointer<UInt16>, stride: Int,
        pairs: Int
    ) -> SIMD4<Float> {
        var e0 = SIMD8<Float>(), e1 = SIMD8<Float>(), e2 = SIMD8<Float>(), e3 = SIMD8<Float>()
        var o0 = SIMD8<Float>(), o1 = SIMD8<Float>(), o2 = SIMD8<Float>(), o3 = SIMD8<Float>()
        let re = UnsafeRawPointer(even), ro = UnsafeRawPointer(odd)
        let r0 = UnsafeRawPointer(w), r1 = UnsafeRawPointer(w + stride)
        let r2 = UnsafeRawPointer(w + 2 * stride), r3 = UnsafeRawPointer(w + 3 * stride)
        let low = SIMD8<UInt32>(repeating: 0xFFFF_0000)
        @inline(__always) func high(_ v: SIMD8<UInt32>) -> SIMD8<Float> {
            unsafeBitCast(v &<< 16, to: SIMD8<Float>.self)
        }
        @inline(__always) func masked(_ v: SIMD8<UInt32>) -> SIMD8<Float> {
            unsafeBitCast(v & low, to: SIMD8<Float>.self)
        }
        var j = 0
        while j + 8 <= pairs {
            if j & 8 == 0 {
                // Each row's line 2 KiB ahead, once per 64 bytes (as `BF16Dot512`): the bf16 model's
                // decode 30.1 → 31.9 and 29.6 → 29.7 tokens/s in two sets of three alternations on the
                // Zen 3 (docs/KERNELS.md).
                let ahead = 4 &* j &+ 2048
                pmq_prefetch(r0 + ahead)
                pmq_prefetch(r1 + ahead)
                pmq_prefetch(r2 + ahead)
                pmq_prefetch(r3 + ahead)
            }
            let xe = re.loadUnaligned(fromByteOffset: 4 * j, as: SIMD8<Float>.self)
            let xo = ro.loadUnaligned(fromByteOffset: 4 * j, as: SIMD8<Float>.self)
            let w0 = r0.loadUnaligned(fromByteOffset: 4 * j, as: SIMD8<UInt32>.self)
            let w1 = r1.loadUnaligned(fromByteOffset: 4 * j, as: SIMD8<UInt32>.self)
            let w2 = r2.loadUnaligned(fromByteOffset: 4 * j, as: SIMD8<UInt32>.self)
            let w3 = r3.loadUnaligned(fromByteOffset: 4 * j, as: SIMD8<UInt32>.self)
            e0.addProduct(high(w0), xe)
            o0.addProduct(masked(w0), xo)
            e1.addProduct(high(w1), xe)
            o1.addProduct(masked(w1), xo)
            e2.addProduct(high(w2), xe)
            o2.addProduct(masked(w2), xo)
            e3.addProduct(high(w3), xe)
            o3.addProduct(masked(w3), xo)
            j += 8
        }
        var sums = SIMD4<Float>((e0 + o0).sum(), (e1 + o1).sum(), (e2 + o2).sum(), (e3 + o3).sum())
        while j < pairs {
            for r in 0..<4 {
                let row = w + r * stride
                sums[r] += even[j] * widen(row[2 * j]) + odd[j] * widen(row[2 * j + 1])
            }
            j += 1
        }
        return sums
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
