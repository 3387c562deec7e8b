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

/// SwiGLU's gate through the SIMD exp against `silu` in Double, vector lanes and the scalar tail.
@Suite struct GatedSiLUTests {
    @Test(arguments: [1, 8, 13, 1003])
    func matchesSiLUInDouble(count: Int) {
        var state: UInt32 = 7
        func next() -> Float {
            state = state &* 1_664_525 &+ 1_013_904_223
            return Float(Int32(bitPattern: state) >> 8) / Float(1 << 18) // about ±32
        }
        var g = (0..<count).map { _ in next() }
        let u = (0..<count).map { _ in next() }
        if count > 8 { g[3] = -200; g[5] = 200; g[9] = 0 } // saturated both ways, and zero
        var h = [Float](repeating: .nan, count: count)
        Kernels.gatedSiLU(g, u, into: &h, count: count)
        for i in 0..<count {
            let x = Double(g[i]), exact = x / (1 + Foundation.exp(-x)) * Double(u[i])
            #expect(
                abs(Double(h[i]) - exact) <= 1e-6 * abs(exact) + 1e-30,
                "g \(g[i]) u \(u[i]): \(h[i]) against \(exact)")
        }
    }
}
