@testable import Kernels

import Testing

/// The blocked Float factor `V'` of H against the plain Double Cholesky
/// (`Cholesky.referenceUpperFactor`), on sizes around the 128-column panel; and the identity that
/// lets GPTQ use it instead of the factor of H⁻¹.
@Suite struct CholeskyTests {
    /// Float32 factorisation of H = AᵀA + n·I (condition number ≲ n): measured ≤ 1e-7 of the
    /// largest entry up to n = 300; allow 2e-5.
    static let tolerance = 2e-5

    static func spd(_ n: Int) -> [Double] {
        var state = UInt64(n) * 7919
        func next() -> Double {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Double(Int64(bitPattern: state) >> 11) / Double(1 << 52)
        }
        let a = (0..<(n * n)).map { _ in next() }
        var h = [Double](repeating: 0, count: n * n)
        for k in 0..<n {
            for i in 0..<n where a[k * n + i] != 0 { for j in 0..<n { h[i * n + j] += a[k * n + i] * a[k * n + j] } }
        }
        for i in 0..<n { h[i * n + i] += Double(n) }
        return h
    }

    @Test(arguments: [1, 7, 130, 300])
    func matchesTheReference(n: Int) throws {
        let h = Self.spd(n)
        let fast = try Cholesky.upperFactor(h, n: n)
        let reference = try Cholesky.referenceUpperFactor(h, n: n)
        let scale = reference.map(abs).max()!
        let worst = zip(fast, reference).map { abs(Double($0) - $1) }.max()!
        #expect(worst <= Self.tolerance * scale, "max difference \(worst / scale) of the largest entry")
        for i in 0..<n { for j in 0..<i { #expect(fast[i * n + j] == 0) } }
    }

    @Test func replacedDiagonalIsUsedAndHIsNotCopied() throws {
        let n = 150
        var h = Self.spd(n)
        let diagonal = (0..<n).map { h[$0 * n + $0] * 1.5 }
        let fast = try h.withUnsafeBufferPointer {
            try Cholesky.upperFactor($0.baseAddress!, n: n, diagonal: diagonal)
        }
        for i in 0..<n { h[i * n + i] = diagonal[i] }
        let reference = try Cholesky.referenceUpperFactor(h, n: n)
        let scale = reference.map(abs).max()!
        #expect(zip(fast, reference).allSatisfy { abs(Double($0) - $1) <= Self.tolerance * scale })
    }

    @Test(arguments: [1, 7, 130, 300])
    func notPositiveDefiniteThrows(n: Int) {
        var h = Self.spd(n)
        h[(n / 2) * n + n / 2] = -1
        #expect(throws: Cholesky.Failure.notPositiveDefinite) { try Cholesky.upperFactor(h, n: n) }
    }

    @Test func resultsDoNotDependOnTheThreadCount() throws {
        let n = 300
        let h = Self.spd(n)
        let threaded = try Cholesky.upperFactor(h, n: n)
        let serial = try Parallel.$serial.withValue(true) { try Cholesky.upperFactor(h, n: n) }
        #expect(threaded == serial)
    }

    /// `V'` gives `V` (`V[r][c] = V'[r][c] · V'[c][c]`, `H = V Vᵀ`), and `V⁻¹` is the upper factor of H⁻¹
    /// that published GPTQ computes (torch's `cholesky(cholesky_inverse(cholesky(H)), upper=True)`),
    /// here in Double by four plain passes.
    @Test func theFactorIsTheInverseOfTheFactorOfTheInverse() throws {
        let n = 37
        let h = Self.spd(n)
        let scaled = try Cholesky.referenceUpperFactor(h, n: n)
        var v = [Double](repeating: 0, count: n * n)
        for r in 0..<n {
            for c in r..<n { v[r * n + c] = c == r ? scaled[r * n + r] : scaled[r * n + c] * scaled[c * n + c] }
        }
        var product = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0..<n { for k in 0..<n { product[i * n + j] += v[i * n + k] * v[j * n + k] } } }
        let hScale = h.map(abs).max()!
        #expect(zip(product, h).allSatisfy { abs($0 - $1) <= 1e-12 * hScale })
        // H⁻¹ = Uᵀ U with U upper, from Cholesky (lower), its inverse, the product and Cholesky again.
        let l = try Cholesky.referenceLower(h, n: n)
        var li = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            li[i * n + i] = 1 / l[i * n + i]
            for j in 0..<i {
                var sum = 0.0
                for k in j..<i { sum -= l[i * n + k] * li[k * n + j] }
                li[i * n + j] = sum / l[i * n + i]
            }
        }
        var inverse = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in 0..<n { for k in max(i, j)..<n { inverse[i * n + j] += li[k * n + i] * li[k * n + j] } }
        }
        let c = try Cholesky.referenceLower(inverse, n: n)
        // U = cᵀ; U · V = I.
        for i in 0..<n {
            for j in 0..<n {
                var sum = 0.0
                for k in 0..<n { sum += c[k * n + i] * v[k * n + j] }
                #expect(abs(sum - (i == j ? 1 : 0)) <= 1e-9, "(U V)[\(i)][\(j)] = \(sum)")
            }
        }
    }
}
