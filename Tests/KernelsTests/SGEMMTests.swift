import Foundation
@testable import Kernels
import Testing

/// The SGEMM kernel against the plain triple loop (`SGEMM.referenceMultiply`), on shapes that
/// are not multiples of the 6 × 16 tile, a single row, depths below and above one packed block.
@Suite struct SGEMMTests {
    /// Float products summed over k: allow k · ε of the magnitude of the sum (|values| ≤ 1).
    static func tolerance(_ k: Int) -> Float { Float(k) * 2e-7 + 1e-6 }

    static func random(_ count: Int, seed: UInt64) -> [Float] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int32(truncatingIfNeeded: state >> 32)) / Float(Int32.max)
        }
    }

    struct Shape: CustomTestStringConvertible, Sendable {
        var m: Int, n: Int, k: Int, transposeA: Bool, transposeB: Bool
        /// A (`m × k`) and B (`k × n`) over row-major storage of the shape's operands, transposed as asked.
        func views(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>) -> (SGEMM.Matrix, SGEMM.Matrix) {
            (
                transposeA ? SGEMM.Matrix(a, rowStride: 1, columnStride: m) : SGEMM.Matrix(a, rowStride: k),
                transposeB ? SGEMM.Matrix(b, rowStride: 1, columnStride: k) : SGEMM.Matrix(b, rowStride: n)
            )
        }
        var testDescription: String { "\(m)×\(k) · \(k)×\(n)\(transposeA ? " Aᵀ" : "")\(transposeB ? " Bᵀ" : "")" }
    }

    static let shapes: [Shape] = [
        .init(m: 1, n: 1, k: 1, transposeA: false, transposeB: false),
        .init(m: 1, n: 37, k: 5, transposeA: false, transposeB: false),
        .init(m: 7, n: 17, k: 130, transposeA: false, transposeB: true),
        .init(m: 13, n: 33, k: 127, transposeA: true, transposeB: false),
        .init(m: 100, n: 50, k: 300, transposeA: false, transposeB: false),
        .init(m: 97, n: 161, k: 257, transposeA: true, transposeB: true),
        .init(m: 200, n: 16, k: 64, transposeA: false, transposeB: false),
    ]

    /// Runs `body` on each kernel path this CPU has: AVX2, and AVX-512 where present.
    static func onEachPath(_ body: () -> Void) {
        CPUFeatures.$forceAVX2.withValue(true) { body() }
        if CPUFeatures.avx512 { body() }
    }

    @Test(arguments: shapes)
    func matchesTheTripleLoop(_ s: Shape) { Self.onEachPath { check(s) } }

    func check(_ s: Shape) {
        let a = Self.random(s.m * s.k, seed: 1), b = Self.random(s.k * s.n, seed: 2)
        // C has a wider leading dimension; the padding must stay untouched.
        let ldc = s.n + 3
        let initial = Self.random(s.m * ldc, seed: 3)
        var fast = initial, reference = initial
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                let (av, bv) = s.views(a.baseAddress!, b.baseAddress!)
                fast.withUnsafeMutableBufferPointer {
                    SGEMM.multiply(m: s.m, n: s.n, k: s.k, alpha: -1, a: av, b: bv, c: $0.baseAddress!, ldc: ldc)
                }
                reference.withUnsafeMutableBufferPointer {
                    SGEMM.referenceMultiply(
                        m: s.m, n: s.n, k: s.k, alpha: -1, a: av, b: bv, c: $0.baseAddress!, ldc: ldc)
                }
            }
        }
        let worst = zip(fast, reference).map { abs($0 - $1) }.max()!
        #expect(worst <= Self.tolerance(s.k), "max difference \(worst)")
        for i in 0..<s.m { for j in s.n..<ldc { #expect(fast[i * ldc + j] == initial[i * ldc + j]) } }
    }

    @Test func lowerOnlyComputesTheLowerTriangleAndStaysInside() { Self.onEachPath { checkLowerOnly() } }

    func checkLowerOnly() {
        let m = 211, k = 70
        let a = Self.random(m * k, seed: 4)
        var fast = [Float](repeating: 0, count: m * m), reference = fast
        a.withUnsafeBufferPointer { a in
            let view = SGEMM.Matrix(a.baseAddress!, rowStride: k)
            fast.withUnsafeMutableBufferPointer {
                SGEMM.multiply(
                    m: m, n: m, k: k, a: view, b: view.transposed, c: $0.baseAddress!, ldc: m, lowerOnly: true)
            }
            reference.withUnsafeMutableBufferPointer {
                SGEMM.referenceMultiply(
                    m: m, n: m, k: k, alpha: 1, a: view, b: view.transposed, c: $0.baseAddress!, ldc: m)
            }
        }
        for i in 0..<m { for j in 0...i { #expect(abs(fast[i * m + j] - reference[i * m + j]) <= Self.tolerance(k)) } }
    }

    @Test func resultsDoNotDependOnTheThreadCount() {
        let m = 301, n = 283, k = 290
        let a = Self.random(m * k, seed: 5), b = Self.random(k * n, seed: 6)
        func run() -> [Float] {
            var c = [Float](repeating: 0, count: m * n)
            a.withUnsafeBufferPointer { a in
                b.withUnsafeBufferPointer { b in
                    c.withUnsafeMutableBufferPointer {
                        SGEMM.multiply(
                            m: m, n: n, k: k, a: .init(a.baseAddress!, rowStride: k),
                            b: .init(b.baseAddress!, rowStride: n),
                            c: $0.baseAddress!, ldc: n)
                    }
                }
            }
            return c
        }
        let threaded = run()
        let serial = Parallel.$serial.withValue(true) { run() }
        #expect(threaded == serial)
    }

    /// The AVX-512 kernel (12 × 32 tiles) does each element's operations in the AVX2 kernel's order:
    /// equal bit for bit, edges, transposes, `lowerOnly` and leading-dimension padding included.
    /// Skipped on CPUs without AVX-512 (the kernel cannot run there; `SGEMM` then takes the AVX2 path only).
    @Test(
        .enabled(if: CPUFeatures.avx512, "this CPU has no AVX-512"),
        arguments: shapes + [Shape(m: 193, n: 80, k: 600, transposeA: false, transposeB: false)])
    func avx512EqualsAVX2BitForBit(_ s: Shape) throws {
        let a = Self.random(s.m * s.k, seed: 7), b = Self.random(s.k * s.n, seed: 8)
        let ldc = s.n + 5
        func run(lowerOnly: Bool) -> [Float] {
            var c = Self.random(s.m * ldc, seed: 9)
            a.withUnsafeBufferPointer { a in
                b.withUnsafeBufferPointer { b in
                    let (av, bv) = s.views(a.baseAddress!, b.baseAddress!)
                    c.withUnsafeMutableBufferPointer {
                        SGEMM.multiply(
                            m: s.m, n: min(s.n, lowerOnly ? s.m : s.n), k: s.k, alpha: 0.75, a: av, b: bv,
                            c: $0.baseAddress!, ldc: ldc, lowerOnly: lowerOnly)
                    }
                }
            }
            return c
        }
        for lowerOnly in [false, true] {
            let avx2 = CPUFeatures.$forceAVX2.withValue(true) { run(lowerOnly: lowerOnly) }
            let avx512 = run(lowerOnly: lowerOnly)
            // With `lowerOnly` the tiles may also write above the diagonal, differently per tile size.
            let compared = (0..<(s.m * ldc)).filter { !lowerOnly || $0 % ldc <= $0 / ldc || $0 % ldc >= s.n }
            #expect(compared.allSatisfy { avx2[$0] == avx512[$0] }, "lowerOnly \(lowerOnly)")
        }
    }

    @Test func avx512IsReadFromTheCPUFlags() {
        let full = "processor : 0\nflags\t\t: fpu avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni\n"
        #expect(CPUFeatures.hasAVX512(cpuinfo: full))
        #expect(!CPUFeatures.hasAVX512(cpuinfo: full.replacingOccurrences(of: " avx512bw", with: "")))
        #expect(!CPUFeatures.hasAVX512(cpuinfo: "flags : fpu avx2 fma\n"))
        #expect(!CPUFeatures.hasAVX512(cpuinfo: ""))
    }
}
