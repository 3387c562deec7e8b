import Foundation
import ModelFormat

#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Linear layers straight from packed GPTQ weights (`PackedLinear`, AutoGPTQ v1 layout), never
/// materialising a float copy of the matrix:
/// `y[t, o] = Σ_i x[t, i] · scale[g(i), o] · (q[o, i] − zero[g(i), o])` (+ bias[o]).
///
/// `qweight` is `[wordRows, out]`: the words of one word row for all outputs are contiguous, so every
/// kernel works on tiles of outputs, SIMD across outputs (8 lanes), walking down the word rows.
/// Scales and zeros of a group are then contiguous per tile too.
///
/// - Decode (1–3 tokens, one at a time; `g_idx` in natural order, groups made of whole words):
///   per group, `Σ_i x_i·s·(q_i − z) = s·(Σ_i x_i·q_i − z·Σ_i x_i)`, so the hot loop is one mask,
///   one int→float conversion and one FMA per code. A code is masked *in place*
///   (`w & (mask << position)`, worth `q·2^position`) and `x_i` is scaled by `2^−position` once per
///   call, which saves the shift. See `PackedKernels+Decode.swift`.
/// - Everything else (4 or more tokens, act-order `g_idx`, groups that split a word, outputs
///   past the last 16-wide tile): tiles of 16 outputs × 8 word rows of inputs are dequantized into
///   per-thread scratch once and reused for every token (`PackedKernels+Tile.swift`).
/// - Act-order layers can be rewritten at load so that their groups are contiguous
///   (`groupContiguous`, `PackedKernels+Order.swift`) and then take the decode kernel.
///
/// Int→float and fp16→float conversions go through `SIMDConvert` (one `vcvtdq2ps`, `vcvtph2ps`):
/// Swift 6.3 inlines the generic `SIMD8<Float>` initialisers or calls them out of line depending on
/// the size of the caller, and that decision changed with unrelated edits (the float decode sweep
/// once became 3.5× slower that way). Check the disassembly for calls after changes.
///
/// Measured (`pmq bench packed`, [14336, 4096], group 128, 2 Zen 3 cores, noisy shared host):
/// the decode kernel is compute-bound at ~3 vector instructions per 8 multiply-adds, so every
/// width takes ~2–3 ms (4 bits: 2.5–3.2× faster than bf16, 8 bits: 75–95% of memory bandwidth);
/// 64-token prefill runs at ~2× the float kernels' GFLOP/s.
extension Kernels {
    /// `x · Ŵᵀ (+ bias)` for `tokens` rows of `x` (`[tokens, in]`) with packed weights.
    /// `naturalOrder`: whether `g_idx[i] == i / groupSize` (see `hasNaturalGroupOrder`); pass the
    /// value checked once at load, or leave it `nil` to have it checked here (O(in)).
    /// `int8Activations`: see `Kernels.int8Activations` (whose value it takes by default).
    public static func linear(
        _ x: [Float], tokens: Int, packed: PackedLinear, bias: [Float]? = nil,
        naturalOrder: Bool? = nil, int8Activations: Bool = Kernels.int8Activations
    ) -> [Float] {
        precondition(x.count == tokens * packed.inFeatures, "x is not [tokens, in]")
        precondition(bias == nil || bias!.count == packed.outFeatures)
        if useReferenceKernels { return referenceLinear(x, tokens: tokens, packed: packed, bias: bias) }
        let natural = naturalOrder ?? hasNaturalGroupOrder(packed)
        var y = [Float](repeating: 0, count: tokens * packed.outFeatures)
        if tokens == 0 { return y }
        x.withUnsafeBufferPointer { x in
            y.withUnsafeMutableBufferPointer { y in
                withOperands(
                    [packed], x: [x.baseAddress!], tokens: tokens, y: y.baseAddress!, naturalOrder: natural,
                    int8Activations: int8Activations
                ) { PackedKernel.run($0[0]) }
            }
        }
        if let bias { addBias(&y, bias, tokens: tokens) }
        return y
    }

    /// Whether `g_idx[i] == i / groupSize` for every input (no act-order permutation): the
    /// condition for the decode kernel's per-group algebra. Check once at load.
    public static func hasNaturalGroupOrder(_ packed: PackedLinear) -> Bool {
        guard packed.gIdx.count == packed.inFeatures else { return false }
        let groupSize = packed.groupSize
        return packed.gIdx.withUnsafeBufferPointer { g in
            var i = 0
            while i < g.count {
                if Int(g[i]) != i / groupSize { return false }
                i += 1
            }
            return true
        }
    }

    /// The obviously right packed linear layer: every code decoded with plain shifts from its
    /// word(s), every weight formed as `scale · (q − zero)`, one scalar loop. The reference the
    /// fast kernels are tested against.
    public static func referenceLinear(_ x: [Float], tokens: Int, packed: PackedLinear, bias: [Float]? = nil) -> [Float]
    {
        precondition(x.count == tokens * packed.inFeatures)
        let out = packed.outFeatures, inputs = packed.inFeatures
        var y = [Float](repeating: 0, count: tokens * out)
        for o in 0..<out {
            var w = [Float](repeating: 0, count: inputs)
            for i in 0..<inputs {
                let g = Int(packed.gIdx[i])
                w[i] =
                    referenceScale(packed, group: g, output: o)
                    * (Float(referenceCode(packed, output: o, input: i)) - referenceZero(packed, group: g, output: o))
            }
            for t in 0..<tokens {
                var sum: Float = 0
                for i in 0..<inputs { sum += x[t * inputs + i] * w[i] }
                y[t * out + o] = sum + (bias?[o] ?? 0)
            }
        }
        return y
    }

    /// `bits` bits starting at bit `position` of a little-endian stream of 32-bit words
    /// (`word(k)` is the k-th word), straddling into the next word when needed.
    static func referenceBits(_ bits: Int, at position: Int, _ word: (Int) -> UInt32) -> UInt32 {
        let index = position / 32, offset = position % 32
        var value = UInt64(word(index)) >> UInt64(offset)
        if offset + bits > 32 { value |= UInt64(word(index + 1)) << UInt64(32 - offset) }
        return UInt32(value & ((1 << UInt64(bits)) - 1))
    }

    /// Code `q[o, i]`: bits `i·bits …` of output `o`'s column of `qweight`.
    static func referenceCode(_ packed: PackedLinear, output o: Int, input i: Int) -> UInt32 {
        referenceBits(packed.bits, at: i * packed.bits) { packed.qweight[$0 * packed.outFeatures + o] }
    }

    /// `zero[g, o]`, undoing v1's `zero − 1` the way GPTQModel's loader does (see
    /// `PackedLinear+Codes.swift`): widths 2, 4, 8 add `Σ 2^(bits·k)` to the whole word (a zero of 0
    /// was stored by borrowing from the next value), width 3 adds 1 modulo 8 per value; width 1 has
    /// a fixed zero of ½.
    static func referenceZero(_ packed: PackedLinear, group g: Int, output o: Int) -> Float {
        let bits = packed.bits
        if bits == 1 { return 0.5 }
        let row = g * packed.zeroWordsPerGroup
        if bits == 3 {
            return Float((referenceBits(3, at: o * 3) { packed.qzeros[row + $0] } + 1) & 7)
        }
        let perWord = 32 / bits, index = o / perWord
        let values = min(perWord, packed.outFeatures - index * perWord)
        var constant: UInt64 = 0
        for k in 0..<values { constant += 1 << UInt64(bits * k) }
        let restored = (UInt64(packed.qzeros[row + index]) + constant) & ((1 << UInt64(bits * values)) - 1)
        return Float((restored >> UInt64(bits * (o % perWord))) & ((1 << UInt64(bits)) - 1))
    }

    /// `scale[g, o]` from its fp16 bit pattern.
    static func referenceScale(_ packed: PackedLinear, group g: Int, output o: Int) -> Float {
        Float(Float16(bitPattern: packed.scales[g * packed.outFeatures + o]))
    }
}

/// Raw pointers and shape of one packed linear call, handed to worker threads (each writes
/// disjoint outputs of `y`).
struct PackedOperands: @unchecked Sendable {
    let outFeatures: Int
    let inFeatures: Int
    let bits: Int
    let groupSize: Int
    let groups: Int
    let wordRows: Int
    let zeroWordsPerGroup: Int
    var tokens: Int
    var x: UnsafePointer<Float>
    let qweight: UnsafePointer<UInt32>
    let qzeros: UnsafePointer<UInt32>?
    let scales: UnsafePointer<UInt16>
    let gIdx: UnsafePointer<Int32>
    var y: UnsafeMutablePointer<Float>
    let naturalOrder: Bool
    /// Decode through `PackedKernel.Int8Decode` where it applies.
    var int8Activations = false
    /// The int8 kernels may use `KernelsVNNI` (`CPUFeatures.useVNNI`, read once per call).
    var vnni = false
    /// The AVX2 int8 decode (`Int8Decode.runGroups`) stores its first group's terms into `y` instead of
    /// adding them: `y` is a part's uninitialized partial buffer, not zeroed first.
    var overwrite = false

    init(
        packed: PackedLinear, x: UnsafePointer<Float>, tokens: Int, qweight: UnsafePointer<UInt32>,
        qzeros: UnsafePointer<UInt32>?, scales: UnsafePointer<UInt16>, gIdx: UnsafePointer<Int32>,
        y: UnsafeMutablePointer<Float>, naturalOrder: Bool
    ) {
        precondition(
            packed.qweight.count == packed.wordRows * packed.outFeatures, "qweight is not [⌈in·bits/32⌉, out]")
        precondition(
            packed.qzeros.count == packed.groups * packed.zeroWordsPerGroup,
            "qzeros is not [groups, ⌈out·bits/32⌉]")
        precondition(packed.scales.count == packed.groups * packed.outFeatures, "scales is not [groups, out]")
        precondition(packed.gIdx.count == packed.inFeatures, "g_idx is not [in]")
        outFeatures = packed.outFeatures
        inFeatures = packed.inFeatures
        bits = packed.bits
        groupSize = packed.groupSize
        groups = packed.groups
        wordRows = packed.wordRows
        zeroWordsPerGroup = packed.zeroWordsPerGroup
        self.tokens = tokens
        self.x = x
        self.qweight = qweight
        self.qzeros = qzeros
        self.scales = scales
        self.gIdx = gIdx
        self.y = y
        self.naturalOrder = naturalOrder
    }

    /// The operands of token `t` alone.
    func token(_ t: Int) -> PackedOperands {
        var single = self
        single.tokens = 1
        single.x = x + t * inFeatures
        single.y = y + t * outFeatures
        return single
    }

    /// Codes per block: a block is the smallest run of whole words holding whole codes (one word,
    /// or three words of 32 codes at 3 bits).
    var valuesPerBlock: Int { bits == 3 ? 32 : 32 / bits }
    var wordsPerBlock: Int { bits == 3 ? 3 : 1 }

    /// Zero word `index` of group `g` with v1's `zero − 1` undone (widths 2, 4, 8): plus
    /// `Σ 2^(bits·k)` over the word's values, carries included (see `Kernels.referenceZero`).
    @inline(__always)
    func restoredZeroWord(group g: Int, index: Int) -> UInt32 { restoredZeroWord(bits: bits, group: g, index: index) }

    /// The same with the width given (a constant in the width-specialised kernels).
    @inline(__always)
    func restoredZeroWord(bits: Int, group g: Int, index: Int) -> UInt32 {
        let perWord = 32 / bits
        let values = min(perWord, outFeatures - index * perWord)
        let ones: UInt32 = bits == 2 ? 0x5555_5555 : bits == 4 ? 0x1111_1111 : 0x0101_0101
        let mask: UInt32 = values == perWord ? ~0 : (1 << UInt32(bits * values)) - 1
        return (qzeros![g * zeroWordsPerGroup + index] &+ (ones & mask)) & mask
    }

    /// `zero[g, o]` (½ at width 1).
    @inline(__always)
    func zero(group g: Int, output o: Int) -> Float {
        guard bits != 1, let qzeros else { return 0.5 }
        let mask = UInt32((1 << bits) - 1)
        if bits == 3 {
            let position = o * 3, index = position / 32, offset = position % 32
            let row = qzeros + g * zeroWordsPerGroup
            var value = UInt64(row[index]) >> UInt64(offset)
            if offset + 3 > 32 { value |= UInt64(row[index + 1]) << UInt64(32 - offset) }
            return Float((UInt32(truncatingIfNeeded: value) &+ 1) & 7)
        }
        let perWord = 32 / bits
        return Float((restoredZeroWord(group: g, index: o / perWord) >> UInt32(bits * (o % perWord))) & mask)
    }

    /// Zeros of outputs `o ..< o + 8` of group `g` (`o` a multiple of 8, all eight outputs present).
    @inline(__always)
    func zeros8(group g: Int, output o: Int) -> SIMD8<Float> { zeros8(bits: bits, group: g, output: o) }

    /// The same with the width given (a constant in the width-specialised kernels).
    @inline(__always)
    func zeros8(bits: Int, group g: Int, output o: Int) -> SIMD8<Float> {
        guard bits != 1, let qzeros else { return SIMD8(repeating: 0.5) }
        let mask = SIMD8<UInt32>(repeating: UInt32((1 << bits) - 1))
        let codes: SIMD8<UInt32>
        switch bits {
        case 3:
            // Eight codes span 24 bits from `position`, possibly across two words.
            let position = o * 3, index = position / 32, offset = position % 32
            let row = qzeros + g * zeroWordsPerGroup
            var stream = UInt64(row[index])
            if index + 1 < zeroWordsPerGroup { stream |= UInt64(row[index + 1]) << 32 }
            let low = UInt32(truncatingIfNeeded: stream >> UInt64(offset))
            codes = ((SIMD8(repeating: low) &>> SIMD8(0, 3, 6, 9, 12, 15, 18, 21)) &+ 1) & mask
        case 8:
            let low = restoredZeroWord(bits: bits, group: g, index: o / 4),
                high = restoredZeroWord(bits: bits, group: g, index: o / 4 + 1)
            codes = (SIMD8(low, low, low, low, high, high, high, high) &>> SIMD8(0, 8, 16, 24, 0, 8, 16, 24)) & mask
        default:
            let perWord = 32 / bits, b = UInt32(bits)
            let word = restoredZeroWord(bits: bits, group: g, index: o / perWord) >> UInt32(bits * (o % perWord))
            codes = (SIMD8(repeating: word) &>> SIMD8(0, b, 2 * b, 3 * b, 4 * b, 5 * b, 6 * b, 7 * b)) & mask
        }
        return SIMDConvert.float(unsafeBitCast(codes, to: SIMD8<Int32>.self))
    }

    /// Scales of outputs `o ..< o + 8` of group `g` (all eight must exist).
    @inline(__always)
    func scales8(group g: Int, output o: Int) -> SIMD8<Float> {
        SIMDConvert.float(halves: UnsafeRawPointer(scales + g * outFeatures + o))
    }

    @inline(__always)
    func scale(group g: Int, output o: Int) -> Float {
        Float(Float16(bitPattern: scales[g * outFeatures + o]))
    }
}

/// Int32 and fp16 lanes to f32 as one instruction each (`vcvtdq2ps`, `vcvtph2ps`). Swift 6.3 calls the
/// generic SIMD initialisers out of line in large non-generic functions (the 3-bit decode's flush:
/// 1.8% and 0.6% of a 3-bit model's decode in `perf`); these stay inline everywhere.
enum SIMDConvert {
    @inline(__always)
    static func float(_ v: SIMD8<Int32>) -> SIMD8<Float> {
        #if arch(x86_64)
        return unsafeBitCast(_mm256_cvtepi32_ps(unsafeBitCast(v, to: __m256i.self)), to: SIMD8<Float>.self)
        #else
        return SIMD8<Float>(v)
        #endif
    }

    /// Eight fp16 values at `pointer` (no alignment needed).
    @inline(__always)
    static func float(halves pointer: UnsafeRawPointer) -> SIMD8<Float> {
        #if arch(x86_64)
        return unsafeBitCast(_mm256_cvtph_ps(pointer.loadUnaligned(as: __m128i.self)), to: SIMD8<Float>.self)
        #else
        return SIMD8<Float>(pointer.loadUnaligned(as: SIMD8<Float16>.self))
        #endif
    }
}

/// Dispatch and threading for the packed kernels.
enum PackedKernel {
    /// Work (multiply-adds) above which a call is split across cores: ~100 µs here.
    static let parallelWork = 1 << 20

    static func run(_ operands: PackedOperands) {
        let out = operands.outFeatures
        if operands.tokens < Decode.maxTokens && Decode.applies(operands) {
            // One token at a time (the decode kernel is compute-bound, so re-reading the weights
            // for a second or third token costs less than the tile path's dequantization).
            for t in 0..<operands.tokens {
                let single = operands.token(t)
                // Tiles of 16 outputs through the decode kernel; the last `out % 16` through the tile path.
                let tiles = out / Decode.tile
                if Int8Decode.applies(single) {
                    let prepared = Int8Decode.prepare(single)
                    defer { prepared.deallocate() }
                    splitGroups(single) { part, groups in
                        Int8Decode.run(part, prepared: prepared, groups: groups, tiles: 0..<tiles)
                    }
                } else {
                    let prepared = Decode.prepare(single)
                    defer { prepared.deallocate() }
                    splitGroups(single) { part, groups in
                        Decode.run(part, prepared: prepared, groups: groups, tiles: 0..<tiles)
                    }
                }
                if tiles * Decode.tile < out {
                    Tile.run(single, outputs: (tiles * Decode.tile)..<out)
                }
            }
            return
        }
        if Int8Prefill.applies(operands) { return Int8Prefill.run(operands) }
        if Int8PrefillAVX2.applies(operands) { return Int8PrefillAVX2.run(operands) }
        let tiles = (out + Tile.width - 1) / Tile.width
        parallelFor(tiles, work: operands.tokens * out * operands.inFeatures) { range in
            Tile.run(operands, outputs: (range.lowerBound * Tile.width)..<min(range.upperBound * Tile.width, out))
        }
    }

    /// The decode kernels' threading: each worker takes a contiguous range of groups for all
    /// outputs, so that it streams whole word rows (`qweight` is `[wordRows, out]`) from one place
    /// in memory instead of short pieces of every row (splitting the outputs read 256 bytes of each
    /// 4 KB row of a [1024, 3584] matrix per worker). Workers add into their own zeroed copy of `y`,
    /// summed into `y` in order at the end (`addParts`). Small calls run in one piece, straight into `y`.
    static func splitGroups(
        _ operands: PackedOperands, _ body: @escaping @Sendable (PackedOperands, Range<Int>) -> Void
    ) {
        let groups = operands.groups, out = operands.outFeatures
        let parts = groupParts(operands)
        guard parts > 1 else { return body(operands, 0..<groups) }
        let partial = UnsafeMutablePointer<Float>.allocate(capacity: parts * out)
        defer { partial.deallocate() }
        let shared = UnsafeSendable(partial)
        Parallel.perform(iterations: parts) { c in
            var part = operands
            part.y = shared.pointer + c * out
            part.y.initialize(repeating: 0, count: out) // zeroed by the core that fills it
            body(part, Self.groups(part: c, of: parts, operands))
        }
        addParts(operands.y, partial, parts: parts, count: out)
    }

    /// How many contiguous group ranges `splitGroups` cuts a decode call into: 1 (straight into
    /// `y`, on the calling thread) for small calls, else up to four per core.
    static func groupParts(_ operands: PackedOperands) -> Int {
        guard operands.outFeatures * operands.inFeatures >= parallelWork, Parallel.cores > 1, operands.groups > 1 else {
            return 1
        }
        return min(operands.groups, 4 * Parallel.cores)
    }

    /// Groups of part `part` of `parts`.
    static func groups(part: Int, of parts: Int, _ operands: PackedOperands) -> Range<Int> {
        (part * operands.groups / parts)..<((part + 1) * operands.groups / parts)
    }

    /// Runs `body` over `count` items in contiguous ranges: on all cores when `work` is large enough,
    /// with several ranges per core so that a busy core does not hold the others up.
    static func parallelFor(_ count: Int, work: Int, _ body: @escaping @Sendable (Range<Int>) -> Void) {
        guard count > 0 else { return }
        guard work >= parallelWork, Parallel.cores > 1, count > 1 else { return body(0..<count) }
        let chunks = min(count, 8 * Parallel.cores)
        Parallel.perform(iterations: chunks) { c in
            body((c * count / chunks)..<((c + 1) * count / chunks))
        }
    }
}
