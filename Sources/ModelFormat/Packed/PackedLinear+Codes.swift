/// Packing and unpacking of the GPTQ tensors (docs/PACKED_FORMAT.md is the specification).
///
/// Bit order. `qweight` column `o` and `qzeros` group row `g` are each one little-endian bit
/// stream over 32-bit words: value `k` occupies stream bits `[k·bits, (k+1)·bits)`, so for
/// widths 1, 2, 4, 8 a word holds `32/bits` whole values (first value in the lowest bits), and
/// for width 3 every 32 values fill 3 words with values 10 and 21 straddling word boundaries —
/// AutoGPTQ's `QuantLinear.pack` (auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py) writes
/// exactly these bits. Bits after the last value of a stream are zero.
///
/// Zeros in v1 (`checkpoint_format "gptq"`) are stored as `zero − 1`. A zero of 0 has no
/// non-negative `zero − 1`; pmq writes the bytes GPTQModel's exporter writes
/// (gptqmodel/utils/model.py `convert_gptq_v2_to_v1_format_module`), so that GPTQModel's
/// loader (`convert_gptq_v1_to_v2_format_module`, the exact inverse) recovers every zero:
/// - widths 2, 4, 8: one subtraction per word, `word = (Σ zero_k·2^(bits·k) − Σ 2^(bits·k))`
///   modulo `2^(bits·n)` over the word's `n` values (a zero of 0 borrows from the next value);
///   reading adds the same constant back.
/// - width 3: per value, `(zero − 1) mod 8` (GPTQModel's `_revert_gptq_v1_qzeros_correction`).
/// When no zero is 0 both rules equal AutoGPTQ's per-value `zero − 1`. (AutoGPTQ's own pack
/// casts −1 to `0xFFFFFFFF` and ORs it in, overwriting every later value of the word: it has no
/// correct encoding to match.)
///
/// Width 1 (pmq's extension): codes `q ∈ {0, 1}` packed like any width, no `qzeros` (the zero is
/// fixed at ½), `scale = 2·mean|w|`, so `ŵ = scale · (q − ½) = ±mean|w|`.
extension PackedLinear {
    public var maxCode: Int { (1 << bits) - 1 }

    /// Integer code of weight `[o, i]` (`0…2^bits − 1`).
    public func code(row o: Int, column i: Int) -> Int {
        precondition(o >= 0 && o < outFeatures && i >= 0 && i < inFeatures)
        return qweight.withUnsafeBufferPointer { words in
            Int(Self.field(words, start: 0, stride: outFeatures, offset: o, index: i, bits: bits))
        }
    }

    /// Zero point of output row `o` in group `g` (½ at width 1).
    public func zero(group g: Int, row o: Int) -> Float {
        precondition(g >= 0 && g < groups && o >= 0 && o < outFeatures)
        if bits == 1 { return 0.5 }
        return qzeros.withUnsafeBufferPointer {
            Float(Self.storedZero($0, rowStart: g * zeroWordsPerGroup, index: o, count: outFeatures, bits: bits))
        }
    }

    /// Scale of output row `o` in group `g`, widened from its fp16 bits.
    public func scale(group g: Int, row o: Int) -> Float {
        precondition(g >= 0 && g < groups && o >= 0 && o < outFeatures)
        return Float(float16Bits: scales[g * outFeatures + o])
    }

    /// Every code, `[out, in]` row-major.
    public func unpackedCodes() -> [Int] {
        var codes = [Int](repeating: 0, count: outFeatures * inFeatures)
        let out = outFeatures, inputs = inFeatures, bits = bits
        qweight.withUnsafeBufferPointer { words in
            codes.withUnsafeMutableBufferPointer { codes in
                for o in 0..<out {
                    for i in 0..<inputs {
                        codes[o * inputs + i] = Int(
                            Self.field(words, start: 0, stride: out, offset: o, index: i, bits: bits))
                    }
                }
            }
        }
        return codes
    }

    /// Every zero, `[groups, out]` row-major (½ everywhere at width 1).
    public func unpackedZeros() -> [Float] {
        if bits == 1 { return [Float](repeating: 0.5, count: groups * outFeatures) }
        var zeros = [Float](repeating: 0, count: groups * outFeatures)
        let out = outFeatures, perGroup = zeroWordsPerGroup, bits = bits
        qzeros.withUnsafeBufferPointer { words in
            zeros.withUnsafeMutableBufferPointer { zeros in
                for g in 0..<groups {
                    for o in 0..<out {
                        zeros[g * out + o] = Float(
                            Self.storedZero(words, rowStart: g * perGroup, index: o, count: out, bits: bits))
                    }
                }
            }
        }
        return zeros
    }

    /// Every scale, `[groups, out]` row-major, as Float.
    public func unpackedScales() -> [Float] { scales.map(Float.init(float16Bits:)) }

    /// `Ŵ[o, i] = scale[g_idx[i], o] · (q[o, i] − zero[g_idx[i], o])`, `[out, in]` row-major:
    /// the plain scalar reference that fast kernels are tested against.
    public func dequantized() -> [Float] {
        let codes = unpackedCodes(), zeros = unpackedZeros(), scales = unpackedScales()
        let out = outFeatures, inputs = inFeatures
        var result = [Float](repeating: 0, count: out * inputs)
        codes.withUnsafeBufferPointer { codes in
            zeros.withUnsafeBufferPointer { zeros in
                scales.withUnsafeBufferPointer { scales in
                    gIdx.withUnsafeBufferPointer { gIdx in
                        result.withUnsafeMutableBufferPointer { result in
                            for o in 0..<out {
                                for i in 0..<inputs {
                                    let g = Int(gIdx[i])
                                    result[o * inputs + i] =
                                        scales[g * out + o] * (Float(codes[o * inputs + i]) - zeros[g * out + o])
                                }
                            }
                        }
                    }
                }
            }
        }
        return result
    }

    /// Packs codes `[out, in]` with zeros and scales `[groups, out]` (the checkpoint's order).
    public init<Code: BinaryInteger>(
        packingCodes codes: [Code], zeros: [Float], scales: [Float], groupIndex: [Int32],
        outFeatures out: Int, inFeatures inputs: Int, bits: Int, groupSize: Int
    ) {
        let layout = PackedLayout(outFeatures: out, inFeatures: inputs, bits: bits, groupSize: groupSize)
        let groups = layout.groups
        precondition(codes.count == out * inputs && groupIndex.count == inputs)
        precondition(zeros.count == groups * out && scales.count == groups * out)
        let maxCode = (1 << bits) - 1
        let wordRows = (inputs * bits + 31) / 32
        var qweight = [UInt32](repeating: 0, count: wordRows * out)
        codes.withUnsafeBufferPointer { codes in
            qweight.withUnsafeMutableBufferPointer { words in
                for o in 0..<out {
                    for i in 0..<inputs {
                        let code = Int(codes[o * inputs + i])
                        precondition(code >= 0 && code <= maxCode, "code \(code) out of range at [\(o), \(i)]")
                        Self.setField(words, stride: out, offset: o, index: i, bits: bits, value: UInt32(code))
                    }
                }
            }
        }
        var qzeros: [UInt32] = []
        if bits != 1 {
            let perGroup = (out * bits + 31) / 32
            qzeros = [UInt32](repeating: 0, count: groups * perGroup)
            qzeros.withUnsafeMutableBufferPointer { words in
                for g in 0..<groups {
                    let row = UnsafeMutableBufferPointer(rebasing: words[(g * perGroup)..<((g + 1) * perGroup)])
                    for o in 0..<out {
                        let zero = zeros[g * out + o]
                        precondition(
                            zero == zero.rounded() && zero >= 0 && zero <= Float(maxCode),
                            "zero \(zero) is not an integer in 0…\(maxCode) at [\(g), \(o)]")
                        // Width 3 stores (zero − 1) mod 8 per value; 2/4/8 store zero here and
                        // subtract the per-word constant below.
                        let stored = bits == 3 ? (UInt32(zero) &+ 7) & 7 : UInt32(zero)
                        Self.setField(row, stride: 1, offset: 0, index: o, bits: bits, value: stored)
                    }
                    if bits != 3 {
                        for w in 0..<perGroup {
                            let (constant, mask) = Self.zeroOffset(word: w, count: out, bits: bits)
                            row[w] = (row[w] &- constant) & mask
                        }
                    }
                }
            }
        } else {
            precondition(zeros.allSatisfy { $0 == 0.5 }, "width 1 has the fixed zero ½")
        }
        self.init(
            outFeatures: out, inFeatures: inputs, bits: bits, groupSize: groupSize,
            qweight: qweight, qzeros: qzeros, scales: scales.map(\.float16Bits), gIdx: groupIndex)
    }

    /// Throws when the tensors' sizes disagree with the shape, width and group size, or a `g_idx`
    /// entry names no group.
    public func validate() throws {
        func fail(_ tensor: String?, _ problem: String) -> PackedFormatError {
            PackedFormatError(tensor: tensor, problem)
        }
        guard [1, 2, 3, 4, 8].contains(bits) else {
            throw fail(nil, "unsupported width \(bits) (expected 1, 2, 3, 4 or 8)")
        }
        guard outFeatures > 0, inFeatures > 0 else { throw fail(nil, "empty shape [\(outFeatures), \(inFeatures)]") }
        guard groupSize > 0 else { throw fail(nil, "group size \(groupSize) is not positive") }
        guard qweight.count == wordRows * outFeatures else {
            throw fail("qweight", "has \(qweight.count) words, expected \(wordRows) × \(outFeatures)")
        }
        guard qzeros.count == groups * zeroWordsPerGroup else {
            throw fail("qzeros", "has \(qzeros.count) words, expected \(groups) × \(zeroWordsPerGroup)")
        }
        guard scales.count == groups * outFeatures else {
            throw fail("scales", "has \(scales.count) values, expected \(groups) × \(outFeatures)")
        }
        guard gIdx.count == inFeatures else { throw fail("g_idx", "has \(gIdx.count) values, expected \(inFeatures)") }
        if let bad = gIdx.firstIndex(where: { $0 < 0 || Int($0) >= groups }) {
            throw fail("g_idx", "entry \(bad) is \(gIdx[bad]), outside 0..<\(groups)")
        }
    }

    // MARK: bit streams

    /// Value `index` of the bit stream in column `offset` of a `[words, stride]` word matrix.
    @inline(__always)
    static func field(_ words: UnsafeBufferPointer<UInt32>, start: Int, stride: Int, offset: Int, index: Int, bits: Int)
        -> UInt32
    {
        let bit = index * bits
        let word = bit >> 5, shift = bit & 31
        let mask: UInt32 = bits == 32 ? ~0 : (1 << UInt32(bits)) - 1
        var value = words[start + word * stride + offset] >> UInt32(shift)
        if shift + bits > 32 { value |= words[start + (word + 1) * stride + offset] << UInt32(32 - shift) }
        return value & mask
    }

    @inline(__always)
    static func setField(
        _ words: UnsafeMutableBufferPointer<UInt32>, stride: Int, offset: Int, index: Int, bits: Int, value: UInt32
    ) {
        let bit = index * bits
        let word = bit >> 5, shift = bit & 31
        words[word * stride + offset] |= value << UInt32(shift)
        if shift + bits > 32 { words[(word + 1) * stride + offset] |= value >> UInt32(32 - shift) }
    }

    /// The v1 offset `Σ 2^(bits·k)` over the values of zero word `word` and the mask of their bits
    /// (widths 2, 4, 8, where words hold whole values).
    @inline(__always)
    static func zeroOffset(word: Int, count: Int, bits: Int) -> (constant: UInt32, mask: UInt32) {
        let perWord = 32 / bits
        let values = min(perWord, count - word * perWord)
        var constant: UInt32 = 0
        for k in 0..<values { constant |= 1 << UInt32(bits * k) }
        let mask: UInt32 = values == perWord ? ~0 : (1 << UInt32(bits * values)) - 1
        return (constant, mask)
    }

    /// Zero of value `index` in one group's row of v1 `qzeros` (widths 2, 3, 4, 8).
    @inline(__always)
    static func storedZero(_ words: UnsafeBufferPointer<UInt32>, rowStart: Int, index: Int, count: Int, bits: Int)
        -> Int
    {
        if bits == 3 {
            return Int((field(words, start: rowStart, stride: 1, offset: 0, index: index, bits: 3) &+ 1) & 7)
        }
        let perWord = 32 / bits, word = index / perWord
        let (constant, mask) = zeroOffset(word: word, count: count, bits: bits)
        let restored = (words[rowStart + word] &+ constant) & mask
        return Int((restored >> UInt32(bits * (index % perWord))) & ((1 << UInt32(bits)) - 1))
    }
}

/// A packed linear whose tensors disagree with its declared shape or width.
public struct PackedFormatError: Error, Equatable, CustomStringConvertible {
    /// The tensor at fault (`qweight`, `qzeros`, `scales`, `g_idx`), when one is.
    public var tensor: String?
    public var problem: String
    public init(tensor: String?, _ problem: String) {
        self.tensor = tensor
        self.problem = problem
    }
    public var description: String { tensor.map { "\($0): \(problem)" } ?? problem }
}
