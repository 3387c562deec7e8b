import Foundation
import Calibration
@testable import ModelFormat
@testable import Kernels
@testable import Quantization
@testable import MoERuntime
@testable import ExpertProfiler
import TestSupport
import Testing

/// The layer-sensitivity stage against a plain whole-model evaluation of the same quantized layer.
@Suite struct LayerSensitivityTests {
    @Test func deltaNLLMatchesAWholeModelEvaluation() throws {
        let directory = TestFixtures.tiny.appendingPathComponent("mixtral").path
        let model = try MoEModel(directory: directory, lazy: true)
        let config = model.config
        let tokens = TestFixtures.calibrationTokens(vocab: config.vocabSize)
        let gptq = GPTQ(options: .init(groupSize: 16))
        // Every layer at widths 2 and 3: the loss curve's points, measured in one layer-major pass.
        var variants: [LayerSensitivity.Variant] = []
        for layer in 0..<config.layerCount {
            for bits in [2, 3] {
                var linears: [TensorRole: PackedLinear] = [:]
                for expert in 0..<config.expertCount {
                    for role in TensorRole.expertLinears(layer: layer, expert: expert) {
                        let weight = model.matrix(role)
                        let result = gptq.roundToNearest(
                            weight: weight.floats, rows: weight.rows, columns: weight.columns, hessian: nil, bits: bits)
                        linears[role] = PackedLinear(
                            packing: result, rows: weight.rows, columns: weight.columns, bits: bits, groupSize: 16)
                    }
                }
                variants.append(.init(layer: layer, width: bits, linears: linears))
            }
        }
        let measured = try LayerSensitivity.measure(
            model: model, tokens: tokens, windows: 2, sequenceLength: 16, variants: variants
        ) { _, _, _ in }
        #expect(measured.map(\.layer) == [0, 0, 1, 1])
        #expect(measured.map(\.width) == [2, 3, 2, 3])
        // Independent: the whole forward pass (`logits`) on an eager model with the layer replaced.
        func meanNLL(_ model: MoEModel) throws -> Double {
            var total = 0.0
            for window in 0..<2 {
                let ids = Array(tokens[(window * 16)..<((window + 1) * 16)])
                total += Evaluation.negativeLogLikelihood(
                    logits: try ForwardPass(model: model).logits(ids), tokens: ids, vocab: config.vocabSize)
            }
            return total / Double(2 * 15)
        }
        let float = try meanNLL(try MoEModel(directory: directory))
        for (entry, variant) in zip(measured, variants) {
            let quantized = try MoEModel(directory: directory)
            for (role, linear) in variant.linears {
                quantized.replace(
                    role,
                    with: Matrix(rows: linear.outFeatures, columns: linear.inFeatures, floats: linear.dequantized()))
            }
            let expected = try meanNLL(quantized) - float
            #expect(abs(entry.deltaNLL - expected) <= 1e-5, "layer \(entry.layer): \(entry.deltaNLL) vs \(expected)")
            #expect(entry.deltaNLL != 0)
        }
    }
}
