import Foundation

/// GPTQ (Frantar et al. 2022), as in IST-DASLab/gptq `fasterquant`: dead columns zeroed, damping
/// (`dampening` × mean diagonal), upper Cholesky factor of H⁻¹, column-by-column quantization with
/// error feedback, lazy updates of the columns after each block. Group parameters come from the
/// weights as they stand when the group's first column is reached. The Hessian is not changed:
/// one expert can be quantized at several widths from the same H.
///
/// This is the plain reference implementation (Double accumulation, no SIMD).
public struct GPTQ: Sendable {
    public struct Options: Sendable {
        public var groupSize: Int
        public var blockSize: Int
        public var dampening: Double
        /// Quantize columns in order of decreasing Hessian diagonal (GPTQ's `act_order`/`desc_act`);
        /// groups are then formed in that order and `groupIndex` maps columns to groups.
        public var actOrder: Bool
        /// Per-group clipping search (see `GroupQuantizer.clipSearch`).
        public var clipSearch: Bool
        public init(groupSize: Int = 128, blockSize: Int = 128, dampening: Double = 0.01, actOrder: Bool = false,
                    clipSearch: Bool = false) {
            self.actOrder = actOrder
            self.clipSearch = clipSearch
            self.groupSize = groupSize
            self.blockSize = blockSize
            self.dampening = dampening
        }
    }

    public struct Result: Sendable {
        /// Integer codes `[rows, columns]`, row-major.
        public var codes: [Int]
        /// Per row and group: `[rows, groups]`.
        public var scales: [Float]
        public var zeros: [Float]
        /// Dequantized weights `[rows, columns]`.
        public var dequantized: [Float]
        /// `tr((W − Q) H (W − Q)ᵀ)` with the undamped H.
        public var error: Double
        /// Group of each input column (`g_idx`): `column / groupSize` unless act-order permuted them.
        public var groupIndex: [Int]
    }

    public enum Failure: Error, Equatable {
        /// H + damping is not positive definite.
        case notPositiveDefinite
    }

    public var options: Options

    public init(options: Options = .init()) { self.options = options }

    /// Quantizes `weight` (`[rows, columns]`, PyTorch `[out, in]`) with Hessian `hessian`
    /// (`[columns, columns]`, `Σ xᵀx` over the inputs) at `bits`.
    public func quantize(weight: [Float], rows: Int, columns: Int, hessian: [Double], bits: Int) throws -> Result {
        precondition(weight.count == rows * columns && hessian.count == columns * columns)
        let groupSize = options.groupSize > 0 ? options.groupSize : columns
        guard options.actOrder else {
            return try quantizeInOrder(weight: weight, rows: rows, columns: columns, hessian: hessian, bits: bits)
        }
        // Descending diagonal (dead columns count as 1, as after GPTQ's fix-up), stable on ties.
        let diagonal = (0..<columns).map { hessian[$0 * columns + $0] == 0 ? 1 : hessian[$0 * columns + $0] }
        let order = (0..<columns).sorted { diagonal[$0] != diagonal[$1] ? diagonal[$0] > diagonal[$1] : $0 < $1 }
        var permutedWeight = [Float](repeating: 0, count: weight.count)
        var permutedHessian = [Double](repeating: 0, count: hessian.count)
        for r in 0..<rows { for (j, source) in order.enumerated() { permutedWeight[r * columns + j] = weight[r * columns + source] } }
        for (i, a) in order.enumerated() { for (j, b) in order.enumerated() { permutedHessian[i * columns + j] = hessian[a * columns + b] } }
        let permuted = try quantizeInOrder(weight: permutedWeight, rows: rows, columns: columns, hessian: permutedHessian, bits: bits)
        var result = permuted
        for r in 0..<rows {
            for (j, column) in order.enumerated() {
                result.codes[r * columns + column] = permuted.codes[r * columns + j]
                result.dequantized[r * columns + column] = permuted.dequantized[r * columns + j]
            }
        }
        for (j, column) in order.enumerated() { result.groupIndex[column] = j / groupSize }
        result.error = Self.outputError(weight, result.dequantized, rows: rows, columns: columns, hessian: hessian)
        return result
    }

    /// GPTQ over the columns in their given order.
    func quantizeInOrder(weight: [Float], rows: Int, columns: Int, hessian: [Double], bits: Int) throws -> Result {
        let quantizer = GroupQuantizer(bits: bits, clipSearch: options.clipSearch)
        let groupSize = options.groupSize > 0 ? options.groupSize : columns
        let groups = (columns + groupSize - 1) / groupSize
        var w = weight.map(Double.init)
        var h = hessian
        // Dead inputs (never seen): weight irrelevant, make H invertible.
        for j in 0..<columns where h[j * columns + j] == 0 {
            h[j * columns + j] = 1
            for r in 0..<rows { w[r * columns + j] = 0 }
        }
        var meanDiagonal = 0.0
        for j in 0..<columns { meanDiagonal += h[j * columns + j] }
        meanDiagonal /= Double(columns)
        for j in 0..<columns { h[j * columns + j] += options.dampening * meanDiagonal }
        let hinv = try Self.upperCholeskyOfInverse(h, n: columns)

        var codes = [Int](repeating: 0, count: rows * columns)
        var scales = [Float](repeating: 0, count: rows * groups)
        var zeros = [Float](repeating: 0, count: rows * groups)
        var dequantized = [Float](repeating: 0, count: rows * columns)
        var parameters = [GroupQuantizer.Parameters](repeating: .init(scale: 1, zero: 0), count: rows)
        var errors = [Double](repeating: 0, count: rows * options.blockSize)
        var snapshot = [Double](repeating: 0, count: rows * options.blockSize)
        let blockSize = options.blockSize

        // Rows are independent in GPTQ (they share only H⁻¹), so each block's work is split
        // across cores by rows; every element sees the same operations in the same order as
        // the one-thread loop, so results do not depend on the thread count.
        w.withUnsafeMutableBufferPointer { w in
        codes.withUnsafeMutableBufferPointer { codes in
        scales.withUnsafeMutableBufferPointer { scales in
        zeros.withUnsafeMutableBufferPointer { zeros in
        dequantized.withUnsafeMutableBufferPointer { dequantized in
        parameters.withUnsafeMutableBufferPointer { parameters in
        errors.withUnsafeMutableBufferPointer { errors in
        snapshot.withUnsafeMutableBufferPointer { snapshot in
        hinv.withUnsafeBufferPointer { hinv in
            let state = RowState(w: w.baseAddress!, hinv: hinv.baseAddress!, codes: codes.baseAddress!, scales: scales.baseAddress!,
                                 zeros: zeros.baseAddress!, dequantized: dequantized.baseAddress!, parameters: parameters.baseAddress!,
                                 errors: errors.baseAddress!, snapshot: snapshot.baseAddress!)
            let chunk = max(1, (rows + 15) / 16)
            let chunks = (rows + chunk - 1) / chunk
            var blockStart = 0
            while blockStart < columns {
                let block = blockStart..<min(blockStart + blockSize, columns)
                let body: @Sendable (Int) -> Void = { c in
                    Self.quantizeBlock(state, rows: (c * chunk)..<min(rows, (c + 1) * chunk), columns: columns,
                                       block: block, blockSize: blockSize, groupSize: groupSize,
                                       groups: groups, quantizer: quantizer)
                }
                if rows * columns * block.count >= 1 << 20 {
                    DispatchQueue.concurrentPerform(iterations: chunks, execute: body)
                } else {
                    for c in 0..<chunks { body(c) }
                }
                blockStart = block.upperBound
            }
        } } } } } } } } }
        let error = Self.outputError(weight, dequantized, rows: rows, columns: columns, hessian: hessian)
        return Result(codes: codes, scales: scales, zeros: zeros, dequantized: dequantized, error: error,
                      groupIndex: (0..<columns).map { $0 / groupSize })
    }

    /// Shared buffers of one GPTQ run; threads touch disjoint rows.
    struct RowState: @unchecked Sendable {
        let w: UnsafeMutablePointer<Double>
        let hinv: UnsafePointer<Double>
        let codes: UnsafeMutablePointer<Int>
        let scales: UnsafeMutablePointer<Float>
        let zeros: UnsafeMutablePointer<Float>
        let dequantized: UnsafeMutablePointer<Float>
        let parameters: UnsafeMutablePointer<GroupQuantizer.Parameters>
        let errors: UnsafeMutablePointer<Double>
        let snapshot: UnsafeMutablePointer<Double>
    }

    /// One block of columns for a range of rows: group parameters, quantization with error
    /// feedback inside the block, then the lazy update of every later column of those rows.
    static func quantizeBlock(_ s: RowState, rows: Range<Int>, columns: Int, block: Range<Int>, blockSize: Int,
                              groupSize: Int, groups: Int, quantizer: GroupQuantizer) {
        let blockStart = block.lowerBound, blockEnd = block.upperBound
        var group = [Float](repeating: 0, count: groupSize)
        for r in rows {
            let row = s.w + r * columns
            // The reference takes group parameters from W as it stood at the block's start
            // (earlier blocks' lazy updates applied, this block's error feedback not).
            for c in block { s.snapshot[r * blockSize + (c - blockStart)] = row[c] }
            for j in block {
                if j % groupSize == 0 {
                    let end = min(j + groupSize, columns)
                    for c in j..<end { group[c - j] = Float(c < blockEnd ? s.snapshot[r * blockSize + (c - blockStart)] : row[c]) }
                    s.parameters[r] = group.withUnsafeBufferPointer { quantizer.parameters(UnsafeBufferPointer(rebasing: $0[0..<(end - j)])) }
                    s.scales[r * groups + j / groupSize] = s.parameters[r].scale
                    s.zeros[r * groups + j / groupSize] = s.parameters[r].zero
                }
                let value = row[j]
                let code = quantizer.code(Float(value), s.parameters[r])
                let q = Double(quantizer.dequantize(code, s.parameters[r]))
                s.codes[r * columns + j] = code
                s.dequantized[r * columns + j] = Float(q)
                let err = (value - q) / s.hinv[j * columns + j]
                s.errors[r * blockSize + (j - blockStart)] = err
                // Error feedback inside the block.
                if j + 1 < blockEnd { subtractScaled(row + j + 1, s.hinv + j * columns + j + 1, err, blockEnd - j - 1) }
            }
            // Lazy update of every later column: W[r, end:] -= Err[r, block] · Hinv[block, end:].
            if blockEnd < columns {
                for k in block {
                    let err = s.errors[r * blockSize + (k - blockStart)]
                    if err == 0 { continue }
                    subtractScaled(row + blockEnd, s.hinv + k * columns + blockEnd, err, columns - blockEnd)
                }
            }
        }
    }

    /// Round-to-nearest with the same grid (GPTQ without error feedback).
    public func roundToNearest(weight: [Float], rows: Int, columns: Int, hessian: [Double]?, bits: Int) -> Result {
        let quantizer = GroupQuantizer(bits: bits, clipSearch: options.clipSearch)
        let groupSize = options.groupSize > 0 ? options.groupSize : columns
        let groups = (columns + groupSize - 1) / groupSize
        var codes = [Int](repeating: 0, count: rows * columns)
        var scales = [Float](repeating: 0, count: rows * groups), zeros = scales
        var dequantized = [Float](repeating: 0, count: rows * columns)
        weight.withUnsafeBufferPointer { w in
            for r in 0..<rows {
                for g in 0..<groups {
                    let start = g * groupSize, end = min(start + groupSize, columns)
                    let p = quantizer.parameters(UnsafeBufferPointer(rebasing: w[(r * columns + start)..<(r * columns + end)]))
                    scales[r * groups + g] = p.scale
                    zeros[r * groups + g] = p.zero
                    for c in start..<end {
                        let code = quantizer.code(w[r * columns + c], p)
                        codes[r * columns + c] = code
                        dequantized[r * columns + c] = quantizer.dequantize(code, p)
                    }
                }
            }
        }
        let error = hessian.map { Self.outputError(weight, dequantized, rows: rows, columns: columns, hessian: $0) } ?? 0
        return Result(codes: codes, scales: scales, zeros: zeros, dequantized: dequantized, error: error,
                      groupIndex: (0..<columns).map { $0 / groupSize })
    }

    /// `tr((W − Q) H (W − Q)ᵀ) = Σ_r e_r H e_rᵀ`.
    public static func outputError(_ weight: [Float], _ quantized: [Float], rows: Int, columns: Int, hessian: [Double]) -> Double {
        var total = 0.0
        var e = [Double](repeating: 0, count: columns)
        hessian.withUnsafeBufferPointer { h in
            for r in 0..<rows {
                for c in 0..<columns { e[c] = Double(weight[r * columns + c]) - Double(quantized[r * columns + c]) }
                e.withUnsafeBufferPointer { e in
                    for i in 0..<columns where e[i] != 0 {
                        total += e[i] * dot(h.baseAddress! + i * columns, e.baseAddress!, columns)
                    }
                }
            }
        }
        return total
    }

    /// `y[i] -= scale · x[i]`, rounded exactly as the scalar loop (multiply, then subtract).
    @inline(__always)
    static func subtractScaled(_ y: UnsafeMutablePointer<Double>, _ x: UnsafePointer<Double>, _ scale: Double, _ count: Int) {
        let splat = SIMD4<Double>(repeating: scale)
        var i = 0
        while i + 4 <= count {
            let current = UnsafeRawPointer(y + i).loadUnaligned(as: SIMD4<Double>.self)
            let update = current - splat * UnsafeRawPointer(x + i).loadUnaligned(as: SIMD4<Double>.self)
            UnsafeMutableRawPointer(y + i).storeBytes(of: update, as: SIMD4<Double>.self)
            i += 4
        }
        while i < count {
            y[i] -= scale * x[i]
            i += 1
        }
    }

    @inline(__always)
    static func dot(_ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ count: Int) -> Double {
        var s0 = SIMD4<Double>(), s1 = SIMD4<Double>()
        var i = 0
        while i + 8 <= count {
            s0.addProduct(UnsafeRawPointer(a + i).loadUnaligned(as: SIMD4<Double>.self), UnsafeRawPointer(b + i).loadUnaligned(as: SIMD4<Double>.self))
            s1.addProduct(UnsafeRawPointer(a + i + 4).loadUnaligned(as: SIMD4<Double>.self), UnsafeRawPointer(b + i + 4).loadUnaligned(as: SIMD4<Double>.self))
            i += 8
        }
        var sum = (s0 + s1).sum()
        while i < count {
            sum += a[i] * b[i]
            i += 1
        }
        return sum
    }

    /// The upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), as torch's
    /// `cholesky(cholesky_inverse(cholesky(H)), upper=True)`, in two triangular passes instead of
    /// four: factor the index-reversed matrix, `PHP = L Lᵀ`, so `H = V Vᵀ` with `V = PLP` upper;
    /// then `H⁻¹ = V⁻ᵀ V⁻¹` and `U = V⁻¹ = P L⁻¹ P` (the factor is unique). Inner loops are SIMD
    /// dot products over contiguous rows.
    static func upperCholeskyOfInverse(_ h: [Double], n: Int) throws -> [Double] {
        // L: lower Cholesky factor of the reversed H.
        var l = [Double](repeating: 0, count: n * n)
        try l.withUnsafeMutableBufferPointer { l in
            let base = l.baseAddress!
            for i in 0..<n {
                let rowI = base + i * n
                for j in 0...i {
                    let value = h[(n - 1 - i) * n + (n - 1 - j)] - dot(rowI, base + j * n, j)
                    if i == j {
                        guard value > 0 else { throw Failure.notPositiveDefinite }
                        rowI[i] = value.squareRoot()
                    } else {
                        rowI[j] = value / base[j * n + j]
                    }
                }
            }
        }
        // Xᵀ, where X = L⁻¹: row j of Xᵀ is column j of X, from L x_j = e_j by forward substitution.
        var xt = [Double](repeating: 0, count: n * n)
        l.withUnsafeBufferPointer { l in
            xt.withUnsafeMutableBufferPointer { xt in
                let lBase = l.baseAddress!, xBase = xt.baseAddress!
                for j in 0..<n {
                    let column = xBase + j * n
                    column[j] = 1 / lBase[j * n + j]
                    if j + 1 < n {
                        for i in (j + 1)..<n {
                            column[i] = -dot(lBase + i * n + j, column + j, i - j) / lBase[i * n + i]
                        }
                    }
                }
            }
        }
        // U[a][b] = X[n−1−a][n−1−b] = Xᵀ[n−1−b][n−1−a].
        var u = [Double](repeating: 0, count: n * n)
        for a in 0..<n { for b in a..<n { u[a * n + b] = xt[(n - 1 - b) * n + (n - 1 - a)] } }
        return u
    }

    /// The four-pass version (Cholesky, triangular inverse, product, Cholesky), kept as the
    /// reference the fast one is tested against.
    static func referenceUpperCholeskyOfInverse(_ h: [Double], n: Int) throws -> [Double] {
        // H = L Lᵀ.
        let l = try referenceCholeskyLower(h, n: n)
        // L⁻¹ (lower triangular).
        var li = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            li[i * n + i] = 1 / l[i * n + i]
            for j in 0..<i {
                var sum = 0.0
                for k in j..<i { sum -= l[i * n + k] * li[k * n + j] }
                li[i * n + j] = sum / l[i * n + i]
            }
        }
        // H⁻¹ = L⁻ᵀ L⁻¹.
        var inverse = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in 0...i {
                var sum = 0.0
                for k in i..<n { sum += li[k * n + i] * li[k * n + j] }
                inverse[i * n + j] = sum
                inverse[j * n + i] = sum
            }
        }
        // H⁻¹ = Uᵀ U with U upper: U = (chol(H⁻¹) lower)ᵀ.
        let c = try referenceCholeskyLower(inverse, n: n)
        var u = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in i..<n { u[i * n + j] = c[j * n + i] } }
        return u
    }

    /// Plain lower Cholesky factor `A = L Lᵀ` (reference path).
    static func referenceCholeskyLower(_ a: [Double], n: Int) throws -> [Double] {
        var l = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in 0...i {
                var sum = a[i * n + j]
                for k in 0..<j { sum -= l[i * n + k] * l[j * n + k] }
                if i == j {
                    guard sum > 0 else { throw Failure.notPositiveDefinite }
                    l[i * n + i] = sum.squareRoot()
                } else {
                    l[i * n + j] = sum / l[j * n + j]
                }
            }
        }
        return l
    }
}
