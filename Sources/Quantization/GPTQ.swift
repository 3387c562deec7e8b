import Foundation
import Kernels
import ModelFormat

/// GPTQ (Frantar et al. 2022), as in IST-DASLab/gptq `fasterquant`: dead columns zeroed, damping
/// (`dampening` × mean diagonal), column-by-column quantization with error feedback, lazy updates
/// of the columns after each block. The feedback uses H's own upper Cholesky factor instead of
/// that of H⁻¹ (the same updates; see `Cholesky`), so there is no matrix inverse. Group parameters come from the
/// weights as they stand when the group's first column is reached. The Hessian is not changed:
/// one expert can be quantized at several widths from the same H.
///
/// Works in Float like torch's GPTQ; the Cholesky factor (`Cholesky`) and the lazy block update
/// are SGEMMs (`SGEMM`), threaded; the output error falls out of the quantization pass. Results
/// do not depend on the thread count. `Cholesky.referenceUpperFactor` is the Double oracle for the
/// factor.
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
        /// Integer codes `[rows, columns]`, row-major (0…2^bits − 1, one byte each).
        public var codes: [UInt8]
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

    /// Run the in-block pass row by row (`quantizeBlock`, the reference) instead of in tiles of
    /// 16 rows (`quantizeBlockInTiles`); the results are the same. Read when a quantization starts.
    @TaskLocal public static var rowByRow = false

    public init(options: Options = .init()) { self.options = options }

    /// Where one `quantize` call spent its time (benchmarks): the Cholesky factor of H, the
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

    /// One weight matrix at several widths from one Hessian: the Cholesky factor of H (and the
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
        try quantize(
            weights: [weight], rows: [rows], columns: columns, hessian: hessian, widths: widths, timing: &timing
        )
        .map { $0[0] }
    }

    /// Several weight matrices with the same inputs (an expert's gate and up projections) at several
    /// widths from one Hessian: one factorisation for all of them (each result equals quantizing that
    /// matrix alone). Returns `[width][matrix]`.
    public func quantize(
        weights: [[Float]], rows: [Int], columns: Int, hessian: [Double], widths: [Int],
        timing: inout Timing
    ) throws -> [[Result]] {
        precondition(weights.count == rows.count && !weights.isEmpty && hessian.count == columns * columns)
        precondition(zip(weights, rows).allSatisfy { $0.count == $1 * columns })
        let groupSize = options.groupSize > 0 ? options.groupSize : columns
        guard options.actOrder else {
            let factor = try factor(hessian: hessian, columns: columns, timing: &timing)
            return try widths.map { bits in
                try zip(weights, rows).map { weight, rows in
                    try quantizeInOrder(
                        weight: weight, rows: rows, columns: columns, hessian: hessian, factor: factor, bits: bits,
                        timing: &timing)
                }
            }
        }
        // Descending diagonal (dead columns count as 1, as after GPTQ's fix-up), stable on ties.
        let diagonal = (0..<columns).map { hessian[$0 * columns + $0] == 0 ? 1 : hessian[$0 * columns + $0] }
        let order = (0..<columns).sorted { diagonal[$0] != diagonal[$1] ? diagonal[$0] > diagonal[$1] : $0 < $1 }
        var permutedHessian = [Double](repeating: 0, count: hessian.count)
        for (i, a) in order.enumerated() {
            for (j, b) in order.enumerated() { permutedHessian[i * columns + j] = hessian[a * columns + b] }
        }
        let permutedWeights = zip(weights, rows).map { weight, rows in
            var permuted = [Float](repeating: 0, count: weight.count)
            for r in 0..<rows {
                for (j, source) in order.enumerated() { permuted[r * columns + j] = weight[r * columns + source] }
            }
            return permuted
        }
        let factor = try factor(hessian: permutedHessian, columns: columns, timing: &timing)
        return try widths.map { bits in
            try zip(permutedWeights, rows).map { weight, rows in
                // The error is a trace, the same in either column order.
                let permuted = try quantizeInOrder(
                    weight: weight, rows: rows, columns: columns, hessian: permutedHessian, factor: factor, bits: bits,
                    timing: &timing)
                var result = permuted
                for r in 0..<rows {
                    for (j, column) in order.enumerated() {
                        result.codes[r * columns + column] = permuted.codes[r * columns + j]
                        result.dequantized[r * columns + column] = permuted.dequantized[r * columns + j]
                    }
                }
                for (j, column) in order.enumerated() { result.groupIndex[column] = j / groupSize }
                return result
            }
        }
    }

    /// GPTQ's factor of one Hessian: `Cholesky.upperFactor` of H with dead inputs (zero diagonal)
    /// set to 1 and damping (`dampening` × mean diagonal) added, and by how much each diagonal entry
    /// was raised (to take the damping back out of the error).
    struct Factor {
        var values: [Float]
        var raised: [Double]
        /// Per block of columns, what its groups' parameters need (nil where no group starts in it).
        var bases: [GroupBasis?]
    }

    /// Group parameters come from the weights as published GPTQ has them at the block's start,
    /// `w_F − Σ_{i<s} E_i U_iF`; in `V` terms that is `w + (w'' − w) · T⁻¹` over the block's
    /// columns `s..<s + extent`, where `w''` are the running weights here and `T` the unit upper
    /// triangular block `V'[s..<s+extent, s..<s+extent]` (docs/KERNELS.md). `inverse` is `T⁻¹`, row-major.
    struct GroupBasis: Sendable {
        var extent: Int
        var inverse: [Float]
    }

    /// The `GroupBasis` of every block after the first that has a group start (at the first,
    /// nothing has been updated yet and the weights are the given ones).
    func groupBases(_ v: [Float], columns: Int, groupSize: Int) -> [GroupBasis?] {
        let blockSize = options.blockSize
        return stride(from: 0, to: columns, by: blockSize).map { start -> GroupBasis? in
            let end = min(start + blockSize, columns)
            guard start > 0, let last = (start..<end).last(where: { $0 % groupSize == 0 }) else { return nil }
            let extent = min(columns, last + groupSize) - start
            // Back substitution in Double, one column of the inverse at a time.
            var inverse = [Double](repeating: 0, count: extent * extent)
            for k in 0..<extent {
                inverse[k * extent + k] = 1
                for i in stride(from: k - 1, through: 0, by: -1) {
                    var sum = 0.0
                    for m in (i + 1)...k {
                        sum += Double(v[(start + i) * columns + start + m]) * inverse[m * extent + k]
                    }
                    inverse[i * extent + k] = -sum
                }
            }
            return GroupBasis(extent: extent, inverse: inverse.map { Float($0) })
        }
    }

    func factor(hessian: [Double], columns: Int, timing: inout Timing) throws -> Factor {
        var diagonal = (0..<columns).map { hessian[$0 * columns + $0] == 0 ? 1 : hessian[$0 * columns + $0] }
        let meanDiagonal = diagonal.reduce(0, +) / Double(columns)
        for j in 0..<columns { diagonal[j] += options.dampening * meanDiagonal }
        let start = ContinuousClock.now
        let values = try hessian.withUnsafeBufferPointer { h in
            try Cholesky.upperFactor(h.baseAddress!, n: columns, diagonal: diagonal)
        }
        let groupSize = options.groupSize > 0 ? options.groupSize : columns
        let bases = groupBases(values, columns: columns, groupSize: groupSize)
        timing.choleskySeconds += seconds(since: start)
        return Factor(
            values: values, raised: (0..<columns).map { diagonal[$0] - hessian[$0 * columns + $0] }, bases: bases)
    }

    /// GPTQ over the columns in their given order, in Float (as torch's float32 GPTQ), with the
    /// factor `V'` of H (`Cholesky`): `w'_j = w_j + Σ_{i<j} (w_i − q_i) V'_ij`, inside a block
    /// column by column, across blocks as one SGEMM.
    ///
    /// The error `tr((W − Q) H (W − Q)ᵀ)` is folded in: with the damped `H_d = V Vᵀ`,
    /// `Σ_j ((w'_j − q_j) V_jj)² = tr((W − Q) H_d (W − Q)ᵀ)`, and the damping's share
    /// `Σ_j (H_d − H)_jj ‖(W − Q)_:j‖²` is subtracted. Where that share is over 99% of the total
    /// (ten times the float rounding would matter), `outputError` recomputes it exactly.
    func quantizeInOrder(
        weight: [Float], rows: Int, columns: Int, hessian: [Double], factor: Factor, bits: Int,
        timing: inout Timing
    ) throws -> Result {
        let quantizer = GroupQuantizer(bits: bits, clipSearch: options.clipSearch)
        let groupSize = options.groupSize > 0 ? options.groupSize : columns
        let groups = (columns + groupSize - 1) / groupSize
        let blockSize = options.blockSize
        // Dead inputs (never seen): weight irrelevant, zeroed as in the reference.
        let live = (0..<columns).map { hessian[$0 * columns + $0] == 0 ? Float(0) : 1 }
        // `w` ends as the dequantized weights: each column's value is replaced by its code's once quantized.
        var w = HugePages.copy(weight)
        for j in 0..<columns where live[j] == 0 {
            for r in 0..<rows { w[r * columns + j] = 0 }
        }
        var start = ContinuousClock.now

        var codes = HugePages.filled(UInt8(0), count: rows * columns)
        var scales = [Float](repeating: 0, count: rows * groups)
        var zeros = [Float](repeating: 0, count: rows * groups)
        var parameters = [GroupQuantizer.Parameters](repeating: .init(scale: 1, zero: 0), count: rows)
        var differences = HugePages.filled(Float(0), count: rows * blockSize)
        let extent = factor.bases.map { $0?.extent ?? 0 }.max() ?? 0
        // The row-by-row reference keeps its group weights here; the tiles keep their own.
        let rowByRow = GPTQ.rowByRow
        var snapshot = [Float](repeating: 0, count: rowByRow ? max(1, rows * extent) : 1)
        var energy = [Double](repeating: 0, count: rows)

        w.withUnsafeMutableBufferPointer { w in
            codes.withUnsafeMutableBufferPointer { codes in
                scales.withUnsafeMutableBufferPointer { scales in
                    zeros.withUnsafeMutableBufferPointer { zeros in
                        parameters.withUnsafeMutableBufferPointer { parameters in
                            differences.withUnsafeMutableBufferPointer { differences in
                                snapshot.withUnsafeMutableBufferPointer { snapshot in
                                    energy.withUnsafeMutableBufferPointer { energy in
                                        weight.withUnsafeBufferPointer { original in
                                            live.withUnsafeBufferPointer { live in
                                                factor.values.withUnsafeBufferPointer { v in
                                                    let state = RowState(
                                                        w: w.baseAddress!, original: original.baseAddress!,
                                                        live: live.baseAddress!, v: v.baseAddress!,
                                                        codes: codes.baseAddress!, scales: scales.baseAddress!,
                                                        zeros: zeros.baseAddress!, rows: rows,
                                                        parameters: parameters.baseAddress!,
                                                        differences: differences.baseAddress!,
                                                        snapshot: snapshot.baseAddress!,
                                                        energy: energy.baseAddress!)
                                                    Self.run(
                                                        state, rows: rows, columns: columns, blockSize: blockSize,
                                                        groupSize: groupSize, groups: groups, extent: extent,
                                                        bases: factor.bases, quantizer: quantizer,
                                                        rowByRow: rowByRow, timing: &timing)
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
        }
        start = ContinuousClock.now
        // The damping's share per row, `Σ_j (H_d − H)_jj (W − Q)_rj²`, rows over the cores.
        var damping = [Double](repeating: 0, count: rows)
        let dequantized = w
        damping.withUnsafeMutableBufferPointer { damping in
            weight.withUnsafeBufferPointer { weight in
                dequantized.withUnsafeBufferPointer { dequantized in
                    live.withUnsafeBufferPointer { live in
                        factor.raised.withUnsafeBufferPointer { raised in
                            func shared<T>(_ p: UnsafeBufferPointer<T>) -> UnsafeSendable<T> {
                                UnsafeSendable(UnsafeMutablePointer(mutating: p.baseAddress!))
                            }
                            let out = UnsafeSendable(damping.baseAddress!)
                            let w = shared(weight), q = shared(dequantized), l = shared(live), d = shared(raised)
                            Parallel.perform(iterations: (rows + 63) / 64, work: rows * columns) { chunk in
                                for r in (chunk * 64)..<min(rows, chunk * 64 + 64) {
                                    var sum = 0.0
                                    let wr = w.pointer + r * columns, qr = q.pointer + r * columns
                                    for j in 0..<columns {
                                        let difference = Double(wr[j] * l.pointer[j] - qr[j])
                                        sum += d.pointer[j] * difference * difference
                                    }
                                    out.pointer[r] = sum
                                }
                            }
                        }
                    }
                }
            }
        }
        let total = energy.reduce(0, +), share = damping.reduce(0, +)
        let error =
            share > 0.99 * total
            ? Self.outputError(weight, dequantized, rows: rows, columns: columns, hessian: hessian) : total - share
        timing.errorSeconds += seconds(since: start)
        return Result(
            codes: codes, scales: scales, zeros: zeros, dequantized: dequantized, error: error,
            groupIndex: (0..<columns).map { $0 / groupSize })
    }

    /// The blocks of one GPTQ run: in-block quantization over fixed chunks of rows (rows are
    /// independent; they share only the factor), then the lazy update of the later columns,
    /// `W[:, end:] += (W − Q)[:, block] · V'[block, end:]`.
    static func run(
        _ state: RowState, rows: Int, columns: Int, blockSize: Int, groupSize: Int, groups: Int, extent: Int,
        bases: [GroupBasis?], quantizer: GroupQuantizer, rowByRow: Bool, timing: inout Timing
    ) {
        let chunk = 32
        let chunks = (rows + chunk - 1) / chunk
        var blockStart = 0
        while blockStart < columns {
            let block = blockStart..<min(blockStart + blockSize, columns)
            var start = ContinuousClock.now
            let basis = bases[blockStart / blockSize]
            let body: @Sendable (Int) -> Void = { c in
                let chunkRows = (c * chunk)..<min(rows, (c + 1) * chunk)
                if rowByRow {
                    quantizeBlock(
                        state, rows: chunkRows, columns: columns, block: block, blockSize: blockSize,
                        groupSize: groupSize, groups: groups, extent: extent, basis: basis, quantizer: quantizer)
                } else {
                    quantizeBlockInTiles(
                        state, rows: chunkRows, columns: columns, block: block, blockSize: blockSize,
                        groupSize: groupSize, groups: groups, basis: basis, quantizer: quantizer)
                }
            }
            if rows * block.count * block.count >= 1 << 18 {
                Parallel.perform(iterations: chunks, body)
            } else {
                for c in 0..<chunks { body(c) }
            }
            timing.quantizeSeconds += seconds(since: start)
            let end = block.upperBound
            if end < columns {
                start = ContinuousClock.now
                SGEMM.multiply(
                    m: rows, n: columns - end, k: block.count, alpha: 1,
                    a: SGEMM.Matrix(state.differences, rowStride: rows).transposed,
                    b: .init(state.v + blockStart * columns + end, rowStride: columns),
                    c: state.w + end, ldc: columns)
                timing.updateSeconds += seconds(since: start)
                timing.updateFlops += 2 * Double(rows) * Double(block.count) * Double(columns - end)
            }
            blockStart = block.upperBound
        }
    }

    /// Shared buffers of one GPTQ run; threads touch disjoint rows.
    struct RowState: @unchecked Sendable {
        /// The weights as updated so far (`w'`); quantized columns hold their dequantized values.
        let w: UnsafeMutablePointer<Float>
        /// The weights given, and 1 or 0 per column (0 for dead inputs, zeroed in `w`).
        let original: UnsafePointer<Float>
        let live: UnsafePointer<Float>
        /// `V'` (`Cholesky.upperFactor`).
        let v: UnsafePointer<Float>
        let codes: UnsafeMutablePointer<UInt8>
        let scales: UnsafeMutablePointer<Float>
        let zeros: UnsafeMutablePointer<Float>
        /// The rows of the matrix (the stride of `differences`).
        let rows: Int
        let parameters: UnsafeMutablePointer<GroupQuantizer.Parameters>
        /// `(W − Q)[r, block]`, left for the lazy update, column by column: `differences[k · rows + r]`.
        let differences: UnsafeMutablePointer<Float>
        /// The weights the group parameters are taken from (`GroupBasis`), `extent` per row (row by row only).
        let snapshot: UnsafeMutablePointer<Float>
        /// `Σ_j ((w'_j − q_j) V_jj)²` per row.
        let energy: UnsafeMutablePointer<Double>
    }

    /// One block of columns for a range of rows, row by row: group parameters, then quantization
    /// with error feedback inside the block. The reference of `quantizeBlockInTiles`.
    static func quantizeBlock(
        _ s: RowState, rows: Range<Int>, columns: Int, block: Range<Int>, blockSize: Int,
        groupSize: Int, groups: Int, extent: Int, basis: GroupBasis?, quantizer: GroupQuantizer
    ) {
        let blockStart = block.lowerBound, blockEnd = block.upperBound
        let group = UnsafeMutablePointer<Float>.allocate(capacity: groupSize)
        defer { group.deallocate() }
        for r in rows {
            let row = s.w + r * columns, original = s.original + r * columns
            let snapshot = s.snapshot + r * extent
            // The reference takes group parameters from W as it stood at the block's start
            // (earlier blocks' lazy updates applied, this block's error feedback not): `GroupBasis`.
            if let basis {
                let n = basis.extent
                for k in 0..<n { snapshot[k] = original[blockStart + k] * s.live[blockStart + k] }
                basis.inverse.withUnsafeBufferPointer { inverse in
                    for m in 0..<n {
                        let delta = row[blockStart + m] - original[blockStart + m] * s.live[blockStart + m]
                        if delta != 0 {
                            Kernels.addScaled(snapshot + m, inverse.baseAddress! + m * n + m, delta, n - m)
                        }
                    }
                }
            }
            var energy = 0.0
            for j in block {
                if j % groupSize == 0 {
                    let end = min(j + groupSize, columns)
                    if basis != nil {
                        for c in j..<end { group[c - j] = snapshot[c - blockStart] }
                    } else {
                        for c in j..<end { group[c - j] = original[c] * s.live[c] }
                    }
                    s.parameters[r] = quantizer.parameters(UnsafeBufferPointer(start: group, count: end - j))
                    s.scales[r * groups + j / groupSize] = s.parameters[r].scale
                    s.zeros[r * groups + j / groupSize] = s.parameters[r].zero
                }
                let value = row[j]
                let code = quantizer.code(value, s.parameters[r])
                let q = quantizer.dequantize(code, s.parameters[r])
                s.codes[r * columns + j] = UInt8(code)
                row[j] = q
                let scaled = Double((value - q) * s.v[j * columns + j])
                energy += scaled * scaled
                let difference = original[j] * s.live[j] - q
                s.differences[(j - blockStart) * s.rows + r] = difference
                // Error feedback inside the block.
                if j + 1 < blockEnd {
                    Kernels.addScaled(row + j + 1, s.v + j * columns + j + 1, difference, blockEnd - j - 1)
                }
            }
            s.energy[r] += energy
        }
    }
}
