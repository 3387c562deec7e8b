import Foundation
import Kernels
import ModelFormat

/// `H += Xᵀ X` for rows of X: `H = Σ_t x_t x_tᵀ` over the tokens routed to an expert, the Hessian
/// of its output error. In f32 through QuantEngine's SGEMM (cache-blocked, SIMD, multi-threaded):
/// the selected rows are gathered once and `Xᵀ X` updates the lower triangle, mirrored when read.
public struct HessianAccumulator: Sendable {
    public let dimension: Int
    public private(set) var samples = 0
    /// `[dimension, dimension]`; only `j ≤ i` is meaningful.
    private var lower: [Float]

    public init(dimension: Int) {
        self.dimension = dimension
        lower = HugePages.filled(Float(0), count: dimension * dimension)
    }

    /// Adds `count` rows of `x` (`[count, dimension]`, row-major) selected by `rows` (or all).
    public mutating func add(_ x: [Float], rows: [Int]? = nil) {
        let n = dimension
        let count = rows?.count ?? x.count / n
        guard count > 0 else { return }
        samples += count
        var gathered: [Float]
        if let rows {
            gathered = [Float](repeating: 0, count: count * n)
            x.withUnsafeBufferPointer { x in
                gathered.withUnsafeMutableBufferPointer { g in
                    for (position, row) in rows.enumerated() {
                        (g.baseAddress! + position * n).update(from: x.baseAddress! + row * n, count: n)
                    }
                }
            }
        } else {
            gathered = x
        }
        gathered.withUnsafeBufferPointer { g in
            lower.withUnsafeMutableBufferPointer { h in
                let rowsView = SGEMM.Matrix(g.baseAddress!, rowStride: n)
                SGEMM.multiply(
                    m: n, n: n, k: count, a: rowsView.transposed, b: rowsView, c: h.baseAddress!, ldc: n,
                    lowerOnly: true)
            }
        }
    }

    /// The full symmetric matrix in Double, as GPTQ takes it.
    public var matrix: [Double] {
        let n = dimension
        var full = HugePages.filled(0.0, count: n * n)
        for i in 0..<n {
            for j in 0...i {
                full[i * n + j] = Double(lower[i * n + j])
                full[j * n + i] = Double(lower[i * n + j])
            }
        }
        return full
    }
}
