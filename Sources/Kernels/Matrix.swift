import ModelFormat

/// A weight matrix `[rows, columns]` (PyTorch's `[out, in]`) kept in the checkpoint's precision:
/// bf16 checkpoints stay bf16 in memory (half the bytes to hold and to stream per token).
public struct Matrix: Sendable {
    public enum Storage: Sendable {
        case f32([Float])
        /// Raw bfloat16 bit patterns (the top 16 bits of an f32).
        case bf16([UInt16])
        /// GPTQ-packed codes, dequantized on the fly by the kernels.
        case packed(PackedWeights)
        /// Block-scaled FP8 codes (DeepSeek-V3's checkpoints), widened on the fly by the kernels.
        case fp8(FP8Weights)
    }

    public let rows: Int
    public let columns: Int
    public let storage: Storage

    public init(rows: Int, columns: Int, storage: Storage) {
        self.rows = rows
        self.columns = columns
        self.storage = storage
    }

    public init(rows: Int, columns: Int, floats: [Float]) {
        precondition(floats.count == rows * columns)
        self.init(rows: rows, columns: columns, storage: .f32(floats))
    }

    public var byteCount: Int {
        switch storage {
        case let .f32(values): return values.count * 4
        case let .bf16(values): return values.count * 2
        case let .packed(weights): return weights.linear.byteCount
        case let .fp8(weights): return weights.byteCount
        }
    }

    /// Row `index` as f32.
    public func row(_ index: Int) -> [Float] {
        switch storage {
        case let .f32(values): return Array(values[(index * columns)..<((index + 1) * columns)])
        case let .bf16(values):
            return values[(index * columns)..<((index + 1) * columns)].map { Float(bitPattern: UInt32($0) << 16) }
        case .packed, .fp8: return Array(floats[(index * columns)..<((index + 1) * columns)])
        }
    }

    /// All values as f32 (tests and reference paths; a packed matrix is dequantized).
    public var floats: [Float] {
        switch storage {
        case let .f32(values): return values
        case let .bf16(values): return values.map { Float(bitPattern: UInt32($0) << 16) }
        case let .packed(weights): return weights.dequantized()
        case let .fp8(weights): return weights.dequantized(rows: rows, columns: columns)
        }
    }
}

/// A packed linear as the kernels run it, prepared once at load: whether `g_idx` is in natural
/// order (`i / groupSize`), and for act-order layers the same layer rewritten so each group's
/// inputs are contiguous (`Kernels.groupContiguous`), which takes the fast decode kernel.
public struct PackedWeights: Sendable {
    /// The layer as stored in the checkpoint.
    public let linear: PackedLinear
    /// Act-order layers: the rewritten layer and the input order it expects (nil otherwise).
    public let contiguous: (linear: PackedLinear, inputOrder: [Int32])?
    public let naturalOrder: Bool

    public init(_ linear: PackedLinear) {
        self.linear = linear
        naturalOrder = Kernels.hasNaturalGroupOrder(linear)
        if !naturalOrder, let rewritten = Kernels.groupContiguous(linear) {
            contiguous = (rewritten.reordered, rewritten.inputOrder)
        } else {
            contiguous = nil
        }
    }

    /// `[out, in]` in the stored column order (`scale · (q − zero)`).
    public func dequantized() -> [Float] { linear.dequantized() }
}
