import Foundation
import Calibration
@testable import ModelFormat
@testable import Kernels
@testable import Quantization
@testable import MoERuntime
@testable import QuantEngine
import TestSupport
import Testing

/// `pmq quantize`'s engine: every expert packed at its planned width; the packed model, loaded
/// back, computes the same logits as the float path run on the dequantized weights.
@Suite struct ModelQuantizerTests {
    static let tiny = TestFixtures.tiny

    static func temporaryPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("pmq-\(name)-\(UUID().uuidString)").path
    }

    /// Calibration tokens for the tiny models: 4 windows of 16.
    /// Widths 1, 2, 3, 4, 8 spread over the experts.
    static func mixedPlan(_ config: MoEModelConfig) -> AllocationPlan {
        var widths: [Int: [Int: Int]] = [:]
        let choices = [1, 2, 3, 4, 8]
        for layer in 0..<config.layerCount where config.moeLayers[layer] {
            widths[layer] = Dictionary(
                uniqueKeysWithValues: (0..<config.expertCount).map { ($0, choices[(layer + $0) % choices.count]) })
        }
        return AllocationPlan(widths: widths, groupSize: 16)
    }

    @Test(arguments: [(MoEArchitecture.mixtral, false), (.qwen2MoE, false), (.mixtral, true)])
    func packedModelMatchesTheFloatPathOnDequantizedWeights(architecture: MoEArchitecture, actOrder: Bool) throws {
        let source = Self.tiny.appendingPathComponent(architecture.rawValue).path
        let float = try MoEModel(directory: source, lazy: true)
        let plan = Self.mixedPlan(float.config)
        let output = try ModelQuantizer(
            model: float, options: .init(sequenceLength: 16, samples: 4, actOrder: actOrder)
        )
        .run(tokens: TestFixtures.calibrationTokens(vocab: float.config.vocabSize), plan: plan)
        // Act-order: the layers' groups are permuted and the runtime takes the rewritten (contiguous) path.
        #expect(output.linears.values.contains { Int($0.gIdx[1]) != 1 / $0.groupSize } == actOrder)
        let moeLayers = float.config.moeLayers.filter { $0 }.count
        #expect(output.linears.count == moeLayers * float.config.expertCount * 3)
        let out = Self.temporaryPath("packed")
        try PackedModelExport.write(sourceDirectory: source, output: output, actOrder: actOrder, keepF32: true, to: out)
        defer { try? FileManager.default.removeItem(atPath: out) }

        let packed = try MoEModel(directory: out)
        // The reference: the source model with every expert replaced by its dequantized weights.
        let reference = try MoEModel(directory: source)
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
                    reference.replace(
                        role,
                        with: Matrix(rows: linear.outFeatures, columns: linear.inFeatures, floats: linear.dequantized())
                    )
                }
            }
        }
        #expect(widthsSeen == [1, 2, 3, 4, 8])
        let ids = Array(TestFixtures.calibrationTokens(vocab: float.config.vocabSize).prefix(16))
        let packedLogits = try ForwardPass(model: packed).logits(ids)
        let referenceLogits = try ForwardPass(model: reference).logits(ids)
        let worst = zip(packedLogits, referenceLogits).map { abs($0 - $1) }.max()!
        #expect(worst <= 1e-4, "max |Δlogit| = \(worst)")
        // Quantization did change the model.
        let floatLogits = try ForwardPass(model: try MoEModel(directory: source)).logits(ids)
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
        func write(_ object: Any) throws {
            try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
        }
        let good: [String: Any] = [
            "format": "pmq-allocation", "version": 1,
            "parameters": [
                "groupSize": 64, "model": "m", "budget": 2.5, "budgetKind": "bits", "importance": "measured",
            ],
            "layers": [["index": 0, "experts": [["index": 0, "bits": 3], ["index": 1, "bits": 2]]]],
        ]
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
