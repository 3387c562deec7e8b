import Foundation

/// The dense float kernels every path reuses. Scalar for now: the reference the SIMD,
/// multi-threaded versions will be tested against.
public enum Kernels {
    /// `y[t, o] = Σ_i x[t, i] · w[o, i]` (+ bias[o]): a linear layer over `tokens` rows, with `w`
    /// in PyTorch's `[out, in]` layout.
    public static func linear(_ x: [Float], tokens: Int, weight w: [Float], outFeatures: Int, inFeatures: Int,
                              bias: [Float]? = nil) -> [Float] {
        precondition(x.count == tokens * inFeatures && w.count == outFeatures * inFeatures)
        var y = [Float](repeating: 0, count: tokens * outFeatures)
        x.withUnsafeBufferPointer { x in
            w.withUnsafeBufferPointer { w in
                y.withUnsafeMutableBufferPointer { y in
                    for t in 0..<tokens {
                        let row = x.baseAddress! + t * inFeatures
                        for o in 0..<outFeatures {
                            let weights = w.baseAddress! + o * inFeatures
                            var sum: Float = 0
                            for i in 0..<inFeatures { sum += row[i] * weights[i] }
                            y[t * outFeatures + o] = sum + (bias?[o] ?? 0)
                        }
                    }
                }
            }
        }
        return y
    }

    /// RMSNorm over consecutive groups of `width` values: `x / sqrt(mean(x²) + eps) · weight`.
    public static func rmsNorm(_ x: [Float], width: Int, weight: [Float], eps: Float) -> [Float] {
        precondition(x.count % width == 0 && weight.count == width)
        var y = x
        for start in stride(from: 0, to: x.count, by: width) {
            var sum: Float = 0
            for i in 0..<width { sum += x[start + i] * x[start + i] }
            let scale = 1 / (sum / Float(width) + eps).squareRoot()
            for i in 0..<width { y[start + i] = x[start + i] * scale * weight[i] }
        }
        return y
    }

    /// Softmax in place over `values`.
    public static func softmax(_ values: inout [Float]) {
        let peak = values.max() ?? 0
        var sum: Float = 0
        for i in values.indices {
            values[i] = (values[i] - peak).exponential
            sum += values[i]
        }
        for i in values.indices { values[i] /= sum }
    }

    @inline(__always) public static func silu(_ x: Float) -> Float { x / (1 + (-x).exponential) }
    @inline(__always) public static func sigmoid(_ x: Float) -> Float { 1 / (1 + (-x).exponential) }
}

extension Float {
    @inline(__always) var exponential: Float { Float(Foundation.exp(Double(self))) }
}
