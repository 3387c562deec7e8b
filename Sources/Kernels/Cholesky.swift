import Foundation

/// Blocked, multi-threaded Cholesky factor of an inverse, in Float (torch's GPTQ does these
/// steps in float32 too), for GPTQ: `U` upper with `H⁻¹ = Uᵀ U`.
///
/// Two triangular passes instead of torch's four (`cholesky`, `cholesky_inverse`, `cholesky`):
/// factor the index-reversed matrix `P H P = L Lᵀ`, so `H = V Vᵀ` with `V = P L P` upper, hence
/// `H⁻¹ = V⁻ᵀ V⁻¹` and `U = V⁻¹ = P L⁻¹ P` (the factor is unique).
///
/// - Cholesky: right-looking over panels of `block` columns. The diagonal block is factored and
///   inverted in Double (small); the panel below it is `A · L_kk⁻ᵀ` and the trailing update
///   `A −= P Pᵀ` (lower triangle only) — both SGEMMs, threaded over rows.
/// - `L⁻¹`: column blocks are independent (`L X = I` by block forward substitution), so they are
///   spread over threads, largest first; each step is two serial SGEMMs.
/// Each element sees the same operations whatever the thread count.
/// `referenceUpperFactorOfInverse` (torch's four passes in Double) is the oracle it is tested against.
public enum Cholesky {
    static let block = 128

    public enum Failure: Error, Equatable, CustomStringConvertible {
        /// The matrix (H + damping) is not positive definite.
        case notPositiveDefinite
        public var description: String {
            "the Hessian plus damping is not positive definite (numerically); raise --dampening"
        }
    }

    /// `U` (`[n, n]` row-major, zero below the diagonal) with `H⁻¹ = Uᵀ U`, where H is the
    /// symmetric `h` with its diagonal replaced by `diagonal` (GPTQ's dead columns and damping,
    /// without copying H).
    public static func upperFactorOfInverse(_ h: UnsafePointer<Double>, n: Int, diagonal: [Double]) throws -> [Float] {
        precondition(diagonal.count == n)
        var a = [Float](repeating: 0, count: n * n)
        var diagonalInverses = [Float](repeating: 0, count: ((n + block - 1) / block) * block * block)
        try a.withUnsafeMutableBufferPointer { a in
            try diagonalInverses.withUnsafeMutableBufferPointer { inverses in
                let a = a.baseAddress!, inverses = inverses.baseAddress!
                // Reversed H, lower triangle.
                let target = UnsafeSendable(a), hs = UnsafeSendable(UnsafeMutablePointer(mutating: h))
                parallelRows(n) { i in
                    let row = target.pointer + i * n, source = hs.pointer + (n - 1 - i) * n + (n - 1)
                    for j in 0..<i { row[j] = Float(source[-j]) }
                    row[i] = Float(diagonal[n - 1 - i])
                }
                try factorLower(a, n: n, inverses: inverses)
                var x = [Float](repeating: 0, count: n * n)
                x.withUnsafeMutableBufferPointer { x in
                    invertLower(a, n: n, inverses: inverses, into: x.baseAddress!)
                    // U[r][c] = X[n−1−r][n−1−c] for c ≥ r; the rest zero. Written over `a`.
                    let xs = UnsafeSendable(x.baseAddress!)
                    parallelRows(n) { r in
                        let row = target.pointer + r * n, source = xs.pointer + (n - 1 - r) * n + (n - 1)
                        for c in 0..<r { row[c] = 0 }
                        for c in r..<n { row[c] = source[-c] }
                    }
                }
            }
        }
        return a
    }

    /// In place: the lower triangle of `a` becomes `L` with `a = L Lᵀ` (the strict upper triangle
    /// is left undefined); `inverses[k]` (`block × block`, zero-padded) is the inverse of the k-th
    /// diagonal block of L.
    static func factorLower(_ a: UnsafeMutablePointer<Float>, n: Int, inverses: UnsafeMutablePointer<Float>) throws {
        var k0 = 0
        var panel = [Float](repeating: 0, count: n * block)
        try panel.withUnsafeMutableBufferPointer { panel in
            let panel = panel.baseAddress!
            while k0 < n {
                let k1 = min(k0 + block, n), b = k1 - k0
                let inverse = inverses + (k0 / block) * block * block
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

    /// `X = L⁻¹` (lower triangle of `x`, `[n, n]`; upper blocks untouched) by column blocks:
    /// `X_jj = L_jj⁻¹`, `X_ij = −L_ii⁻¹ · Σ_{j ≤ p < i} L_ip X_pj`.
    static func invertLower(
        _ l: UnsafePointer<Float>, n: Int, inverses: UnsafePointer<Float>, into x: UnsafeMutablePointer<Float>
    ) {
        let blocks = (n + block - 1) / block
        let output = UnsafeSendable(x)
        let lower = UnsafeSendable(UnsafeMutablePointer(mutating: l)),
            diagonal = UnsafeSendable(UnsafeMutablePointer(mutating: inverses))
        Parallel.perform(iterations: blocks) { jb in
            let x = output.pointer, l = lower.pointer, inverses = diagonal.pointer
            let j0 = jb * block, j1 = min(j0 + block, n), w = j1 - j0
            let t = UnsafeMutablePointer<Float>.allocate(capacity: block * block)
            // X[j0..<n, j-block], packed once as its rows are found (B of every step below).
            var packed = SGEMM.PackedB.allocate(k: w, n: w, capacity: n - j0)
            defer { t.deallocate(); packed.deallocate() }
            for i in 0..<w {
                for j in 0..<w { x[(j0 + i) * n + j0 + j] = inverses[jb * block * block + i * block + j] }
            }
            packed.pack(.init(x + j0 * n + j0, rowStride: n), rows: 0..<w)
            var i0 = j1
            while i0 < n {
                let i1 = min(i0 + block, n), h = i1 - i0
                t.initialize(repeating: 0, count: h * w)
                packed.k = i0 - j0
                SGEMM.multiply(
                    m: h, alpha: 1, a: .init(l + i0 * n + j0, rowStride: n), packed: packed, c: t, ldc: w,
                    threaded: false)
                for i in 0..<h { (x + (i0 + i) * n + j0).initialize(repeating: 0, count: w) }
                SGEMM.multiply(
                    m: h, n: w, k: h, alpha: -1, a: .init(inverses + (i0 / block) * block * block, rowStride: block),
                    b: .init(t, rowStride: w), c: x + i0 * n + j0, ldc: n, threaded: false)
                packed.pack(.init(x + j0 * n + j0, rowStride: n), rows: (i0 - j0)..<(i1 - j0))
                i0 = i1
            }
        }
    }

    /// `body(i)` for `i` in `0..<count`, in chunks over the cores (for O(n²) copies).
    static func parallelRows(_ count: Int, _ body: @Sendable (Int) -> Void) {
        let chunk = 64
        let chunks = (count + chunk - 1) / chunk
        Parallel.perform(iterations: chunks) { c in
            for i in (c * chunk)..<min(count, (c + 1) * chunk) { body(i) }
        }
    }

    /// U (upper, `H⁻¹ = UᵀU`) of a symmetric positive definite `h`, Float, blocked and threaded.
    public static func upperFactorOfInverse(_ h: [Double], n: Int) throws -> [Float] {
        try h.withUnsafeBufferPointer { h in
            try upperFactorOfInverse(h.baseAddress!, n: n, diagonal: (0..<n).map { h[$0 * n + $0] })
        }
    }

    /// The four-pass version (Cholesky, triangular inverse, product, Cholesky), kept as the
    /// reference the fast one is tested against.
    public static func referenceUpperFactorOfInverse(_ h: [Double], n: Int) throws -> [Double] {
        // H = L Lᵀ.
        let l = try referenceLower(h, n: n)
        // L⁻¹ (lower triangular).
        var li = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            li[i * n + i] = 1 / l[i * n + i]
            for j in 0..<i {
                var sum = 0.0
                for k in j..<i { sum -= l[i * n + k] * li[k * n + j] }
                li[i * n + j] = sum / l[i * n + i]
            }
        }
        // H⁻¹ = L⁻ᵀ L⁻¹.
        var inverse = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in 0...i {
                var sum = 0.0
                for k in i..<n { sum += li[k * n + i] * li[k * n + j] }
                inverse[i * n + j] = sum
                inverse[j * n + i] = sum
            }
        }
        // H⁻¹ = Uᵀ U with U upper: U = (chol(H⁻¹) lower)ᵀ.
        let c = try referenceLower(inverse, n: n)
        var u = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in i..<n { u[i * n + j] = c[j * n + i] } }
        return u
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
