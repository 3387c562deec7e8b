import Foundation
import Kernels
import ModelFormat

/// GPTQ (Frantar et al. 2022), as in IST-DASLab/gptq `fasterquant`: dead columns zeroed, damping
/// (`dampening` × mean diagonal), upper Cholesky factor of H⁻¹, column-by-column quantization with
/// error feedback, lazy updates of the columns after each block. Group parameters come from the
/// weights as they stand when the group's first column is reached. The Hessian is not changed:
/// one expert can be quantized at several widths from the same H.
///
/// Works in Float like torch's GPTQ; the Cholesky factor of H⁻¹ (`Cholesky`), the lazy block
/// update and the output error are SGEMMs (`SGEMM`), threaded; results do not depend on the
/// thread count. `Cholesky.referenceUpperFactorOfInverse` is the Double oracle for the factor.
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
        public init(
            groupSize: Int = 128, blockSize: Int = 128, dampening: Double = 0.01, actOrder: Bool = false,
            clipSearch: Bool = false
        ) {
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

    public var options: Options

    public init(options: Options = .init()) { self.options = options }

    /// Where one `quantize` call spent its time (benchmarks): the Cholesky factor of H⁻¹, the
    /// column-by-column quantization inside blocks, the lazy block updates (a GEMM of
    /// `updateFlops` floating-point operations) and the output error.
    public struct Timing: Sendable {
        public var choleskySeconds = 0.0
        public var quantizeSeconds = 0.0
        public var updateSeconds = 0.0
        public var updateFlops = 0.0
        public var errorSeconds = 0.0
        public init() {}
    }

    /// Quantizes `weight` (`[rows, columns]`, PyTorch `[out, in]`) with Hessian `hessian`
    /// (`[columns, columns]`, `Σ xᵀx` over the inputs) at `bits`.
    public func quantize(weight: [Float], rows: Int, columns: Int, hessian: [Double], bits: Int) throws -> Result {
        var timing = Timing()
        return try quantize(weight: weight, rows: rows, columns: columns, hessian: hessian, bits: bits, timing: &timing)
    }

    /// `quantize` that also reports where the time went.
    public func quantize(
        weight: [Float], rows: Int, columns: Int, hessian: [Double], bits: Int,
        timing: inout Timing
    ) throws -> Result {
        try quantize(weight: weight, rows: rows, columns: columns, hessian: hessian, widths: [bits], timing: &timing)[0]
    }

    /// One weight matrix at several widths from one Hessian: the Cholesky factor of H⁻¹ (and the
    /// act-order permutation) are computed once and shared, which is most of the work for wide
    /// inputs (a 14336² Hessian). Each result equals `quantize(…, bits:)` at that width.
    public func quantize(weight: [Float], rows: Int, columns: Int, hessian: [Double], widths: [Int]) throws -> [Result]
    {
        var timing = Timing()
        return try quantize(
            weight: weight, rows: rows, columns: columns, hessian: hessian, widths: widths, timing: &timing)
    }

    public func quantize(
        weight: [Float], rows: Int, columns: Int, hessian: [Double], widths: [Int],
        timing: inout Timing
    ) throws -> [Result] {
        precondition(weight.count == rows * columns && hessian.count == columns * columns)
        let groupSize = options.groupSize > 0 ? options.groupSize : columns
        guard options.actOrder else {
            let factor = try factor(hessian: hessian, columns: columns, timing: &timing)
            return try widths.map { bits in
                try quantizeInOrder(
                    weight: weight, rows: rows, columns: columns, hessian: hessian, factor: factor, bits: bits,
                    timing: &timing)
            }
        }
        // Descending diagonal (dead columns count as 1, as after GPTQ's fix-up), stable on ties.
        let diagonal = (0..<columns).map { hessian[$0 * columns + $0] == 0 ? 1 : hessian[$0 * columns + $0] }
        let order = (0..<columns).sorted { diagonal[$0] != diagonal[$1] ? diagonal[$0] > diagonal[$1] : $0 < $1 }
        var permutedWeight = [Float](repeating: 0, count: weight.count)
        var permutedHessian = [Double](repeating: 0, count: hessian.count)
        for r in 0..<rows {
            for (j, source) in order.enumerated() { permutedWeight[r * columns + j] = weight[r * columns + source] }
        }
        for (i, a) in order.enumerated() {
            for (j, b) in order.enumerated() { permutedHessian[i * columns + j] = hessian[a * columns + b] }
        }
        let factor = try factor(hessian: permutedHessian, columns: columns, timing: &timing)
        return try widths.map { bits in
            let permuted = try quantizeInOrder(
                weight: permutedWeight, rows: rows, columns: columns, hessian: permutedHessian,
                factor: factor, bits: bits, timing: &timing)
            var result = permuted
            for r in 0..<rows {
                for (j, column) in order.enumerated() {
                    result.codes[r * columns + column] = permuted.codes[r * columns + j]
                    result.dequantized[r * columns + column] = permuted.dequantized[r * columns + j]
                }
            }
            for (j, column) in order.enumerated() { result.groupIndex[column] = j / groupSize }
            let start = ContinuousClock.now
            result.error = Self.outputError(weight, result.dequantized, rows: rows, columns: columns, hessian: hessian)
            timing.errorSeconds += seconds(since: start)
            return result
        }
    }

    /// The upper Cholesky factor of `(H + damping)⁻¹` with dead inputs (zero diagonal) set to 1,
    /// as GPTQ uses it; depends on H only.
    func factor(hessian: [Double], columns: Int, timing: inout Timing) throws -> [Float] {
        var diagonal = (0..<columns).map { hessian[$0 * columns + $0] == 0 ? 1 : hessian[$0 * columns + $0] }
        let meanDiagonal = diagonal.reduce(0, +) / Double(columns)
        for j in 0..<columns { diagonal[j] += options.dampening * meanDiagonal }
        let start = ContinuousClock.now
        let hinv = try hessian.withUnsafeBufferPointer { h in
            try Cholesky.upperFactorOfInverse(h.baseAddress!, n: columns, diagonal: diagonal)
        }
        timing.choleskySeconds += seconds(since: start)
        return hinv
    }

    /// GPTQ over the columns in their given order, in Float (as torch's float32 GPTQ): W, the
    /// errors and H⁻¹'s factor; the block update is an SGEMM.
    func quantizeInOrder(
        weight: [Float], rows: Int, columns: Int, hessian: [Double], factor hinv: [Float], bits: Int,
        timing: inout Timing
    ) throws -> Result {
        let quantizer = GroupQuantizer(bits: bits, clipSearch: options.clipSearch)
        let groupSize = options.groupSize > 0 ? options.groupSize : columns
        let groups = (columns + groupSize - 1) / groupSize
        let blockSize = options.blockSize
        var w = weight
        // Dead inputs (never seen): weight irrelevant (H⁻¹'s factor has them at 1, `factor`).
        for j in 0..<columns where hessian[j * columns + j] == 0 {
            for r in 0..<rows { w[r * columns + j] = 0 }
        }
        var start = ContinuousClock.now

        var codes = [Int](repeating: 0, count: rows * columns)
        var scales = [Float](repeating: 0, count: rows * groups)
        var zeros = [Float](repeating: 0, count: rows * groups)
        var dequantized = [Float](repeating: 0, count: rows * columns)
        var parameters = [GroupQuantizer.Parameters](repeating: .init(scale: 1, zero: 0), count: rows)
        var errors = [Float](repeating: 0, count: rows * blockSize)
        var snapshot = [Float](repeating: 0, count: rows * blockSize)

        w.withUnsafeMutableBufferPointer { w in
            codes.withUnsafeMutableBufferPointer { codes in
                scales.withUnsafeMutableBufferPointer { scales in
                    zeros.withUnsafeMutableBufferPointer { zeros in
                        dequantized.withUnsafeMutableBufferPointer { dequantized in
                            parameters.withUnsafeMutableBufferPointer { parameters in
                                errors.withUnsafeMutableBufferPointer { errors in
                                    snapshot.withUnsafeMutableBufferPointer { snapshot in
                                        hinv.withUnsafeBufferPointer { hinv in
                                            let state = RowState(
                                                w: w.baseAddress!, hinv: hinv.baseAddress!, codes: codes.baseAddress!,
                                                scales: scales.baseAddress!,
                                                zeros: zeros.baseAddress!, dequantized: dequantized.baseAddress!,
                                                parameters: parameters.baseAddress!,
                                                errors: errors.baseAddress!, snapshot: snapshot.baseAddress!)
                                            // Rows are independent inside a block (they share only
                                            // H⁻¹): fixed chunks of rows.
                                            let chunk = 32
                                            let chunks = (rows + chunk - 1) / chunk
                                            var blockStart = 0
                                            while blockStart < columns {
                                                let block = blockStart..<min(blockStart + blockSize, columns)
                                                start = ContinuousClock.now
                                                let body: @Sendable (Int) -> Void = { c in
                                                    Self.quantizeBlock(
                                                        state, rows: (c * chunk)..<min(rows, (c + 1) * chunk),
                                                        columns: columns,
                                                        block: block, blockSize: blockSize, groupSize: groupSize,
                                                        groups: groups, quantizer: quantizer)
                                                }
                                                if rows * block.count * block.count >= 1 << 18 {
                                                    Parallel.perform(iterations: chunks, body)
                                                } else {
                                                    for c in 0..<chunks { body(c) }
                                                }
                                                timing.quantizeSeconds += seconds(since: start)
                                                // Lazy update of every later column: W[:, end:] −= Err[:, block] ·
                                                // Hinv[block, end:].
                                                let end = block.upperBound
                                                if end < columns {
                                                    start = ContinuousClock.now
                                                    SGEMM.multiply(
                                                        m: rows, n: columns - end, k: block.count, alpha: -1,
                                                        a: .init(state.errors, rowStride: blockSize),
                                                        b: .init(
                                                            state.hinv + blockStart * columns + end,
                                                            rowStride: columns),
                                                        c: state.w + end, ldc: columns)
                                                    timing.updateSeconds += seconds(since: start)
                                                    timing.updateFlops +=
                                                        2 * Double(rows) * Double(block.count) * Double(columns - end)
                                                }
                                                blockStart = block.upperBound
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        start = ContinuousClock.now
        let error = Self.outputError(weight, dequantized, rows: rows, columns: columns, hessian: hessian)
        timing.errorSeconds += seconds(since: start)
        return Result(
            codes: codes, scales: scales, zeros: zeros, dequantized: dequantized, error: error,
            groupIndex: (0..<columns).map { $0 / groupSize })
    }

    /// Shared buffers of one GPTQ run; threads touch disjoint rows.
    struct RowState: @unchecked Sendable {
        let w: UnsafeMutablePointer<Float>
        let hinv: UnsafePointer<Float>
        let codes: UnsafeMutablePointer<Int>
        let scales: UnsafeMutablePointer<Float>
        let zeros: UnsafeMutablePointer<Float>
        let dequantized: UnsafeMutablePointer<Float>
        let parameters: UnsafeMutablePointer<GroupQuantizer.Parameters>
        let errors: UnsafeMutablePointer<Float>
        let snapshot: UnsafeMutablePointer<Float>
    }

    /// One block of columns for a range of rows: group parameters, then quantization with error
    /// feedback inside the block; the errors `Err[r, j − blockStart]` are left for the update.
    static func quantizeBlock(
        _ s: RowState, rows: Range<Int>, columns: Int, block: Range<Int>, blockSize: Int,
        groupSize: Int, groups: Int, quantizer: GroupQuantizer
    ) {
        let blockStart = block.lowerBound, blockEnd = block.upperBound
        let group = UnsafeMutablePointer<Float>.allocate(capacity: groupSize)
        defer { group.deallocate() }
        for r in rows {
            let row = s.w + r * columns
            let snapshot = s.snapshot + r * blockSize
            // The reference takes group parameters from W as it stood at the block's start
            // (earlier blocks' lazy updates applied, this block's error feedback not).
            snapshot.initialize(from: row + blockStart, count: block.count)
            for j in block {
                if j % groupSize == 0 {
                    let end = min(j + groupSize, columns)
                    for c in j..<end { group[c - j] = c < blockEnd ? snapshot[c - blockStart] : row[c] }
                    s.parameters[r] = quantizer.parameters(UnsafeBufferPointer(start: group, count: end - j))
                    s.scales[r * groups + j / groupSize] = s.parameters[r].scale
                    s.zeros[r * groups + j / groupSize] = s.parameters[r].zero
                }
                let value = row[j]
                let code = quantizer.code(value, s.parameters[r])
                let q = quantizer.dequantize(code, s.parameters[r])
                s.codes[r * columns + j] = code
                s.dequantized[r * columns + j] = q
                let err = (value - q) / s.hinv[j * columns + j]
                s.errors[r * blockSize + (j - blockStart)] = err
                // Error feedback inside the block.
                if j + 1 < blockEnd {
                    Kernels.addScaled(row + j + 1, s.hinv + j * columns + j + 1, -err, blockEnd - j - 1)
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
                    let p = quantizer.parameters(
                        UnsafeBufferPointer(rebasing: w[(r * columns + start)..<(r * columns + end)]))
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
        let error =
            hessian.map { Self.outputError(weight, dequantized, rows: rows, columns: columns, hessian: $0) } ?? 0
        return Result(
            codes: codes, scales: scales, zeros: zeros, dequantized: dequantized, error: error,
            groupIndex: (0..<columns).map { $0 / groupSize })
    }

    /// `tr((W − Q) H (W − Q)ᵀ) = Σ_i H_ii ‖E_:i‖² + 2 Σ_{i<j} E_:i H_ij E_:j` with `E = W − Q`:
    /// the strict upper triangle of H, in column blocks, as SGEMMs `E[:, :j1] · triu(H)[:j1, J]`
    /// (Float products, Double sums). Deterministic: fixed blocking, sums in a fixed order.
    public static func outputError(_ weight: [Float], _ quantized: [Float], rows: Int, columns: Int, hessian: [Double])
        -> Double
    {
        precondition(
            weight.count == rows * columns && quantized.count == rows * columns && hessian.count == columns * columns)
        guard rows > 0, columns > 0 else { return 0 }
        let width = 256, rowChunk = 64
        let rowChunks = (rows + rowChunk - 1) / rowChunk
        var e = [Float](repeating: 0, count: rows * columns)
        for i in 0..<e.count { e[i] = weight[i] - quantized[i] }
        var y = [Float](repeating: 0, count: rows * min(width, columns))
        var partials = [Double](repeating: 0, count: rowChunks)
        var total = 0.0
        e.withUnsafeBufferPointer { e in
            y.withUnsafeMutableBufferPointer { y in
                partials.withUnsafeMutableBufferPointer { partials in
                    hessian.withUnsafeBufferPointer { h in
                        let e = e.baseAddress!, y = UnsafeSendable(y.baseAddress!),
                            h = UnsafeSendable(UnsafeMutablePointer(mutating: h.baseAddress!))
                        let partials = UnsafeSendable(partials.baseAddress!)
                        let ep = UnsafeSendable(UnsafeMutablePointer(mutating: e))
                        for j0 in stride(from: 0, to: columns, by: width) {
                            let j1 = min(j0 + width, columns), w = j1 - j0
                            // B(p, jj) = H[p, j0 + jj] where p < j0 + jj (strict upper triangle), else 0.
                            let packed = SGEMM.PackedB.allocate(k: j1, n: w)
                            defer { packed.deallocate() }
                            Parallel.perform(iterations: packed.panels) { panel in
                                let out = packed.data + panel * packed.panelStride
                                for p in 0..<j1 {
                                    for jj in 0..<SGEMM.nr {
                                        let j = j0 + panel * SGEMM.nr + jj
                                        out[p * SGEMM.nr + jj] = j < j1 && p < j ? Float(h.pointer[p * columns + j]) : 0
                                    }
                                }
                            }
                            y.pointer.initialize(repeating: 0, count: rows * w)
                            SGEMM.multiply(
                                m: rows, alpha: 1, a: .init(e, rowStride: columns), packed: packed, c: y.pointer, ldc: w
                            )
                            // Diagonal and twice the strict upper triangle, per fixed chunk of rows.
                            Parallel.perform(iterations: rowChunks) { c in
                                var sum = 0.0
                                for r in (c * rowChunk)..<min(rows, (c + 1) * rowChunk) {
                                    let er = ep.pointer + r * columns + j0, yr = y.pointer + r * w
                                    for jj in 0..<w {
                                        let value = Double(er[jj])
                                        sum +=
                                            value
                                            * (2 * Double(yr[jj]) + h.pointer[(j0 + jj) * columns + j0 + jj] * value)
                                    }
                                }
                                partials.pointer[c] = sum
                            }
                            for c in 0..<rowChunks { total += partials.pointer[c] }
                        }
                    }
                }
            }
        }
        return total
    }
}
