#if arch(x86_64)
import KernelsVNNI
#endif

extension PackedKernel {
    /// Prefill (4 or more tokens) with int8 activations on AVX-512 VNNI (`Int8GemmVNNI`): every
    /// token's activations are rounded per group as in `Int8Decode` and each code vector meets up to
    /// sixteen tokens. Where it applies, the same conditions as the int8 decode kernel plus VNNI; elsewhere
    /// prefill takes the float tile path. Outputs past the last 16-wide tile take the tile path.
    enum Int8Prefill {
        static func applies(_ operands: PackedOperands) -> Bool {
            #if arch(x86_64)
            return operands.vnni && Int8Decode.applies(operands)
            #else
            return false
            #endif
        }

        /// Tiles per chunk of the int8 prefill kernels (VNNI and AVX2): about 24 KiB of outputs
        /// (`16·tokens` floats a tile), so that a chunk's outputs for every token stay in L1 while the
        /// kernel walks group by group across the chunk's tiles; at least one tile.
        static func chunkTiles(tokens: Int) -> Int { max(1, (24 << 10) / (64 * max(1, tokens))) }

        /// `s` and `−s·z` per tile, group and lane (`2·groups·16` floats a tile: the tile path's
        /// tables), computed once per call; the caller deallocates them.
        static func tables(_ operands: PackedOperands, tiles: Int) -> UnsafeMutablePointer<Float> {
            let tableFloats = 2 * operands.groups * Decode.tile
            let tables = UnsafeMutablePointer<Float>.allocate(capacity: max(1, tiles * tableFloats))
            for tile in 0..<tiles {
                Tile.fillTable(operands, tables + tile * tableFloats, output: tile * Decode.tile, lanes: Decode.tile)
            }
            return tables
        }

        static func run(_ operands: PackedOperands) {
            #if arch(x86_64)
            let out = operands.outFeatures, groups = operands.groups
            let prepared = Int8Decode.prepare(operands)
            defer { prepared.deallocate() }
            let tiles = out / Decode.tile, tableFloats = 2 * groups * Decode.tile
            let tables = Self.tables(operands, tiles: tiles)
            defer { tables.deallocate() }
            let planeStride = operands.int8Rows * Int8Decode.planeCount(bits: operands.bits)
            let interleaved = UnsafeMutablePointer<UInt32>.allocate(capacity: operands.tokens * planeStride)
            defer { interleaved.deallocate() }
            Int8GemmVNNI.interleave(
                planes: prepared.planes, planeStride: planeStride, tokens: operands.tokens, into: interleaved)
            let shared = UnsafeSendable(tables), sharedPlanes = UnsafeSendable(interleaved)
            parallelFor(tiles, work: operands.tokens * out * operands.inFeatures) { range in
                let gemm = Int8GemmVNNI.Operands(
                    bits: operands.bits, qweight: operands.qweight, outFeatures: out, groups: groups,
                    rowsPerGroup: operands.int8RowsPerGroup, rowCount: operands.int8Rows, planes: prepared.planes,
                    planeStride: planeStride, interleaved: sharedPlanes.pointer, steps: prepared.steps,
                    groupSums: prepared.groupSums,
                    tables: shared.pointer + range.lowerBound * tableFloats, tokens: operands.tokens,
                    chunkTiles: chunkTiles(tokens: operands.tokens), y: operands.y)
                Int8GemmVNNI.run(gemm, tiles: range)
            }
            if tiles * Decode.tile < out { Tile.run(operands, outputs: (tiles * Decode.tile)..<out) }
            #else
            preconditionFailure("int8 prefill kernel needs x86-64")
            #endif
        }
    }
}
