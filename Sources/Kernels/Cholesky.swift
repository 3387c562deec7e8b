import Foundation
import ModelFormat

/// Blocked, multi-threaded Cholesky factor for GPTQ, in Float (torch's GPTQ works in float32 too):
/// the upper factor `V` with `H = V Vᵀ`, returned with its columns scaled to a unit diagonal
/// (`V'[r][c] = V[r][c] / V[c][c]` above the diagonal, `V[c][c]` on it).
///
/// GPTQ as published needs `U` upper with `H⁻¹ = Uᵀ U` (torch: `cholesky`, `cholesky_inverse`,
/// `cholesky`, three O(n³) passes). Since `U = V⁻¹`, its error feedback `w'_k −= E_j U_jk` with
/// `E_j = (w'_j − q_j) / U_jj` is the same as `w'_j = w_j + Σ_{i<j} (w_i − q_i) V'_ij` over the
/// original weights `w` (docs/KERNELS.md, "GPTQ without the inverse"), so one factorisation
/// (n³/3 multiply-adds) is all GPTQ needs, and `Σ E_j² = (W − Q) H (W − Q)ᵀ` comes for free.
///
/// `V = P L P` where `P H P = L Lᵀ` (index-reversed H). The Cholesky is right-looking over panels
/// of `block` columns: the diagonal block is factored in Double (small); the panel below it is
/// `A · L_kk⁻ᵀ` and the trailing update `A −= P Pᵀ` (lower triangle only), both SGEMMs, threaded
/// over rows. Each element sees the same operations whatever the thread count.
/// `referenceUpperFactor` (the plain Double Cholesky) is the oracle it is tested against.
public enum Cholesky {
    static let block = 128

    public enum Failure: Error, Equatable, CustomStringConvertible {
        /// The matrix (H + damping) is not positive definite.
        case notPositiveDefinite
        public var description: String {
            "the Hessian plus damping is not positive definite (numerically); raise --dampening"
        }
    }

    /// `V'` (`[n, n]` row-major, zero below the diagonal; see the type) of the symmetric `h` with
    /// its diagonal replaced by `diagonal` (GPTQ's dead columns and damping, without copying H).
    public static func upperFactor(_ h: UnsafePointer<Double>, n: Int, diagonal: [Double]) throws -> [Float] {
        precondition(diagonal.count == n)
        var a = HugePages.filled(Float(0), count: n * n)
        try a.withUnsafeMutableBufferPointer { a in
            let a = a.baseAddress!
            // Reversed H, lower triangle.
            let target = UnsafeSendable(a), hs = UnsafeSendable(UnsafeMutablePointer(mutating: h))
            parallelRows(n) { i in
                let row = target.pointer + i * n, source = hs.pointer + (n - 1 - i) * n + (n - 1)
                for j in 0..<i { row[j] = Float(source[-j]) }
                row[i] = Float(diagonal[n - 1 - i])
            }
            try factorLower(a, n: n)
            // V[r][c] = L[n−1−r][n−1−c] (c ≥ r): the strict upper triangle is written from the
            // strict lower one (never read after), then the diagonal is reversed and the lower
            // triangle cleared.
            let lDiagonal = (0..<n).map { a[$0 * n + $0] }
            lDiagonal.withUnsafeBufferPointer { d in
                let d = UnsafeSendable(UnsafeMutablePointer(mutating: d.baseAddress!))
                parallelRows(n) { r in
                    let row = target.pointer + r * n, source = target.pointer + (n - 1 - r) * n + (n - 1)
                    for c in (r + 1)..<max(r + 1, n) { row[c] = source[-c] / d.pointer[n - 1 - c] }
                }
                parallelRows(n) { r in
                    let row = target.pointer + r * n
                    for c in 0..<r { row[c] = 0 }
                    row[r] = d.pointer[n - 1 - r]
                }
            }
        }
        return a
    }

    /// In place: the lower triangle of `a` becomes `L` with `a = L Lᵀ` (the strict upper triangle
    /// is left undefined).
    static func factorLower(_ a: UnsafeMutablePointer<Float>, n: Int) throws {
        var k0 = 0
        var panel = [Float](repeating: 0, count: n * block)
        // The inverse of the current diagonal block of L (`block` leading dimension).
        let inverse = UnsafeMutablePointer<Float>.allocate(capacity: block * block)
        defer { inverse.deallocate() }
        inverse.initialize(repeating: 0, count: block * block)
        try panel.withUnsafeMutableBufferPointer { panel in
            let panel = panel.baseAddress!
            while k0 < n {
                let k1 = min(k0 + block, n), b = k1 - k0
                try factorDiagonalBlock(a + k0 * n + k0, ldA: n, size: b, inverse: inverse)
                let m = n - k1
                if m > 0 {
                    // Panel: L[k1..<n, k0..<k1] = A[k1..<n, k0..<k1] · L_kk⁻ᵀ.
                    let source = a + k1 * n + k0
                    let copy = UnsafeSendable(panel), rows = UnsafeSendable(source)
                    parallelRows(m) { i in
                        let from = rows.pointer + i * n, to = copy.pointer + i * b
                        for j in 0..<b { to[j] = from[j]; from[j] = 0 }
                    }
                    SGEMM.multiply(
                        m: m, n: b, k: b, a: .init(panel, rowStride: b),
                        b: SGEMM.Matrix(inverse, rowStride: 1, columnStride: block), c: source, ldc: n)
                    // Trailing update, lower triangle: A[k1:, k1:] −= P Pᵀ.
                    let p = SGEMM.Matrix(source, rowStride: n)
                    SGEMM.multiply(
                        m: m, n: m, k: b, alpha: -1, a: p, b: p.transposed, c: a + k1 * n + k1, ldc: n,
                        lowerOnly: true)
                }
                k0 = k1
            }
        }
    }

    /// Unblocked Cholesky of one diagonal block (Double inside), written back to `a`, and the
    /// inverse of the factor into `inverse` (`block` leading dimension, zero above the diagonal).
    static func factorDiagonalBlock(
        _ a: UnsafeMutablePointer<Float>, ldA: Int, size b: Int,
        inverse: UnsafeMutablePointer<Float>
    ) throws {
        let l = UnsafeMutablePointer<Double>.allocate(capacity: b * b),
            li = UnsafeMutablePointer<Double>.allocate(capacity: b * b)
        defer { l.deallocate(); li.deallocate() }
        l.initialize(repeating: 0, count: b * b)
        li.initialize(repeating: 0, count: b * b)
        for i in 0..<b {
            for j in 0...i {
                let sum = Double(a[i * ldA + j]) - dot(l + i * b, l + j * b, j)
                if i == j {
                    guard sum > 0 else { throw Failure.notPositiveDefinite }
                    l[i * b + i] = sum.squareRoot()
                } else {
                    l[i * b + j] = sum / l[j * b + j]
                }
            }
        }
        // Lower-triangular inverse, row by row: li[i][j] = −(Σ_{j≤k<i} l[i][k] li[k][j]) / l[i][i].
        for i in 0..<b {
            let row = li + i * b
            for k in 0..<i {
                let factor = l[i * b + k]
                let source = li + k * b
                for j in 0...k { row[j] -= factor * source[j] }
            }
            let diagonal = l[i * b + i]
            for j in 0..<i { row[j] /= diagonal }
            row[i] = 1 / diagonal
        }
        for i in 0..<b {
            for j in 0..<b {
                if j <= i { a[i * ldA + j] = Float(l[i * b + j]) }
                inverse[i * block + j] = Float(li[i * b + j])
            }
        }
    }

    @inline(__always)
    static func dot(_ x: UnsafePointer<Double>, _ y: UnsafePointer<Double>, _ count: Int) -> Double {
        var s0 = SIMD4<Double>(), s1 = SIMD4<Double>()
        var i = 0
        while i + 8 <= count {
            s0.addProduct(
                UnsafeRawPointer(x + i).loadUnaligned(as: SIMD4<Double>.self),
                UnsafeRawPointer(y + i).loadUnaligned(as: SIMD4<Double>.self))
            s1.addProduct(
                UnsafeRawPointer(x + i + 4).loadUnaligned(as: SIMD4<Double>.self),
                UnsafeRawPointer(y + i + 4).loadUnaligned(as: SIMD4<Double>.self))
            i += 8
        }
        var sum = (s0 + s1).sum()
        while i < count {
            sum += x[i] * y[i]
            i += 1
        }
        return sum
    }

    /// `body(i)` for `i` in `0..<count`, in chunks over the cores (for O(n²) copies).
    static func parallelRows(_ count: Int, _ body: @Sendable (Int) -> Void) {
        let chunk = 64
        let chunks = (count + chunk - 1) / chunk
        Parallel.perform(iterations: chunks) { c in
            for i in (c * chunk)..<min(count, (c + 1) * chunk) { body(i) }
        }
    }

    /// `V'` (see the type) of a symmetric positive definite `h`.
    public static func upperFactor(_ h: [Double], n: Int) throws -> [Float] {
        try h.withUnsafeBufferPointer {
            try upperFactor($0.baseAddress!, n: n, diagonal: (0..<n).map { h[$0 * n + $0] })
        }
    }

    /// The plain Double version of `upperFactor`: the lower Cholesky factor of the
    /// index-reversed matrix, reversed back and column-scaled. The oracle of the tests.
    public static func referenceUpperFactor(_ h: [Double], n: Int) throws -> [Double] {
        var reversed = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0..<n { reversed[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)] } }
        let l = try referenceLower(reversed, n: n)
        var v = [Double](repeating: 0, count: n * n)
        for r in 0..<n {
            v[r * n + r] = l[(n - 1 - r) * n + (n - 1 - r)]
            for c in (r + 1)..<max(r + 1, n) {
                v[r * n + c] = l[(n - 1 - r) * n + (n - 1 - c)] / l[(n - 1 - c) * n + (n - 1 - c)]
            }
        }
        return v
    }

    /// Plain lower Cholesky factor `A = L Lᵀ` (reference path).
    static func referenceLower(_ a: [Double], n: Int) throws -> [Double] {
        var l = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in 0...i {
                var sum = a[i * n + j]
                for k in 0..<j { sum -= l[i * n + k] * l[j * n + k] }
                if i == j {
                    guard sum > 0 else { throw Failure.notPositiveDefinite }
                    l[i * n + i] = sum.squareRoot()
                } else {
                    l[i * n + j] = sum / l[j * n + j]
                }
            }
        }
        return l
    }
}
