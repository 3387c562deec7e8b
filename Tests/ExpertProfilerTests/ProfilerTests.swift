import Foundation
@testable import ModelFormat
@testable import Quantization
@testable import MoERuntime
@testable import ExpertProfiler
import TestSupport
import Testing

@Suite struct ProfilerTests {
    static let fixtures = TestFixtures.tiny

    /// freq and mass equal those computed from transformers' own router on the same tokens.
    @Test(arguments: MoEArchitecture.allCases)
    func routingStatisticsMatchTransformers(architecture: MoEArchitecture) throws {
        let directory = Self.fixtures.appendingPathComponent(architecture.rawValue).path
        let reference = try SafeTensorsFile(path: directory + "/reference.safetensors")
        let ids = try reference.bytes("input_ids").bindMemory(to: Int32.self).map { Int($0) }
        let routing = try reference.bytes("routing").bindMemory(to: Int32.self).map { Int($0) }
        let probabilities = try reference.floats("router_probs")
        let model = try MoEModel(directory: directory)
        let config = model.config
        let document = try Profiler(
            model: model, options: .init(widths: [2, 4], groupSize: 16, sequenceLength: ids.count, samples: 1)
        )
        .run(tokens: ids, description: "fixture")
        let k = config.routing.topK, experts = config.expertCount
        #expect(document.layers.count == config.moeLayers.filter { $0 }.count)
        // The reference holds the MoE layers in order (DeepSeek's first layers are dense).
        for (ordinal, layer) in document.layers.enumerated() {
            for expert in layer.experts {
                var freq = 0
                var mass = 0.0
                for token in ids.indices {
                    let start = (ordinal * ids.count + token) * k
                    if routing[start..<(start + k)].contains(expert.index) {
                        freq += 1
                        mass += Double(probabilities[(ordinal * ids.count + token) * experts + expert.index])
                    }
                }
                #expect(Int(expert.freq) == freq, "layer \(layer.index) expert \(expert.index)")
                #expect(abs(expert.mass - mass) <= 1e-5, "layer \(layer.index) expert \(expert.index)")
                let errors = expert.error.entries.map(\.value)
                #expect(errors.count == 2 && errors[0] >= errors[1], "error must not rise with width: \(errors)")
                #expect(
                    expert.bytes.entries.map(\.value)
                        == [2, 4].map {
                            PackedLayout.expertBytes(
                                hidden: config.hiddenSize, intermediate: config.expertIntermediateSize, bits: $0,
                                groupSize: 16)
                        })
            }
        }
    }

    @Test(arguments: [11, 37, 130])
    func hessianAccumulatorMatchesNaiveSum(dimension n: Int) {
        var accumulator = HessianAccumulator(dimension: n)
        let rows = (0..<300).map { r in (0..<n).map { Float(sin(Double(r * n + $0))) } }
        let selected = [0, 2, 3, 6] + Array(stride(from: 9, to: 300, by: 7))
        accumulator.add(rows.flatMap { $0 }, rows: selected)
        accumulator.add(rows[1])
        accumulator.add(rows[4] + rows[5])
        let h = accumulator.matrix
        for i in 0..<n {
            for j in 0..<n {
                let expected = (selected + [1, 4, 5]).reduce(0.0) { $0 + Double(rows[$1][i]) * Double(rows[$1][j]) }
                #expect(abs(h[i * n + j] - expected) <= 1e-5 * max(1, abs(expected)), "H[\(i), \(j)]")
            }
        }
        #expect(accumulator.samples == selected.count + 3)
    }
}

@Suite struct ProfilerSliceTests {
    static func run(layers: Range<Int>? = nil, checkpoint: String? = nil, widths: [Int] = [2, 3], lazy: Bool = false)
        throws -> Profile
    {
        let directory = TestFixtures.tiny.appendingPathComponent("qwen3_moe").path
        let model = try MoEModel(directory: directory, lazy: lazy)
        let tokens = (0..<48).map { ($0 * 29 + 3) % 96 }
        return try Profiler(model: model, options: .init(widths: widths, groupSize: 16, sequenceLength: 16, samples: 3))
            .run(tokens: tokens, description: "slices", layers: layers, checkpointDirectory: checkpoint)
    }

    /// The document without its wall times, which differ from run to run.
    static func json(_ document: Profile) throws -> Data {
        var document = document
        document.seconds = nil
        for index in document.layers.indices {
            document.layers[index].seconds = nil
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return try encoder.encode(document)
    }

    @Test func lazyModelGivesTheSameProfile() throws {
        #expect(try Self.json(Self.run(lazy: true)) == Self.json(Self.run(lazy: false)))
    }

    @Test func slicesJoinToTheWholeProfile() throws {
        let whole = try Self.run()
        var first = try Self.run(layers: 0..<1)
        let second = try Self.run(layers: 1..<2)
        #expect(first.layers.map(\.index) == [0] && second.layers.map(\.index) == [1])
        #expect(first.profiling?.layers == [0, 1] && second.profiling?.layers == [1, 2])
        #expect(whole.profiling?.layers == [0, 2])
        // Each slice measured its own layer's sensitivity exactly as the whole run did.
        first.layers += second.layers
        first.profiling?.layers = [0, 2]
        #expect(try Self.json(first) == Self.json(whole))
        #expect(whole.layers.allSatisfy { $0.sensitivity != nil } && first.layers.allSatisfy { $0.sensitivity != nil })
    }

    @Test func resumesFromSavedLayersAndRefusesAnotherRun() throws {
        let checkpoint = FileManager.default.temporaryDirectory.appendingPathComponent(
            "pmq-resume-\(UUID().uuidString)"
        ).path
        defer { try? FileManager.default.removeItem(atPath: checkpoint) }
        let whole = try Self.run(checkpoint: checkpoint)
        #expect(FileManager.default.fileExists(atPath: checkpoint + "/layer-1.json"))
        // A saved layer is used as is on the next run: mark it and see the mark come back.
        var saved = try JSONDecoder().decode(
            Profile.Layer.self, from: Data(contentsOf: URL(fileURLWithPath: checkpoint + "/layer-1.json")))
        saved.experts[0].note = "from the checkpoint"
        try JSONEncoder().encode(saved).write(to: URL(fileURLWithPath: checkpoint + "/layer-1.json"))
        let resumed = try Self.run(checkpoint: checkpoint)
        #expect(resumed.layers[1].experts[0].note == "from the checkpoint")
        #expect(resumed.layers[0].experts.map(\.freq) == whole.layers[0].experts.map(\.freq))
        // The reference-width experts saved with each layer give the same sensitivities.
        #expect(
            resumed.layers.map(\.sensitivity) == whole.layers.map(\.sensitivity) && whole.layers[0].sensitivity != nil)
        // Other settings: refused, not mixed.
        #expect(throws: ModelFormatError.self) { try Self.run(checkpoint: checkpoint, widths: [2, 4]) }
    }
}
