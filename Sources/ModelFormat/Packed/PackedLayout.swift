/// Sizes of the packed GPTQ tensors (AutoGPTQ v1 layout, docs/PACKED_FORMAT.md) for one
/// linear layer of `outFeatures × inFeatures` weights quantized at `bits` with groups of
/// `groupSize` input columns. The profiler records these as an expert's `bytes`, so a budget in
/// bytes is honoured exactly.
public struct PackedLayout: Sendable, Equatable {
    /// The largest group size any reader or option accepts (2^20 input columns, far beyond any
    /// model's width): sizes computed from it cannot overflow.
    public static let maximumGroupSize = 1 << 20

    public var outFeatures: Int
    public var inFeatures: Int
    public var bits: Int
    public var groupSize: Int

    public init(outFeatures: Int, inFeatures: Int, bits: Int, groupSize: Int) {
        precondition(outFeatures > 0 && inFeatures > 0 && groupSize > 0)
        precondition([1, 2, 3, 4, 8].contains(bits), "unsupported width \(bits)")
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        self.bits = bits
        self.groupSize = groupSize
    }

    public var groups: Int { (inFeatures + groupSize - 1) / groupSize }

    /// `qweight`: int32 `[⌈in·bits/32⌉, out]`, packed along the input dimension.
    public var qweightBytes: Int64 { Int64((inFeatures * bits + 31) / 32) * Int64(outFeatures) * 4 }
    /// `qzeros`: int32 `[groups, ⌈out·bits/32⌉]`, packed along the output dimension. Width 1
    /// (sign binarisation, pmq's extension) has a fixed zero of ½ and stores none.
    public var qzerosBytes: Int64 { bits == 1 ? 0 : Int64(groups) * Int64((outFeatures * bits + 31) / 32) * 4 }
    /// `scales`: fp16 `[groups, out]`.
    public var scalesBytes: Int64 { Int64(groups) * Int64(outFeatures) * 2 }
    /// `g_idx`: int32 `[in]`.
    public var gIdxBytes: Int64 { Int64(inFeatures) * 4 }

    public var totalBytes: Int64 { qweightBytes + qzerosBytes + scalesBytes + gIdxBytes }

    /// Packed bytes of one SwiGLU expert (gate and up: `intermediate × hidden`, down: `hidden × intermediate`).
    public static func expertBytes(hidden: Int, intermediate: Int, bits: Int, groupSize: Int) -> Int64 {
        let gateOrUp = PackedLayout(outFeatures: intermediate, inFeatures: hidden, bits: bits, groupSize: groupSize)
        let down = PackedLayout(outFeatures: hidden, inFeatures: intermediate, bits: bits, groupSize: groupSize)
        return 2 * gateOrUp.totalBytes + down.totalBytes
    }
}
