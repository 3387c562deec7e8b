import Foundation
@testable import Quantization
import Testing

/// Several widths from one Cholesky factor give exactly what one call per width gives.
@Suite struct GPTQWidthsTests {
    @Test(arguments: [false, true])
    func sharedFactorEqualsOneCallPerWidth(actOrder: Bool) throws {
        var state: UInt64 = 7
        func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int32(truncatingIfNeeded: state >> 32)) / Float(Int32.max)
        }
        let rows = 24, columns = 40, samples = 64
        let x = (0..<(samples * columns)).map { _ in next() }
        var hessian = [Double](repeating: 0, count: columns * columns)
        for t in 0..<samples {
            for i in 0..<columns {
                for j in 0..<columns { hessian[i * columns + j] += Double(x[t * columns + i] * x[t * columns + j]) }
            }
        }
        // A dead input column.
        for j in 0..<columns { hessian[5 * columns + j] = 0; hessian[j * columns + 5] = 0 }
        let weight = (0..<(rows * columns)).map { _ in next() }
        let gptq = GPTQ(options: .init(groupSize: 16, blockSize: 8, actOrder: actOrder))
        let widths = [1, 2, 3, 4, 8]
        let shared = try gptq.quantize(weight: weight, rows: rows, columns: columns, hessian: hessian, widths: widths)
        for (position, bits) in widths.enumerated() {
            let single = try gptq.quantize(weight: weight, rows: rows, columns: columns, hessian: hessian, bits: bits)
            #expect(
                shared[position].codes == single.codes && shared[position].scales == single.scales
                    && shared[position].zeros == single.zeros)
            #expect(shared[position].dequantized == single.dequantized && shared[position].error == single.error)
            #expect(shared[position].groupIndex == single.groupIndex)
        }
        #expect(shared[0].error > shared[4].error)
    }
}
