import Foundation
@testable import Kernels
@testable import ModelFormat
@testable import MoERuntime
import TestSupport
import Testing

/// `MoEModel.quantizeAttentionAndHead` (`--attention-bits`): round to nearest per group, checked
/// element by element, and the forward pass with 8-bit attention against transformers' float logits.
@Suite struct AttentionBitsTests {
    /// Every weight within half a step of its group (the step as the fp16 scale the kernels read),
    /// up to the step's own rounding over the group's range; codes in range; zeros integers.
    @Test(arguments: [2, 4, 8])
    func roundToNearestWithinHalfAStep(bits: Int) {
        var generator = SplitMix64(seed: UInt64(bits))
        let rows = 24, columns = 320, groupSize = 128
        var w = (0..<(rows * columns)).map { _ in Float(generator.uniform() * 2 - 1) * 0.05 }
        for i in 0..<columns { w[5 * columns + i] = 0 } // an all-zero row
        for i in 0..<columns { w[7 * columns + i] = 0.25 } // a constant positive row
        let linear = MoEModel.roundToNearest(w, rows: rows, columns: columns, bits: bits, groupSize: groupSize)
        let restored = linear.dequantized()
        for o in 0..<rows {
            for g in stride(from: 0, to: columns, by: groupSize) {
                let range = g..<min(g + groupSize, columns)
                let low = min(0, range.map { w[o * columns + $0] }.min()!)
                let high = max(0, range.map { w[o * columns + $0] }.max()!)
                let step = (high - low) / Float((1 << bits) - 1)
                for i in range {
                    let error = abs(restored[o * columns + i] - w[o * columns + i])
                    #expect(
                        error <= 0.5 * step * 1.002 + 1e-3 * (high - low) + 1e-7,
                        "\(bits) bits [\(o), \(i)]: error \(error), step \(step)")
                }
            }
        }
        #expect(restored[(5 * columns)..<(6 * columns)].allSatisfy { $0 == 0 })
    }

    /// The tiny checkpoints with 8-bit attention and head run as the float forward pass does with
    /// those matrices replaced by their rounded values (the packed kernels, int8 activations off,
    /// against f32 weights). Against transformers' logits the rounding alone moves these random
    /// models' near-tied routers, so the reference is the rounded float model.
    @Test(arguments: MoEArchitecture.allCases)
    func eightBitAttentionRunsTheRoundedWeights(architecture: MoEArchitecture) throws {
        let (model, _, ids, expected) = try ForwardPassTests.fixture(architecture)
        let change = model.quantizeAttentionAndHead(bits: 8, groupSize: 32)
        #expect(change.matrices >= model.config.layerCount)
        #expect(change.bytesAfter < change.bytesBefore)
        let (rounded, _, _, _) = try ForwardPassTests.fixture(architecture)
        for (role, matrix) in model.matrices {
            if case .packed = matrix.storage { // the fixtures are float: every packed matrix is a new one
                rounded.matrices[role] = Matrix(rows: matrix.rows, columns: matrix.columns, floats: matrix.floats)
            }
        }
        let logits = try ForwardPass(model: model).logits(ids)
        let reference = try ForwardPass(model: rounded).logits(ids)
        let worst = zip(logits, reference).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worst <= ForwardPassTests.logitTolerance, "max |Δlogit| = \(worst) against the rounded float model")
        #expect(logits != expected, "the logits did not change")
    }
}
