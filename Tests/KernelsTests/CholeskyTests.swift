@testable import Kernels

import Testing

/// The blocked Float factor of H⁻¹ against the four-pass Double reference
/// (`Cholesky.referenceUpperFactorOfInverse`), on sizes around the 128-column panel.
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
        let fast = try Cholesky.upperFactorOfInverse(h, n: n)
        let reference = try Cholesky.referenceUpperFactorOfInverse(h, n: n)
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
            try Cholesky.upperFactorOfInverse($0.baseAddress!, n: n, diagonal: diagonal)
        }
        for i in 0..<n { h[i * n + i] = diagonal[i] }
        let reference = try Cholesky.referenceUpperFactorOfInverse(h, n: n)
        let scale = reference.map(abs).max()!
        #expect(zip(fast, reference).allSatisfy { abs(Double($0) - $1) <= Self.tolerance * scale })
    }

    @Test(arguments: [1, 7, 130, 300])
    func notPositiveDefiniteThrows(n: Int) {
        var h = Self.spd(n)
        h[(n / 2) * n + n / 2] = -1
        #expect(throws: Cholesky.Failure.notPositiveDefinite) { try Cholesky.upperFactorOfInverse(h, n: n) }
    }

    @Test func resultsDoNotDependOnTheThreadCount() throws {
        let n = 300
        let h = Self.spd(n)
        let threaded = try Cholesky.upperFactorOfInverse(h, n: n)
        let serial = try Parallel.$serial.withValue(true) { try Cholesky.upperFactorOfInverse(h, n: n) }
        #expect(threaded == serial)
    }
}
