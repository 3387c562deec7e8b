/// One linear layer's quantized weights in the GPTQ tensor layout (AutoGPTQ v1, `checkpoint_format
/// "gptq"`; docs/PACKED_FORMAT.md), exactly as stored in the packed checkpoint. The layer
/// computes `y = x · Ŵᵀ` with `Ŵ[o, i] = scale[g_idx[i], o] · (q[o, i] − zero[g_idx[i], o])`.
///
/// - `qweight`: int32 words `[⌈in·bits/32⌉, out]`, row-major: column `o` holds input values
///   `0, 1, 2, …` of output row `o` packed along the input dimension, first value in the lowest
///   bits; 3 bits: 32 values across 3 words, values 10 and 21 straddling word boundaries.
/// - `qzeros`: int32 words `[groups, ⌈out·bits/32⌉]`, packed along the output dimension, holding
///   `zero − 1` (v1). Width 1 stores none (`zero` is ½, pmq's extension).
/// - `scales`: fp16 bit patterns `[groups, out]`.
/// - `gIdx`: group of each input column `[in]` (`i / groupSize` unless act-order permuted).
public struct PackedLinear: Sendable, Equatable {
    public let outFeatures: Int
    public let inFeatures: Int
    public let bits: Int
    public let groupSize: Int
    public var qweight: [UInt32]
    public var qzeros: [UInt32]
    public var scales: [UInt16]
    public var gIdx: [Int32]

    public init(
        outFeatures: Int, inFeatures: Int, bits: Int, groupSize: Int,
        qweight: [UInt32], qzeros: [UInt32], scales: [UInt16], gIdx: [Int32]
    ) {
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        self.bits = bits
        self.groupSize = groupSize
        self.qweight = qweight
        self.qzeros = qzeros
        self.scales = scales
        self.gIdx = gIdx
    }

    public var layout: PackedLayout {
        PackedLayout(outFeatures: outFeatures, inFeatures: inFeatures, bits: bits, groupSize: groupSize)
    }
    public var groups: Int { layout.groups }
    /// Words of `qweight` per output column.
    public var wordRows: Int { (inFeatures * bits + 31) / 32 }
    /// Words of `qzeros` per group.
    public var zeroWordsPerGroup: Int { bits == 1 ? 0 : (outFeatures * bits + 31) / 32 }
    public var byteCount: Int { (qweight.count + qzeros.count + gIdx.count) * 4 + scales.count * 2 }
}
