import Foundation

/// The dense float kernels every path reuses: SIMD and multi-threaded, each beside the plain
/// scalar loop it is tested against (`referenceLinear`, `Attention.reference`).
public enum Kernels {
    /// Route `linear` (and attention) through the scalar references: benchmarks measure the
    /// baseline with it. A task-local, set for a scope with `Kernels.$useReferenceKernels.withValue`.
    @TaskLocal public static var useReferenceKernels = false

    /// `y[t, o] = Σ_i x[t, i] · w[o, i]` (+ bias[o]): a linear layer over `tokens` rows, with `w`
    /// in PyTorch's `[out, in]` layout. By far the most time is spent here. SIMD dot products
    /// with four accumulators; output rows split across cores when the work is large enough.
    public static func linear(
        _ x: [Float], tokens: Int, weight w: [Float], outFeatures: Int, inFeatures: Int,
        bias: [Float]? = nil
    ) -> [Float] {
        precondition(x.count == tokens * inFeatures && w.count == outFeatures * inFeatures)
        if useReferenceKernels {
            return referenceLinear(
                x, tokens: tokens, weight: w, outFeatures: outFeatures, inFeatures: inFeatures, bias: bias)
        }
        var y = [Float](repeating: 0, count: tokens * outFeatures)
        x.withUnsafeBufferPointer { x in
            w.withUnsafeBufferPointer { w in
                y.withUnsafeMutableBufferPointer { y in
                    let buffers = Buffers(x: x.baseAddress!, w: w.baseAddress!, y: y.baseAddress!)
                    // Rows of W in chunks: each chunk streams its weights once for all tokens.
                    let chunk = 16
                    let chunks = (outFeatures + chunk - 1) / chunk
                    let work = tokens * outFeatures * inFeatures
                    let body: @Sendable (Int) -> Void = { c in
                        let first = c * chunk, last = min(first + chunk, outFeatures)
                        var t = 0
                        // Four tokens per pass: each weight vector is loaded once for four rows of x.
                        while t + 4 <= tokens {
                            let x0 = buffers.x + t * inFeatures
                            for o in first..<last {
                                let sums = dot4(x0, inFeatures, buffers.w + o * inFeatures, inFeatures)
                                let b = bias?[o] ?? 0
                                for r in 0..<4 { buffers.y[(t + r) * outFeatures + o] = sums[r] + b }
                            }
                            t += 4
                        }
                        while t < tokens {
                            let row = buffers.x + t * inFeatures
                            for o in first..<last {
                                buffers.y[t * outFeatures + o] =
                                    dot(row, buffers.w + o * inFeatures, inFeatures) + (bias?[o] ?? 0)
                            }
                            t += 1
                        }
                    }
                    Parallel.perform(iterations: chunks, work: work, body)
                }
            }
        }
        return y
    }

    /// `x · Wᵀ (+ bias)` for a weight matrix in f32 or bf16.
    public static func linear(_ x: [Float], tokens: Int, matrix: Matrix, bias: [Float]? = nil) -> [Float] {
        if let y = gemmLinear(x, tokens: tokens, matrix: matrix, bias: bias) { return y }
        switch matrix.storage {
        case let .f32(w):
            return linear(
                x, tokens: tokens, weight: w, outFeatures: matrix.rows, inFeatures: matrix.columns, bias: bias)
        case let .bf16(w):
            if useReferenceKernels || matrix.columns % 2 != 0 {
                return referenceLinear(
                    x, tokens: tokens, weight: matrix.floats, outFeatures: matrix.rows, inFeatures: matrix.columns,
                    bias: bias)
            }
            return linearBF16(
                x, tokens: tokens, weight: w, outFeatures: matrix.rows, inFeatures: matrix.columns, bias: bias)
        case let .fp8(weights):
            if useReferenceKernels {
                return referenceLinear(
                    x, tokens: tokens, weight: matrix.floats, outFeatures: matrix.rows, inFeatures: matrix.columns,
                    bias: bias)
            }
            return linearFP8(
                x, tokens: tokens, weights: weights, outFeatures: matrix.rows, inFeatures: matrix.columns, bias: bias)
        case let .packed(weights):
            if useReferenceKernels { return referenceLinear(x, tokens: tokens, packed: weights.linear, bias: bias) }
            if let contiguous = weights.contiguous {
                return linear(
                    x, tokens: tokens, packed: contiguous.linear, bias: bias, inputOrder: contiguous.inputOrder)
            }
            return linear(x, tokens: tokens, packed: weights.linear, bias: bias, naturalOrder: weights.naturalOrder)
        }
    }

    /// Raw buffers handed to worker threads; each thread writes disjoint rows of `y`.
    struct Buffers: @unchecked Sendable {
        let x: UnsafePointer<Float>
        let w: UnsafePointer<Float>
        let y: UnsafeMutablePointer<Float>
    }

    /// `y[i] += scale · x[i]`.
    @inlinable @inline(__always)
    public static func addScaled(
        _ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ scale: Float, _ count: Int
    ) {
        let splat = SIMD8<Float>(repeating: scale)
        let rawX = UnsafeRawPointer(x), rawY = UnsafeMutableRawPointer(y)
        var i = 0
        while i + 8 <= count {
            let updated = rawY.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
                .addingProduct(splat, rawX.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self))
            rawY.storeBytes(of: updated, toByteOffset: 4 * i, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            y[i] = y[i].addingProduct(scale, x[i])
            i += 1
        }
    }

    /// `Σ a[i]·b[i]` with four SIMD8 accumulators (FMA where the target CPU has it): `dotLanes`, its
    /// lanes summed in order, then the last `count % 8` products one by one.
    @inlinable @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int) -> Float {
        var sum = dotLanes(a, b, count).sum()
        var i = count - count % 8
        while i < count {
            sum += a[i] * b[i]
            i += 1
        }
        return sum
    }

    /// The eight lanes `dot` sums: its four accumulators over the first `count − count % 8` products
    /// (accumulator `k mod 4` takes the k-th eight), added as `(s0 + s1) + (s2 + s3)`. Decode attention
    /// sums four heads' lanes at once from it (`Attention.dots4`), bit for bit as `dot`.
    @inlinable @inline(__always)
    public static func dotLanes(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int) -> SIMD8<Float> {
        var s0 = SIMD8<Float>(), s1 = SIMD8<Float>(), s2 = SIMD8<Float>(), s3 = SIMD8<Float>()
        var i = 0
        let rawA = UnsafeRawPointer(a), rawB = UnsafeRawPointer(b)
        while i + 32 <= count {
            s0.addProduct(
                rawA.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self),
                rawB.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self))
            s1.addProduct(
                rawA.loadUnaligned(fromByteOffset: 4 * (i + 8), as: SIMD8<Float>.self),
                rawB.loadUnaligned(fromByteOffset: 4 * (i + 8), as: SIMD8<Float>.self))
            s2.addProduct(
                rawA.loadUnaligned(fromByteOffset: 4 * (i + 16), as: SIMD8<Float>.self),
                rawB.loadUnaligned(fromByteOffset: 4 * (i + 16), as: SIMD8<Float>.self))
            s3.addProduct(
                rawA.loadUnaligned(fromByteOffset: 4 * (i + 24), as: SIMD8<Float>.self),
                rawB.loadUnaligned(fromByteOffset: 4 * (i + 24), as: SIMD8<Float>.self))
            i += 32
        }
        while i + 8 <= count {
            s0.addProduct(
                rawA.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self),
                rawB.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self))
            i += 8
        }
        return (s0 + s1) + (s2 + s3)
    }

    /// Dot products of one weight row with four consecutive rows of x (`stride` apart).
    @inline(__always)
    static func dot4(_ x: UnsafePointer<Float>, _ stride: Int, _ w: UnsafePointer<Float>, _ count: Int) -> SIMD4<Float>
    {
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
        var b0 = SIMD8<Float>(), b1 = SIMD8<Float>(), b2 = SIMD8<Float>(), b3 = SIMD8<Float>()
        let rw = UnsafeRawPointer(w)
        let r0 = UnsafeRawPointer(x), r1 = UnsafeRawPointer(x + stride), r2 = UnsafeRawPointer(x + 2 * stride),
            r3 = UnsafeRawPointer(x + 3 * stride)
        var i = 0
        while i + 16 <= count {
            let w0 = rw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            let w1 = rw.loadUnaligned(fromByteOffset: 4 * (i + 8), as: SIMD8<Float>.self)
            a0.addProduct(w0, r0.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self))
            a1.addProduct(w0, r1.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self))
            a2.addProduct(w0, r2.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self))
            a3.addProduct(w0, r3.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self))
            b0.addProduct(w1, r0.loadUnaligned(fromByteOffset: 4 * (i + 8), as: SIMD8<Float>.self))
            b1.addProduct(w1, r1.loadUnaligned(fromByteOffset: 4 * (i + 8), as: SIMD8<Float>.self))
            b2.addProduct(w1, r2.loadUnaligned(fromByteOffset: 4 * (i + 8), as: SIMD8<Float>.self))
            b3.addProduct(w1, r3.loadUnaligned(fromByteOffset: 4 * (i + 8), as: SIMD8<Float>.self))
            i += 16
        }
        var result = SIMD4<Float>((a0 + b0).sum(), (a1 + b1).sum(), (a2 + b2).sum(), (a3 + b3).sum())
        while i < count {
            let weight = w[i]
            result[0] += x[i] * weight
            result[1] += x[stride + i] * weight
            result[2] += x[2 * stride + i] * weight
            result[3] += x[3 * stride + i] * weight
            i += 1
        }
        return result
    }

    /// The plain scalar linear layer: the reference the fast one is tested against.
    public static func referenceLinear(
        _ x: [Float], tokens: Int, weight w: [Float], outFeatures: Int, inFeatures: Int,
        bias: [Float]? = nil
    ) -> [Float] {
        var y = [Float](repeating: 0, count: tokens * outFeatures)
        for t in 0..<tokens {
            for o in 0..<outFeatures {
                var sum: Float = 0
                for i in 0..<inFeatures { sum += x[t * inFeatures + i] * w[o * inFeatures + i] }
                y[t * outFeatures + o] = sum + (bias?[o] ?? 0)
            }
        }
        return y
    }

    /// RMSNorm over consecutive groups of `width` values: `x / sqrt(mean(x²) + eps) · weight`.
    public static func rmsNorm(_ x: [Float], width: Int, weight: [Float], eps: Float) -> [Float] {
        precondition(x.count % width == 0 && weight.count == width)
        var y = x
        for start in stride(from: 0, to: x.count, by: width) {
            var sum: Float = 0
            for i in 0..<width { sum += x[start + i] * x[start + i] }
            let scale = 1 / (sum / Float(width) + eps).squareRoot()
            for i in 0..<width { y[start + i] = x[start + i] * scale * weight[i] }
        }
        return y
    }

    /// A SwiGLU expert, `down(silu(gate(x)) ⊙ up(x))`, for `tokens` rows of `x`; `activations`
    /// sees the intermediate `silu(gate(x)) ⊙ up(x)` (what the down projection's Hessian is built from).
    public static func swiglu(
        _ x: [Float], tokens: Int, gate: Matrix, up: Matrix, down: Matrix,
        activations: ([Float]) -> Void = { _ in }
    ) -> [Float] {
        let expert = swiglus(x, tokens: tokens, experts: [(gate, up, down)])[0]
        activations(expert.activations)
        return expert.output
    }

    /// `swiglu` of several experts over the same rows of `x` (a decode step's selected experts): their
    /// gates and ups go through one `linears` call, their downs through another, so that a decode
    /// step shares its parallel regions (each result as `swiglu` alone gives it, bit for bit).
    public static func swiglus(_ x: [Float], tokens: Int, experts: [(gate: Matrix, up: Matrix, down: Matrix)]) -> [(
        activations: [Float], output: [Float]
    )] {
        let gatesAndUps = linears(x, tokens: tokens, matrices: experts.flatMap { [$0.gate, $0.up] })
        let activations = experts.indices.map { e in
            gatedSiLU(gatesAndUps[2 * e], gatesAndUps[2 * e + 1])
        }
        let outputs = linears(activations, tokens: tokens, matrices: experts.map(\.down))
        return Array(zip(activations, outputs))
    }

    /// `silu(g) ⊙ u`.
    static func gatedSiLU(_ g: [Float], _ u: [Float]) -> [Float] {
        if useReferenceKernels { return g.indices.map { silu(g[$0]) * u[$0] } }
        return [Float](unsafeUninitializedCapacity: g.count) { buffer, count in
            g.withUnsafeBufferPointer { g in
                u.withUnsafeBufferPointer { u in
                    gatedSiLU(g.baseAddress!, u.baseAddress!, into: buffer.baseAddress!, count: g.count)
                }
            }
            count = g.count
        }
    }

    /// Softmax in place over `values`.
    public static func softmax(_ values: inout [Float]) {
        let peak = values.max() ?? 0
        var sum: Float = 0
        for i in values.indices {
            values[i] = (values[i] - peak).exponential
            sum += values[i]
        }
        for i in values.indices { values[i] /= sum }
    }

    /// `h[i] = silu(g[i]) · u[i]`, eight lanes at a time with the SIMD `exp` (relative error about
    /// 1e-7 against the scalar `silu`, whose libm `exp` through Double took a tenth of a prefill).
    public static func gatedSiLU(
        _ g: UnsafePointer<Float>, _ u: UnsafePointer<Float>, into h: UnsafeMutablePointer<Float>, count: Int
    ) {
        var i = 0
        while i + 8 <= count {
            let x = load8(g + i)
            let value = x / (1 + exp(-x)) * load8(u + i)
            UnsafeMutableRawPointer(h + i).storeBytes(of: value, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            h[i] = g[i] / (1 + exp(-g[i])) * u[i]
            i += 1
        }
    }

    @inlinable @inline(__always) public static func silu(_ x: Float) -> Float { x / (1 + (-x).exponential) }
    @inlinable @inline(__always) public static func sigmoid(_ x: Float) -> Float { 1 / (1 + (-x).exponential) }
}

extension Float {
    @inlinable @inline(__always) public var exponential: Float { Float(Foundation.exp(Double(self))) }
}
