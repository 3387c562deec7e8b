import Foundation
@testable import ModelFormat
@testable import MoERuntime
@testable import Kernels
import TestSupport
import Testing

/// DeepSeek-V2/V3 (multi-head latent attention, YaRN, group-limited and bias-corrected routing,
/// shared experts, a multi-token-prediction layer to skip) and block-scaled FP8 against
/// transformers on tiny checkpoints (tools/fixtures/make_deepseek_models.py), to the issue's
/// tolerances: logits 1e-4, perplexity 1e-6 relative.
@Suite struct DeepSeekTests {
    static let names = ["deepseek_v2", "deepseek_v3", "deepseek_v3_fp8"]
    static let logitTolerance: Float = 1e-4

    final class Recorder: RouterObserver {
        var choices: [Int: [Int: [(Int, Float)]]] = [:]
        func routed(layer: Int, token: Int, probabilities: [Float], experts: [Int], weights: [Float]) {
            choices[layer, default: [:]][token] = zip(experts, weights).sorted { $0.0 < $1.0 }
        }
    }

    static func fixture(_ name: String) throws -> (model: MoEModel, reference: SafeTensorsFile, ids: [Int]) {
        let directory = TestFixtures.tiny.appendingPathComponent(name).path
        let reference = try SafeTensorsFile(path: directory + "/reference.safetensors")
        let ids = try reference.bytes("input_ids").bindMemory(to: Int32.self).map { Int($0) }
        return (try MoEModel(directory: directory), reference, ids)
    }

    static func worst(_ a: [Float], _ b: [Float]) -> Float {
        a.count == b.count ? zip(a, b).map { abs($0 - $1) }.max() ?? 0 : .infinity
    }

    /// Both KV caches: the latent one (absorbed attention) and every head's expanded keys and values.
    @Test(arguments: names, [true, false])
    func prefillLogitsAndRoutingMatchTransformers(name: String, latentCache: Bool) throws {
        let (model, reference, ids) = try Self.fixture(name)
        let recorder = Recorder()
        let logits = try ForwardPass(model: model, observer: recorder, latentCache: latentCache).logits(ids)
        let difference = Self.worst(logits, try reference.floats("logits"))
        #expect(difference <= Self.logitTolerance, "max |Δlogit| = \(difference)")
        let routing = try reference.bytes("routing").bindMemory(to: Int32.self).map { Int($0) }
        let weights = try reference.floats("routing_weights")
        let k = model.config.routing.topK
        let moeLayers = (0..<model.config.layerCount).filter { model.config.moeLayers[$0] }
        #expect(moeLayers.count * ids.count * k == routing.count)
        for (ordinal, layer) in moeLayers.enumerated() {
            for token in ids.indices {
                let start = (ordinal * ids.count + token) * k
                let ours = recorder.choices[layer]?[token] ?? []
                #expect(ours.map(\.0) == Array(routing[start..<(start + k)]), "layer \(layer) token \(token)")
                let gap = Self.worst(ours.map(\.1), Array(weights[start..<(start + k)]))
                #expect(gap <= 1e-5, "layer \(layer) token \(token): routing weights differ by \(gap)")
            }
        }
    }

    @Test(arguments: names, [true, false])
    func stepByStepDecodeMatchesTransformers(name: String, latentCache: Bool) throws {
        let (model, reference, ids) = try Self.fixture(name)
        let session = ForwardPass(model: model, latentCache: latentCache)
        var logits = try session.logits(Array(ids.prefix(3)))
        for token in ids.dropFirst(3) { logits += try session.logits([token]) }
        let difference = Self.worst(logits, try reference.floats("logits"))
        #expect(difference <= Self.logitTolerance, "max |Δlogit| = \(difference)")
        #expect(
            session.keyCache[1].count == ids.count * (latentCache ? latentRowWidth(model) : expandedRowWidth(model)))
    }

    func latentRowWidth(_ model: MoEModel) -> Int {
        model.config.latentAttention!.latentRank + model.config.latentAttention!.ropeDim
    }

    func expandedRowWidth(_ model: MoEModel) -> Int { model.config.attentionHeads * model.config.keyHeadDim }

    @Test(arguments: names)
    func perplexityMatchesTransformersLogits(name: String) throws {
        let (model, reference, ids) = try Self.fixture(name)
        let expected = EvaluationTests.perplexity(
            logits: try reference.floats("logits"), ids: ids, vocab: model.config.vocabSize)
        let result = try Evaluation.run(model: model, tokens: ids, sequenceLength: ids.count)
        #expect(abs(result.perplexity - expected) <= 1e-6 * expected, "\(result.perplexity) vs \(expected)")
    }

    @Test func configsAreReadAsTheirFamilies() throws {
        let v2 = try Self.fixture("deepseek_v2").model.config
        #expect(
            v2.latentAttention?.queryRank == nil && v2.rope.yarn?.factor == 4 && v2.moeLayers == [false, true, true])
        #expect(v2.routing.groups == 4 && v2.routing.groupScore == .max && v2.routing.scoring == .softmax)
        #expect(v2.sharedExpertIntermediateSize == 48 && !v2.sharedExpertGated)
        let v3 = try Self.fixture("deepseek_v3").model.config
        #expect(v3.latentAttention?.queryRank == 24 && v3.routing.correctionBias && v3.trailingLayers == 1)
        #expect(v3.routing.scale == 2.5 && v3.routing.groupScore == .topTwoSum && v3.routing.scoring == .sigmoid)
        // Kimi-K2's config.json says kimi_k2 and is read as DeepSeek-V3.
        var object =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: TestFixtures.tiny.appendingPathComponent("deepseek_v3/config.json")))
            as! [String: Any]
        object["model_type"] = "kimi_k2"
        let kimi = try MoEModelConfig.parse(try JSONSerialization.data(withJSONObject: object), file: "config.json")
        #expect(kimi == v3)
        let fp8 = try Self.fixture("deepseek_v3_fp8").model
        #expect(fp8.fp8 == FP8Config(blockRows: 16, blockColumns: 16, file: fp8.fp8!.file))
        #expect(fp8.config.latentAttention?.interleaved == false && fp8.config.routing.groups == 1)
    }
}

/// FP8 decoding against torch's own values of all 256 codes of both formats, and block scales
/// against a per-element reference on a 128×128 grid with partial edge blocks.
@Suite struct FP8Tests {
    @Test func tablesMatchTorch() throws {
        let tables = try SafeTensorsFile(path: TestFixtures.tiny.appendingPathComponent("fp8_tables.safetensors").path)
        for (name, ours) in [("e4m3", FP8.e4m3), ("e5m2", FP8.e5m2)] {
            let torch = try tables.floats(name)
            #expect(torch.count == 256)
            for code in 0..<256 {
                #expect(
                    ours[code] == torch[code] || (ours[code].isNaN && torch[code].isNaN),
                    "\(name) code \(code): \(ours[code]) vs \(torch[code])")
            }
        }
        #expect(FP8.e4m3[0x7E] == 448 && FP8.e5m2[0x7B] == 57344)
    }

    @Test(arguments: [TensorDType.f8e4m3, .f8e5m2])
    func blockScalesApplyPerBlockWithPartialEdges(dtype: TensorDType) {
        let rows = 130, columns = 300, block = 128
        var generator = TestGenerator(state: 7)
        let codes = (0..<(rows * columns)).map { _ in UInt8(generator.int(0x7C)) | UInt8(generator.int(2) << 7) }
        let scales = (0..<(2 * 3)).map { Float($0 + 1) * 0.25 }
        let table = FP8.table(dtype)!
        let result = codes.withUnsafeBytes {
            FP8.dequantize(
                codes: $0, dtype: dtype, rows: rows, columns: columns, scales: scales, blockRows: block,
                blockColumns: block)
        }
        for r in 0..<rows {
            for c in 0..<columns {
                let expected = table[Int(codes[r * columns + c])] * scales[(r / block) * 3 + c / block]
                if result[r * columns + c] != expected {
                    Issue.record("(\(r), \(c)): \(result[r * columns + c]) vs \(expected)")
                    return
                }
            }
        }
    }
}

/// The fused FP8 kernel against the dequantized weights: bit-identical widening, the f32 path's
/// products (prefill: identical; decode: to rounding), and whole-model logits as when
/// dequantizing at load.
@Suite struct FP8KernelTests {
    @Test(arguments: [TensorDType.f8e4m3, .f8e5m2])
    func wideningIsExactForEveryFiniteCode(dtype: TensorDType) {
        let table = FP8.table(dtype)!
        let codes = (0..<256).map(UInt8.init).filter { table[Int($0)].isFinite }
        for scale: Float in [1, 0.0123, 3.75e-5, 200] {
            var widened = [Float](repeating: 0, count: codes.count)
            codes.withUnsafeBufferPointer { source in
                widened.withUnsafeMutableBufferPointer { destination in
                    Kernels.widenFP8(
                        source.baseAddress!, into: destination.baseAddress!, count: codes.count,
                        shift: dtype == .f8e4m3 ? 20 : 21,
                        bias: Float(sign: .plus, exponent: dtype == .f8e4m3 ? 120 : 112, significand: 1), scale: scale)
                }
            }
            #expect(zip(codes, widened).allSatisfy { table[Int($0)] * scale == $1 }, "scale \(scale)")
        }
    }

    @Test(arguments: [(1, 40, 24), (3, 130, 70), (4, 300, 17), (9, 256, 129)])
    func linearMatchesTheDequantizedReference(tokens: Int, inFeatures: Int, outFeatures: Int) {
        var generator = TestGenerator(state: UInt64(inFeatures))
        for dtype in [TensorDType.f8e4m3, .f8e5m2] {
            let finite = (0..<256).filter { FP8.table(dtype)![$0].isFinite }
            let codes = (0..<(outFeatures * inFeatures)).map { _ in UInt8(finite[generator.int(finite.count)]) }
            let block = 32
            let grid = ((outFeatures + block - 1) / block) * ((inFeatures + block - 1) / block)
            let scales = (0..<grid).map { _ in abs(generator.float()) * 1e-3 + 1e-5 }
            let weights = FP8Weights(codes: codes, scales: scales, format: dtype, blockRows: block, blockColumns: block)
            let matrix = Matrix(rows: outFeatures, columns: inFeatures, storage: .fp8(weights))
            let x = (0..<(tokens * inFeatures)).map { _ in generator.float() }
            let fused = Kernels.linear(x, tokens: tokens, matrix: matrix)
            let dense = Kernels.linear(
                x, tokens: tokens, matrix: Matrix(rows: outFeatures, columns: inFeatures, floats: matrix.floats))
            if tokens >= 4 {
                #expect(fused == dense, "\(dtype): prefill widens to the same f32 weights")
            } else {
                // Decode applies each block's scale to its partial sum: equal to rounding.
                let worst = zip(fused, dense).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? 0
                #expect(worst <= Float(inFeatures) * 2e-7, "\(dtype): \(worst)")
            }
        }
    }

    @Test func fusedModelEqualsDequantizedModel() throws {
        let directory = TestFixtures.tiny.appendingPathComponent("deepseek_v3_fp8").path
        let fused = try MoEModel(directory: directory)
        let dequantized = try MoEModel(directory: directory, dequantizeFP8: true)
        #expect(fused.weightBytes < dequantized.weightBytes / 2)
        let ids = Array(0..<20).map { ($0 * 13 + 1) % 96 }
        let a = try ForwardPass(model: fused).logits(ids), b = try ForwardPass(model: dequantized).logits(ids)
        #expect(zip(a, b).allSatisfy { abs($0 - $1) <= 1e-4 })
    }
}
