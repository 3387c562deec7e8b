@testable import Kernels
import Testing

@Suite struct KernelTests {
    /// The SIMD, multi-threaded linear layer against the scalar reference, on odd sizes (tails)
    /// and on sizes large enough to take the threaded path.
    @Test(arguments: [(1, 7, 5), (3, 33, 17), (2, 130, 257), (5, 1024, 300), (8, 40, 9), (9, 517, 130)])
    func linearMatchesReference(tokens: Int, inFeatures: Int, outFeatures: Int) {
        var state: UInt32 = 7
        func next() -> Float {
            state = state &* 1_664_525 &+ 1_013_904_223
            return Float(Int32(bitPattern: state) >> 8) / Float(1 << 23)
        }
        let x = (0..<(tokens * inFeatures)).map { _ in next() }
        let w = (0..<(outFeatures * inFeatures)).map { _ in next() }
        let bias = (0..<outFeatures).map { _ in next() }
        let fast = Kernels.linear(
            x, tokens: tokens, weight: w, outFeatures: outFeatures, inFeatures: inFeatures, bias: bias)
        let reference = Kernels.referenceLinear(
            x, tokens: tokens, weight: w, outFeatures: outFeatures, inFeatures: inFeatures, bias: bias)
        // Different summation order: allow float rounding proportional to the row length.
        let tolerance = Float(inFeatures) * 1e-6 * 4
        #expect(zip(fast, reference).allSatisfy { abs($0 - $1) <= tolerance * max(1, abs($1)) })
    }
}
