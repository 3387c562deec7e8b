import Foundation
import ModelFormat
import MoERuntime
import QuantEngine
import Testing
@testable import ExpertProfiler

/// `pmq quantize`'s engine: every expert packed at its planned width; the packed model, loaded
/// back, computes the same logits as the float path run on the dequantized weights.
@Suite struct ModelQuantizerTests {
    static let tiny = ProfilerTests.fixtures

    static func temporaryPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("pmq-\(name)-\(UUID().uuidString)").path
    }

    /// Calibration tokens for the tiny models: 4 windows of 16.
    static func tokens(vocab: Int) -> [Int] { (0..<64).map { ($0 * 37 + 11) % vocab } }

    /// Widths 1, 2, 3, 4, 8 spread over the experts.
    static func mixedPlan(_ config: MoEModelConfig) -> AllocationPlan {
        var widths: [Int: [Int: Int]] = [:]
        let choices = [1, 2, 3, 4, 8]
        for layer in 0..<config.layerCount where config.moeLayers[layer] {
            widths[layer] = Dictionary(uniqueKeysWithValues: (0..<config.expertCount).map { ($0, choices[(layer + $0) % choices.count]) })
        }
        return AllocationPlan(widths: widths, groupSize: 16)
    }

    @Test(arguments: [(MoEArchitecture.mixtral, false), (.qwen2MoE, false), (.mixtral, true)])
    func packedModelMatchesTheFloatPathOnDequantizedWeights(architecture: MoEArchitecture, actOrder: Bool) throws {
        let source = Self.tiny.appendingPathComponent(architecture.rawValue).path
        let float = try FloatModel(directory: source, lazy: true)
        let plan = Self.mixedPlan(float.config)
        let output = try ModelQuantizer(model: float, options: .init(sequenceLength: 16, samples: 4, actOrder: actOrder))
            .run(tokens: Self.tokens(vocab: float.config.vocabSize), plan: plan)
        // Act-order: the layers' groups are permuted and the runtime takes the rewritten (contiguous) path.
        #expect(output.linears.values.contains { Int($0.gIdx[1]) != 1 / $0.groupSize } == actOrder)
        let moeLayers = float.config.moeLayers.filter { $0 }.count
        #expect(output.linears.count == moeLayers * float.config.expertCount * 3)
        let out = Self.temporaryPath("packed")
        try PackedModelExport.write(sourceDirectory: source, output: output, actOrder: actOrder, keepF32: true, to: out)
        defer { try? FileManager.default.removeItem(atPath: out) }

        let packed = try FloatModel(directory: out)
        // The reference: the source model with every expert replaced by its dequantized weights.
        let reference = try FloatModel(directory: source)
        var widthsSeen = Set<Int>()
        for layer in 0..<reference.config.layerCount where reference.config.moeLayers[layer] {
            for expert in 0..<reference.config.expertCount {
                for role in TensorRole.expertLinears(layer: layer, expert: expert) {
                    guard case let .packed(weights) = packed.matrix(role).storage else {
                        Issue.record("\(role) is not packed")
                        continue
                    }
                    let linear = weights.linear
                    #expect((weights.contiguous != nil) == !weights.naturalOrder)
                    #expect(linear.bits == plan.widths[layer]![expert]!)
                    widthsSeen.insert(linear.bits)
                    reference.replace(role, with: Matrix(rows: linear.outFeatures, columns: linear.inFeatures, floats: linear.dequantized()))
                }
            }
        }
        #expect(widthsSeen == [1, 2, 3, 4, 8])
        let ids = Array(Self.tokens(vocab: float.config.vocabSize).prefix(16))
        let packedLogits = try FloatForward(model: packed).logits(ids)
        let referenceLogits = try FloatForward(model: reference).logits(ids)
        let worst = zip(packedLogits, referenceLogits).map { abs($0 - $1) }.max()!
        #expect(worst <= 1e-4, "max |Δlogit| = \(worst)")
        // Quantization did change the model.
        let floatLogits = try FloatForward(model: try FloatModel(directory: source)).logits(ids)
        #expect(zip(packedLogits, floatLogits).map { abs($0 - $1) }.max()! > 1e-4)
    }

    @Test func planMustCoverTheModel() throws {
        let config = try MoEModelConfig.read(directory: Self.tiny.appendingPathComponent("mixtral").path)
        var plan = Self.mixedPlan(config)
        try plan.validate(against: config, file: "plan.json")
        plan.widths[0]![0] = nil
        #expect(throws: ModelFormatError.self) { try plan.validate(against: config, file: "plan.json") }
        plan = Self.mixedPlan(config)
        plan.widths[7] = [0: 2]
        #expect(throws: ModelFormatError.self) { try plan.validate(against: config, file: "plan.json") }
    }

    @Test func allocationReportsAreReadWithClearErrors() throws {
        let path = Self.temporaryPath("allocation") + ".json"
        defer { try? FileManager.default.removeItem(atPath: path) }
        func write(_ object: Any) throws { try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path)) }
        let good: [String: Any] = ["format": "pmq-allocation", "version": 1,
                                   "parameters": ["groupSize": 64, "model": "m", "budget": 2.5, "budgetKind": "bits", "importance": "measured"],
                                   "layers": [["index": 0, "experts": [["index": 0, "bits": 3], ["index": 1, "bits": 2]]]]]
        try write(good)
        let plan = try AllocationPlan.read(path: path)
        #expect(plan.widths == [0: [0: 3, 1: 2]] && plan.groupSize == 64 && plan.averageBits == 2.5)
        var bad = good
        bad["layers"] = [["index": 0, "experts": [["index": 0, "bits": 5]]]]
        try write(bad)
        #expect(throws: ModelFormatError.self) { try AllocationPlan.read(path: path) }
        bad = good
        bad["format"] = "pmq-profile"
        try write(bad)
        #expect(throws: ModelFormatError.self) { try AllocationPlan.read(path: path) }
        try Data("{\"format\": ".utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: ModelFormatError.self) { try AllocationPlan.read(path: path) }
    }
}

/// The layer-sensitivity stage against a plain whole-model evaluation of the same quantized layer.
@Suite struct LayerSensitivityTests {
    @Test func deltaNLLMatchesAWholeModelEvaluation() throws {
        let directory = ProfilerTests.fixtures.appendingPathComponent("mixtral").path
        let model = try FloatModel(directory: directory, lazy: true)
        let config = model.config
        let tokens = ModelQuantizerTests.tokens(vocab: config.vocabSize)
        let gptq = GPTQ(options: .init(groupSize: 16))
        var references: [Int: [TensorRole: PackedLinear]] = [:]
        for layer in 0..<config.layerCount {
            for expert in 0..<config.expertCount {
                for role in TensorRole.expertLinears(layer: layer, expert: expert) {
                    let weight = model.matrix(role)
                    let result = gptq.roundToNearest(weight: weight.floats, rows: weight.rows, columns: weight.columns, hessian: nil, bits: 2)
                    references[layer, default: [:]][role] = PackedLinear(packing: result, rows: weight.rows, columns: weight.columns, bits: 2, groupSize: 16)
                }
            }
        }
        let measured = try LayerSensitivity.measure(model: model, tokens: tokens, windows: 2, sequenceLength: 16, references: references) { _, _, _ in }
        #expect(measured.map(\.layer) == [0, 1])
        // Independent: the whole forward pass (`logits`) on an eager model with the layer replaced.
        func meanNLL(_ model: FloatModel) throws -> Double {
            var total = 0.0
            for window in 0..<2 {
                let ids = Array(tokens[(window * 16)..<((window + 1) * 16)])
                total += Evaluation.negativeLogLikelihood(logits: try FloatForward(model: model).logits(ids), tokens: ids, vocab: config.vocabSize)
            }
            return total / Double(2 * 15)
        }
        let float = try meanNLL(try FloatModel(directory: directory))
        for entry in measured {
            let quantized = try FloatModel(directory: directory)
            for (role, linear) in references[entry.layer]! {
                quantized.replace(role, with: Matrix(rows: linear.outFeatures, columns: linear.inFeatures, floats: linear.dequantized()))
            }
            let expected = try meanNLL(quantized) - float
            #expect(abs(entry.deltaNLL - expected) <= 1e-5, "layer \(entry.layer): \(entry.deltaNLL) vs \(expected)")
            #expect(entry.deltaNLL != 0)
        }
    }
}

/// OTP's `logits` target: squared distances of mapped expert outputs are the variance, under the
/// token's (top-m) next-token distribution, of the logit change the output change causes.
@Suite struct LogitFisherTests {
    @Test func mappedDistancesAreTheLogitChangeVariance() throws {
        let directory = ProfilerTests.fixtures.appendingPathComponent("mixtral").path
        let model = try FloatModel(directory: directory)
        let config = model.config
        let tokens = ModelQuantizerTests.tokens(vocab: config.vocabSize)
        let states = CalibrationWindows.embed(model: model, tokens: tokens, windows: 2, sequenceLength: 16)
        let fisher = try LogitFisher(model: model, states: states, sequenceLength: 16)
        let h = config.hiddenSize, k = 2, n = 32
        #expect(fisher.inverseRMS.count == n && fisher.top.count == n * h)
        var generator = SplitMix64(seed: 3)
        let outputs = (0..<(n * k * h)).map { _ in Float(generator.gaussian()) }
        let set = OTPTrainingSet(layer: 0, hiddenSize: h, slots: k, expertCount: config.expertCount, hidden: [Float](repeating: 0, count: n * h),
                                 probabilities: [Float](repeating: 0.5, count: n * k), experts: [Int32](repeating: 0, count: n * k).enumerated().map { Int32($0.offset % 2) },
                                 weights: [Float](repeating: 0.5, count: n * k), expertOutputs: outputs)
        let mapped = fisher.transform(set)
        let head = model.matrix(.lmHead).floats, g = model.weight(.finalNorm)
        for t in [0, 7, 31] {
            // δ = E_0 − 2·E_1 in hidden space, and its image.
            let delta = (0..<h).map { outputs[(t * k) * h + $0] - 2 * outputs[(t * k + 1) * h + $0] }
            let image = (0..<h).map { mapped.expertOutputs[(t * k) * h + $0] - 2 * mapped.expertOutputs[(t * k + 1) * h + $0] }
            let squared = image.reduce(0) { $0 + Double($1) * Double($1) }
            // Independent: logit change on the top-m entries, its variance under p.
            var mean = 0.0, second = 0.0
            for v in 0..<h {
                let p = Double(fisher.probabilities[t * h + v]), row = Int(fisher.top[t * h + v])
                var change = 0.0
                for i in 0..<h { change += Double(head[row * h + i]) * Double(g[i]) * Double(fisher.inverseRMS[t]) * Double(delta[i]) }
                mean += p * change
                second += p * change * change
            }
            let variance = second - mean * mean
            #expect(abs(squared - variance) <= 1e-4 * max(variance, 1e-6), "token \(t): \(squared) vs \(variance)")
        }
        #expect(abs(fisher.probabilities[0..<h].reduce(0, +) - 1) < 1e-5)
    }
}
