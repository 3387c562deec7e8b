import ModelFormat

extension PackedLinear {
    /// Packs GPTQ's output (`codes [rows, columns]`, `scales`/`zeros [rows, groups]`,
    /// `groupIndex [columns]`); `rows` is `out`, `columns` is `in`. Scales are rounded to fp16
    /// (nearest even). Zeros must be integers in `0…2^bits − 1` (½ at width 1).
    public init(packing result: GPTQ.Result, rows: Int, columns: Int, bits: Int, groupSize: Int) {
        let groups = (columns + groupSize - 1) / groupSize
        precondition(result.codes.count == rows * columns && result.groupIndex.count == columns)
        precondition(result.scales.count == rows * groups && result.zeros.count == rows * groups)
        // GPTQ.Result is [rows, groups]; the checkpoint is [groups, out].
        var scales = [Float](repeating: 0, count: rows * groups), zeros = scales
        for r in 0..<rows {
            for g in 0..<groups {
                scales[g * rows + r] = result.scales[r * groups + g]
                zeros[g * rows + r] = result.zeros[r * groups + g]
            }
        }
        self.init(
            packingCodes: result.codes, zeros: zeros, scales: scales, groupIndex: result.groupIndex.map { Int32($0) },
            outFeatures: rows, inFeatures: columns, bits: bits, groupSize: groupSize)
    }
}
