#if arch(x86_64)
import KernelsVNNI
#endif

extension PackedKernel {
    /// Prefill (4 or more tokens) with int8 activations on AVX-512 VNNI (`Int8GemmVNNI`): every
    /// token's activations are rounded per group as in `Int8Decode` and each code vector meets four
    /// tokens. Where it applies, the same conditions as the int8 decode kernel plus VNNI; elsewhere
    /// prefill takes the float tile path. Outputs past the last 16-wide tile take the tile path.
    enum Int8Prefill {
        static func applies(_ operands: PackedOperands) -> Bool {
            #if arch(x86_64)
            return operands.vnni && Int8Decode.applies(operands)
            #else
            return false
            #endif
        }

        static func run(_ operands: PackedOperands) {
            #if arch(x86_64)
            let bits = operands.bits, out = operands.outFeatures, groups = operands.groups
            let prepared = Int8Decode.prepare(operands)
            defer { prepared.deallocate() }
            let planeCount = Int8DotVNNI.planeCount(bits: bits)
            let rowCount = bits == 3 ? operands.wordRows / 3 : operands.wordRows
            let rowsPerGroup = bits == 3 ? operands.groupSize / 32 : operands.groupSize / (32 / bits)
            let tiles = out / Decode.tile
            // `s` and `−s·z` per tile, group and lane, read once per call.
            let tableFloats = tiles * groups * Decode.tile
            let scales = UnsafeMutablePointer<Float>.allocate(capacity: 2 * tableFloats)
            defer { scales.deallocate() }
            let offsets = scales + tableFloats
            for tile in 0..<tiles {
                for g in 0..<groups {
                    for half in 0..<2 {
                        let o = tile * Decode.tile + 8 * half, at = (tile * groups + g) * Decode.tile + 8 * half
                        let s = operands.scales8(group: g, output: o), z = operands.zeros8(group: g, output: o)
                        UnsafeMutableRawPointer(scales + at).storeBytes(of: s, as: SIMD8<Float>.self)
                        UnsafeMutableRawPointer(offsets + at).storeBytes(of: -(s * z), as: SIMD8<Float>.self)
                    }
                }
            }
            let table = UnsafeSendable(scales)
            parallelFor(tiles, work: operands.tokens * out * operands.inFeatures) { range in
                let first = range.lowerBound * groups * Decode.tile
                let gemm = Int8GemmVNNI.Operands(
                    bits: bits, qweight: operands.qweight, outFeatures: out, groups: groups,
                    rowsPerGroup: rowsPerGroup, rowCount: rowCount, planes: prepared.planes,
                    planeStride: rowCount * planeCount, steps: prepared.steps, groupSums: prepared.groupSums,
                    scales: table.pointer + first, offsets: table.pointer + tableFloats + first,
                    tokens: operands.tokens, y: operands.y)
                Int8GemmVNNI.run(gemm, tiles: range)
            }
            if tiles * Decode.tile < out { Tile.run(operands, outputs: (tiles * Decode.tile)..<out) }
            #else
            preconditionFailure("int8 prefill kernel needs x86-64")
            #endif
        }
    }
}
