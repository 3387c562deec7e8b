import Foundation
import Kernels

/// Round-to-nearest on GPTQ's grid, and the output error `tr((W − Q) H (W − Q)ᵀ)` computed directly: the
/// reference the error folded into GPTQ's pass is tested against, and the error of removing an expert.
extension GPTQ {
    /// Round-to-nearest with the same grid (GPTQ without error feedback).
    public func roundToNearest(weight: [Float], rows: Int, columns: Int, hessian: [Double]?, bits: Int) -> Result {
        let quantizer = GroupQuantizer(bits: bits, clipSearch: options.clipSearch)
        let groupSize = options.groupSize > 0 ? options.groupSize : columns
        let groups = (columns + groupSize - 1) / groupSize
        var codes = [UInt8](repeating: 0, count: rows * columns)
        var scales = [Float](repeating: 0, count: rows * groups), zeros = scales
        var dequantized = [Float](repeating: 0, count: rows * columns)
        weight.withUnsafeBufferPointer { w in
            for r in 0..<rows {
                for g in 0..<groups {
                    let start = g * groupSize, end = min(start + groupSize, columns)
                    let p = quantizer.parameters(
                        UnsafeBufferPointer(rebasing: w[(r * columns + start)..<(r * columns + end)]))
                    scales[r * groups + g] = p.scale
                    zeros[r * groups + g] = p.zero
                    for c in start..<end {
                        let code = quantizer.code(w[r * columns + c], p)
                        codes[r * columns + c] = UInt8(code)
                        dequantized[r * columns + c] = quantizer.dequantize(code, p)
                    }
                }
            }
        }
        let error =
            hessian.map { Self.outputError(weight, dequantized, rows: rows, columns: columns, hessian: $0) } ?? 0
        return Result(
            codes: codes, scales: scales, zeros: zeros, dequantized: dequantized, error: error,
            groupIndex: (0..<columns).map { $0 / groupSize })
    }

    /// `tr((W − Q) H (W − Q)ᵀ) = Σ_i H_ii ‖E_:i‖² + 2 Σ_{i<j} E_:i H_ij E_:j` with `E = W − Q`:
    /// the strict upper triangle of H, in column blocks, as SGEMMs `E[:, :j1] · triu(H)[:j1, J]`
    /// (Float products, Double sums). Deterministic: fixed blocking, sums in a fixed order.
    public static func outputError(_ weight: [Float], _ quantized: [Float], rows: Int, columns: Int, hessian: [Double])
        -> Double
    {
        precondition(
            weight.count == rows * columns && quantized.count == rows * columns && hessian.count == columns * columns)
        guard rows > 0, columns > 0 else { return 0 }
        let width = 256, rowChunk = 64
        let rowChunks = (rows + rowChunk - 1) / rowChunk
        var e = [Float](repeating: 0, count: rows * columns)
        for i in 0..<e.count { e[i] = weight[i] - quantized[i] }
        var y = [Float](repeating: 0, count: rows * min(width, columns))
        var partials = [Double](repeating: 0, count: rowChunks)
        var total = 0.0
        e.withUnsafeBufferPointer { e in
            y.withUnsafeMutableBufferPointer { y in
                partials.withUnsafeMutableBufferPointer { partials in
                    hessian.withUnsafeBufferPointer { h in
                        let e = e.baseAddress!, y = UnsafeSendable(y.baseAddress!),
                            h = UnsafeSendable(UnsafeMutablePointer(mutating: h.baseAddress!))
                        let partials = UnsafeSendable(partials.baseAddress!)
                        let ep = UnsafeSendable(UnsafeMutablePointer(mutating: e))
                        for j0 in stride(from: 0, to: columns, by: width) {
                            let j1 = min(j0 + width, columns), w = j1 - j0
                            // B(p, jj) = H[p, j0 + jj] where p < j0 + jj (strict upper triangle), else 0.
                            let packed = SGEMM.PackedB.allocate(k: j1, n: w)
                            defer { packed.deallocate() }
                            Parallel.perform(iterations: packed.panels) { panel in
                                let out = packed.data + panel * packed.panelStride
                                for p in 0..<j1 {
                                    for jj in 0..<SGEMM.nr {
                                        let j = j0 + panel * SGEMM.nr + jj
                                        out[p * SGEMM.nr + jj] = j < j1 && p < j ? Float(h.pointer[p * columns + j]) : 0
                                    }
                                }
                            }
                            y.pointer.initialize(repeating: 0, count: rows * w)
                            SGEMM.multiply(
                                m: rows, alpha: 1, a: .init(e, rowStride: columns), packed: packed, c: y.pointer, ldc: w
                            )
                            // Diagonal and twice the strict upper triangle, per fixed chunk of rows.
                            Parallel.perform(iterations: rowChunks) { c in
                                var sum = 0.0
                                for r in (c * rowChunk)..<min(rows, (c + 1) * rowChunk) {
                                    let er = ep.pointer + r * columns + j0, yr = y.pointer + r * w
                                    for jj in 0..<w {
                                        let value = Double(er[jj])
                                        sum +=
                                            value
                                            * (2 * Double(yr[jj]) + h.pointer[(j0 + jj) * columns + j0 + jj] * value)
                                    }
                                }
                                partials.pointer[c] = sum
                            }
                            for c in 0..<rowChunks { total += partials.pointer[c] }
                        }
                    }
                }
            }
        }
        return total
    }
}
