import Foundation
import Testing

@testable import Kernels

/// The eight-lane exp against exp in Double, over the range the softmaxes use and beyond.
@Suite struct FastExpTests {
    @Test func matchesDoubleExpWithinTwoTenthsOfAMillionth() {
        var worst = 0.0
        var x: Float = -87
        while x < 88 {
            let lanes = SIMD8<Float>((0..<8).map { x + Float($0) * 0.001 })
            let fast = Kernels.exp(lanes)
            for lane in 0..<8 {
                let exact = Foundation.exp(Double(lanes[lane]))
                worst = max(worst, abs(Double(fast[lane]) - exact) / exact)
            }
            x += 0.0173
        }
        #expect(worst < 2e-7, "worst relative error \(worst)")
        #expect(Kernels.exp(0) == 1)
        // Far below the range: tiny and finite, never a wrapped exponent.
        let tiny = Kernels.exp(SIMD8<Float>(repeating: -1000))
        #expect(tiny[0] >= 0 && tiny[0] < 1e-37)
        #expect(Kernels.exp(SIMD8<Float>(repeating: 1000))[0].isFinite)
    }
}
