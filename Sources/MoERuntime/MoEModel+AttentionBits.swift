import Kernels
import ModelFormat

extension MoEModel {
    /// What `quantizeAttentionAndHead` changed: matrices rewritten and their bytes before and after.
    public struct AttentionQuantization: Sendable {
        public var matrices = 0
        public var bytesBefore = 0
        public var bytesAfter = 0
    }

    /// Holds the attention projections and an untied output head as `bits`-bit packed linears,
    /// rounded to nearest per group of `groupSize` inputs (asymmetric: `scale = (max − min) / (2^bits − 1)`
    /// over the group with 0 included, fp16 scale, integer zero), as llama.cpp's Q8_0 does for
    /// them; the kernels then take the packed paths (int8 activations included). The embedding
    /// table and a tied head stay as they are (a token reads one row of it), and so does MLA's
    /// `kv_b` (the absorbed attention reads it whole). Eager models only.
    @discardableResult
    public func quantizeAttentionAndHead(bits: Int = 8, groupSize: Int = 128) -> AttentionQuantization {
        precondition(!lazy, "quantizing attention needs every matrix in memory")
        precondition([2, 4, 8].contains(bits), "attention widths: 2, 4 or 8 bits")
        var roles = (0..<config.layerCount).flatMap { TensorRole.attentionMatrices(config, layer: $0) }
        roles.removeAll { if case .keyValueB = $0 { return true } else { return false } }
        if !config.tieWordEmbeddings { roles.append(.lmHead) }
        var summary = AttentionQuantization()
        for role in roles {
            guard let matrix = matrices[role] else { continue }
            if case .packed = matrix.storage { continue }
            let group = min(groupSize, matrix.columns)
            let linear = Self.roundToNearest(
                matrix.floats, rows: matrix.rows, columns: matrix.columns, bits: bits,
                groupSize: group)
            let packed = Matrix(rows: matrix.rows, columns: matrix.columns, storage: .packed(PackedWeights(linear)))
            summary.matrices += 1
            summary.bytesBefore += matrix.byteCount
            summary.bytesAfter += packed.byteCount
            matrices[role] = packed
        }
        return summary
    }

    /// `[rows, columns]` floats → a packed linear of round-to-nearest codes (natural group order).
    static func roundToNearest(_ w: [Float], rows: Int, columns: Int, bits: Int, groupSize: Int) -> PackedLinear {
        let groups = (columns + groupSize - 1) / groupSize, maxCode = Float((1 << bits) - 1)
        var codes = [Int](repeating: 0, count: rows * columns)
        var zeros = [Float](repeating: 0, count: groups * rows), scales = [Float](repeating: 1, count: groups * rows)
        for o in 0..<rows {
            for g in 0..<groups {
                let range = (g * groupSize)..<min((g + 1) * groupSize, columns)
                var low: Float = 0, high: Float = 0
                for i in range {
                    low = min(low, w[o * columns + i])
                    high = max(high, w[o * columns + i])
                }
                // The fp16 scale the kernels will read; a group of zeros keeps scale 1, zero 0.
                let scale =
                    high > low ? max(Float(Float16((high - low) / maxCode)), Float(Float16.leastNormalMagnitude)) : 1
                let zero = min(max((-low / scale).rounded(), 0), maxCode)
                scales[g * rows + o] = scale
                zeros[g * rows + o] = zero
                for i in range {
                    codes[o * columns + i] = Int(min(max((w[o * columns + i] / scale).rounded() + zero, 0), maxCode))
                }
            }
        }
        return PackedLinear(
            packingCodes: codes, zeros: zeros, scales: scales, groupIndex: (0..<columns).map { Int32($0 / groupSize) },
            outFeatures: rows, inFeatures: columns, bits: bits, groupSize: groupSize)
    }
}
