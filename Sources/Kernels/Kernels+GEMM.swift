import Foundation

extension Kernels {
    /// Windows of at least this many tokens run f32 and bf16 linears as one SGEMM call.
    public static let gemmMinimumTokens = 64

    /// `x · Wᵀ (+ bias)` through SGEMM (`C = bias; C += X · Wᵀ`), `W` `[outFeatures, inFeatures]`
    /// read in place (a transposed view): the prefill path of `linear` for f32 and bf16 weights
    /// (bf16 widened to f32 once per call). Same result as the dot-product kernels up to float
    /// summation order, independent of the thread count.
    static func gemmLinear(
        _ x: [Float], tokens: Int, weight: UnsafePointer<Float>, outFeatures: Int, inFeatures: Int, bias: [Float]?
    ) -> [Float] {
        precondition(x.count == tokens * inFeatures)
        var y = [Float](repeating: 0, count: tokens * outFeatures)
        if let bias {
            for t in 0..<tokens { y.replaceSubrange((t * outFeatures)..<((t + 1) * outFeatures), with: bias) }
        }
        x.withUnsafeBufferPointer { x in
            y.withUnsafeMutableBufferPointer { y in
                SGEMM.multiply(
                    m: tokens, n: outFeatures, k: inFeatures, a: .init(x.baseAddress!, rowStride: inFeatures),
                    b: .init(weight, rowStride: 1, columnStride: inFeatures), c: y.baseAddress!, ldc: outFeatures)
            }
        }
        return y
    }

    /// The prefill path for `matrix`, nil when it does not apply (few tokens, packed or FP8 weights).
    static func gemmLinear(_ x: [Float], tokens: Int, matrix: Matrix, bias: [Float]?) -> [Float]? {
        guard tokens >= gemmMinimumTokens, !useReferenceKernels else { return nil }
        switch matrix.storage {
        case let .f32(w):
            return w.withUnsafeBufferPointer {
                gemmLinear(
                    x, tokens: tokens, weight: $0.baseAddress!, outFeatures: matrix.rows, inFeatures: matrix.columns,
                    bias: bias)
            }
        case let .bf16(w):
            let count = matrix.rows * matrix.columns
            let widened = UnsafeMutablePointer<Float>.allocate(capacity: count)
            defer { widened.deallocate() }
            w.withUnsafeBufferPointer { w in
                for index in 0..<count { widened[index] = Float(bitPattern: UInt32(w[index]) << 16) }
            }
            return gemmLinear(
                x, tokens: tokens, weight: widened, outFeatures: matrix.rows, inFeatures: matrix.columns, bias: bias)
        case .fp8, .packed:
            return nil
        }
    }
}
