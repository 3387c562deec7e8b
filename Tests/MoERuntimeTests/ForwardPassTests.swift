import Foundation
@testable import ModelFormat
@testable import Kernels
@testable import MoERuntime
import TestSupport
import Testing

/// The float forward pass against transformers' logits and routing on tiny checkpoints of each
/// architecture (tools/fixtures/make_tiny_models.py).
@Suite struct ForwardPassTests {
    static let fixtures = TestFixtures.tiny
    /// Max abs logit difference allowed against transformers with f32 weights.
    static let logitTolerance: Float = 1e-3

    final class Recorder: RouterObserver {
        var choices: [Int: [Int: [Int]]] = [:]
        func routed(layer: Int, token: Int, probabilities: [Float], experts: [Int], weights: [Float]) {
            choices[layer, default: [:]][token] = experts
        }
    }

    /// A tiny checkpoint with transformers' input ids and logits for it.
    static func fixture(_ architecture: MoEArchitecture) throws -> (
        model: MoEModel, reference: SafeTensorsFile, ids: [Int], logits: [Float]
    ) {
        let directory = fixtures.appendingPathComponent(architecture.rawValue).path
        let reference = try SafeTensorsFile(path: directory + "/reference.safetensors")
        let ids = try reference.bytes("input_ids").bindMemory(to: Int32.self).map { Int($0) }
        return (try MoEModel(directory: directory), reference, ids, try reference.floats("logits"))
    }

    @Test(arguments: MoEArchitecture.allCases)
    func prefillMatchesTransformers(architecture: MoEArchitecture) throws {
        let (model, reference, ids, expected) = try Self.fixture(architecture)
        let recorder = Recorder()
        let logits = try ForwardPass(model: model, observer: recorder).logits(ids)
        #expect(logits.count == expected.count)
        let worst = zip(logits, expected).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worst <= Self.logitTolerance, "max |Δlogit| = \(worst)")
        // The same experts, in the same order, for every token and layer.
        let routing = try reference.bytes("routing").bindMemory(to: Int32.self).map { Int($0) }
        let k = model.config.routing.topK
        // The reference holds the MoE layers' choices, in order (DeepSeek's first layers are dense).
        let moeLayers = (0..<model.config.layerCount).filter { model.config.moeLayers[$0] }
        for (ordinal, layer) in moeLayers.enumerated() {
            for token in ids.indices {
                let start = (ordinal * ids.count + token) * k
                #expect(
                    Set(recorder.choices[layer]?[token] ?? []) == Set(routing[start..<(start + k)]),
                    "layer \(layer) token \(token)")
            }
        }
    }

    @Test(arguments: MoEArchitecture.allCases)
    func decodeWithKVCacheMatchesTransformers(architecture: MoEArchitecture) throws {
        let (model, _, ids, expected) = try Self.fixture(architecture)
        let vocab = model.config.vocabSize
        let session = ForwardPass(model: model)
        // A 5-token prefill, then one token at a time.
        var logits = try session.logits(Array(ids.prefix(5)))
        for token in ids.dropFirst(5) { logits += try session.logits([token]) }
        #expect(session.position == ids.count)
        let worst = zip(logits, expected).map { abs($0 - $1) }.max() ?? .infinity
        #expect(logits.count == ids.count * vocab)
        #expect(worst <= Self.logitTolerance, "max |Δlogit| = \(worst)")
        session.reset()
        #expect(try session.logits(ids) == (try ForwardPass(model: model).logits(ids)))
    }

    @Test func rejectsTokensOutsideTheVocabulary() throws {
        let model = try MoEModel(directory: Self.fixtures.appendingPathComponent("mixtral").path)
        #expect(throws: ModelFormatError.self) { try ForwardPass(model: model).logits([1, 96]) }
    }
}

@Suite struct EvaluationTests {
    /// Perplexity of `ids` under `logits` `[ids.count, vocab]`, position t predicting t + 1, in Double.
    static func perplexity(logits: [Float], ids: [Int], vocab: Int) -> Double {
        var nll = 0.0
        for t in 0..<(ids.count - 1) {
            let row = logits[(t * vocab)..<((t + 1) * vocab)].map(Double.init)
            let peak = row.max()!
            nll += log(row.map { exp($0 - peak) }.reduce(0, +)) + peak - row[ids[t + 1]]
        }
        return exp(nll / Double(ids.count - 1))
    }

    /// Perplexity equals the one computed from transformers' own logits (same label shift).
    @Test func perplexityMatchesReferenceLogits() throws {
        let (model, _, ids, logits) = try ForwardPassTests.fixture(.qwen2MoE)
        let expected = Self.perplexity(logits: logits, ids: ids, vocab: model.config.vocabSize)
        let result = try Evaluation.run(model: model, tokens: ids, sequenceLength: ids.count)
        #expect(result.predicted == ids.count - 1 && result.windows == 1)
        #expect(abs(result.perplexity - expected) <= 1e-4 * expected)
        #expect(result.expertTokens.allSatisfy { $0.reduce(0, +) == ids.count * model.config.routing.topK })
        // Two windows of 8: 7 predictions each (no prediction across the window boundary).
        let split = try Evaluation.run(model: model, tokens: ids, sequenceLength: 8)
        #expect(split.windows == 2 && split.predicted == 14)
    }

    @Test func tokenFilesAreValidated() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pmq-tokens-\(UUID().uuidString).u32")
            .path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try TokenFile.write([1, 2, 70000], to: path)
        let file = try TokenFile(path: path)
        #expect(file.tokens == [1, 2, 70000])
        #expect(throws: ModelFormatError.self) { try file.validate(vocabSize: 96) }
        try Data([1, 0, 0]).write(to: URL(fileURLWithPath: path))
        #expect(throws: ModelFormatError.self) { try TokenFile(path: path) }
    }
}

@Suite struct CheckpointLoadingTests {
    static func copyFixture(_ architecture: MoEArchitecture) throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pmq-ckpt-\(UUID().uuidString)")
            .path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: ForwardPassTests.fixtures.appendingPathComponent("\(architecture.rawValue)/config.json").path,
            toPath: directory + "/config.json")
        return directory
    }

    /// Rewrites the fixture's tensors, filtered, into `shards` files with an index.
    static func rewrite(
        _ architecture: MoEArchitecture, into directory: String, shards: Int, keep: (String) -> Bool = { _ in true },
        extra: [String: [Float]] = [:]
    ) throws {
        let source = try SafeTensorsFile(
            path: ForwardPassTests.fixtures.appendingPathComponent("\(architecture.rawValue)/model.safetensors").path)
        var writers = [SafeTensorsWriter](repeating: SafeTensorsWriter(), count: shards)
        var weightMap: [String: String] = [:]
        for (position, name) in source.names.filter(keep).enumerated() {
            let info = try source.info(name)
            let shard = position % shards
            try writers[shard].add(name, dtype: info.dtype, shape: info.shape, data: Data(try source.bytes(name)))
            weightMap[name] = "model-\(shard + 1)-of-\(shards).safetensors"
        }
        for (name, values) in extra {
            try writers[0].add(name, shape: [values.count], floats: values)
            weightMap[name] = "model-1-of-\(shards).safetensors"
        }
        for (shard, writer) in writers.enumerated() {
            try writer.write(to: directory + "/model-\(shard + 1)-of-\(shards).safetensors")
        }
        let index = try JSONSerialization.data(withJSONObject: ["metadata": [:], "weight_map": weightMap])
        try index.write(to: URL(fileURLWithPath: directory + "/model.safetensors.index.json"))
    }

    @Test func shardedCheckpointGivesTheSameLogits() throws {
        let directory = try Self.copyFixture(.qwen3MoE)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Self.rewrite(.qwen3MoE, into: directory, shards: 3)
        let (single, _, ids, _) = try ForwardPassTests.fixture(.qwen3MoE)
        let sharded = try MoEModel(directory: directory)
        #expect(try ForwardPass(model: sharded).logits(ids) == (try ForwardPass(model: single).logits(ids)))
    }

    @Test func missingAndLeftoverTensorsAreNamed() throws {
        let directory = try Self.copyFixture(.mixtral)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Self.rewrite(
            .mixtral, into: directory, shards: 2, keep: { $0 != "model.layers.1.block_sparse_moe.experts.3.w2.weight" })
        do {
            _ = try MoEModel(directory: directory)
            Issue.record("a checkpoint without a tensor loaded")
        } catch let error as ModelFormatError {
            #expect(error.problem == "missing tensor model.layers.1.block_sparse_moe.experts.3.w2.weight")
            #expect(error.file.hasSuffix("model.safetensors.index.json"))
        }
        try Self.rewrite(
            .mixtral, into: directory, shards: 2,
            extra: ["model.layers.0.block_sparse_moe.experts.9.w1.weight": [1, 2]])
        #expect(throws: ModelFormatError.self) { try MoEModel(directory: directory) }
    }
}

@Suite struct BF16Tests {
    static func bf16(_ value: Float) -> UInt16 { UInt16(value.bitPattern >> 16) } // truncation: any bf16 value will do

    /// Decode (fewer than 4 tokens) takes `dotsBF16`: AVX-512 where the CPU has it, and AVX2 forced;
    /// rows in fours and single, pairs in vectors and in the scalar tail.
    @Test(arguments: [(1, 64, 33), (2, 130, 70), (3, 34, 5), (4, 96, 17), (9, 512, 300), (1, 1058, 23)])
    func bf16LinearMatchesReference(tokens: Int, inFeatures: Int, outFeatures: Int) {
        for avx2 in [false, true] {
            CPUFeatures.$forceAVX2.withValue(avx2) {
                checkBF16Linear(tokens: tokens, inFeatures: inFeatures, outFeatures: outFeatures)
            }
        }
    }

    func checkBF16Linear(tokens: Int, inFeatures: Int, outFeatures: Int) {
        var state: UInt32 = 99
        func next() -> Float {
            state = state &* 1_664_525 &+ 1_013_904_223
            return Float(Int32(bitPattern: state) >> 8) / Float(1 << 23)
        }
        let x = (0..<(tokens * inFeatures)).map { _ in next() }
        let bits = (0..<(outFeatures * inFeatures)).map { _ in Self.bf16(next()) }
        let matrix = Matrix(rows: outFeatures, columns: inFeatures, storage: .bf16(bits))
        let bias = (0..<outFeatures).map { _ in next() }
        let fast = Kernels.linear(x, tokens: tokens, matrix: matrix, bias: bias)
        let reference = Kernels.referenceLinear(
            x, tokens: tokens, weight: matrix.floats, outFeatures: outFeatures, inFeatures: inFeatures, bias: bias)
        let tolerance = Float(inFeatures) * 4e-6
        #expect(zip(fast, reference).allSatisfy { abs($0 - $1) <= tolerance * max(1, abs($1)) })
    }

    /// A bf16 checkpoint runs in bf16 and gives the logits of the same weights held as f32.
    @Test func bf16CheckpointMatchesItsF32Twin() throws {
        let source = try SafeTensorsFile(
            path: ForwardPassTests.fixtures.appendingPathComponent("mixtral/model.safetensors").path)
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("pmq-bf16-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        var halves = SafeTensorsWriter(), singles = SafeTensorsWriter()
        for name in source.names {
            let values = try source.floats(name)
            let info = try source.info(name)
            let bits = values.map(Self.bf16)
            var data = Data()
            for value in bits { withUnsafeBytes(of: value.littleEndian) { data.append(contentsOf: $0) } }
            try halves.add(name, dtype: .bf16, shape: info.shape, data: data)
            try singles.add(name, shape: info.shape, floats: bits.map { Float(bitPattern: UInt32($0) << 16) })
        }
        for (directory, writer) in [("bf16", halves), ("f32", singles)] {
            try FileManager.default.createDirectory(atPath: "\(root)/\(directory)", withIntermediateDirectories: true)
            try FileManager.default.copyItem(
                atPath: ForwardPassTests.fixtures.appendingPathComponent("mixtral/config.json").path,
                toPath: "\(root)/\(directory)/config.json")
            try writer.write(to: "\(root)/\(directory)/model.safetensors")
        }
        let half = try MoEModel(directory: root + "/bf16"), single = try MoEModel(directory: root + "/f32")
        if case .bf16 = half.matrix(.expertGate(layer: 0, expert: 0)).storage {
        } else {
            Issue.record("bf16 weights were widened on load")
        }
        #expect(half.weightBytes < single.weightBytes)
        let ids = [1, 17, 42, 5, 88, 23, 64, 9, 31, 77]
        let a = try ForwardPass(model: half).logits(ids), b = try ForwardPass(model: single).logits(ids)
        #expect(zip(a, b).map { abs($0 - $1) }.max()! <= 1e-4)
        // Decode path too.
        let session = ForwardPass(model: half)
        var stepped: [Float] = []
        for id in ids { stepped += try session.logits([id]) }
        #expect(zip(stepped, b).map { abs($0 - $1) }.max()! <= 1e-4)
    }
}

extension CheckpointLoadingTests {
    /// A lazy model (matrices read on demand or per pinned layer) computes exactly what an eager one does.
    @Test(arguments: MoEArchitecture.allCases)
    func lazyModelMatchesEager(architecture: MoEArchitecture) throws {
        let (eager, _, ids, _) = try ForwardPassTests.fixture(architecture)
        let lazy = try MoEModel(directory: eager.directory, lazy: true)
        #expect(try ForwardPass(model: lazy).logits(ids) == (try ForwardPass(model: eager).logits(ids)))
        try lazy.pin(layer: 1)
        #expect(try ForwardPass(model: lazy).logits(ids) == (try ForwardPass(model: eager).logits(ids)))
        lazy.unpin(layer: 1)
        #expect(lazy.parameterCount == eager.parameterCount)
    }
}
