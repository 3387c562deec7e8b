import Foundation
import Testing
import ModelFormat
@testable import MoERuntime

/// The float forward pass against transformers' logits and routing on tiny checkpoints of each
/// architecture (tools/fixtures/make_tiny_models.py).
@Suite struct FloatForwardTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/tiny")
    /// Max abs logit difference allowed against transformers with f32 weights.
    static let logitTolerance: Float = 1e-3

    final class Recorder: RouterObserver {
        var choices: [Int: [Int: [Int]]] = [:]
        func routed(layer: Int, token: Int, probabilities: [Float], experts: [Int], weights: [Float]) {
            choices[layer, default: [:]][token] = experts
        }
    }

    @Test(arguments: MoEArchitecture.allCases)
    func prefillMatchesTransformers(architecture: MoEArchitecture) throws {
        let directory = Self.fixtures.appendingPathComponent(architecture.rawValue).path
        let model = try FloatModel(directory: directory)
        let reference = try SafeTensorsFile(path: directory + "/reference.safetensors")
        let ids = try reference.bytes("input_ids").bindMemory(to: Int32.self).map { Int($0) }
        let expected = try reference.floats("logits")
        let recorder = Recorder()
        let logits = try FloatForward(model: model, observer: recorder).logits(ids)
        #expect(logits.count == expected.count)
        let worst = zip(logits, expected).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worst <= Self.logitTolerance, "max |Δlogit| = \(worst)")
        // The same experts, in the same order, for every token and layer.
        let routing = try reference.bytes("routing").bindMemory(to: Int32.self).map { Int($0) }
        let k = model.config.routing.topK
        for layer in 0..<model.config.layerCount {
            for token in ids.indices {
                let start = (layer * ids.count + token) * k
                #expect(Set(recorder.choices[layer]?[token] ?? []) == Set(routing[start..<(start + k)]), "layer \(layer) token \(token)")
            }
        }
    }

    @Test(arguments: MoEArchitecture.allCases)
    func decodeWithKVCacheMatchesTransformers(architecture: MoEArchitecture) throws {
        let directory = Self.fixtures.appendingPathComponent(architecture.rawValue).path
        let model = try FloatModel(directory: directory)
        let reference = try SafeTensorsFile(path: directory + "/reference.safetensors")
        let ids = try reference.bytes("input_ids").bindMemory(to: Int32.self).map { Int($0) }
        let expected = try reference.floats("logits")
        let vocab = model.config.vocabSize
        let session = FloatForward(model: model)
        // A 5-token prefill, then one token at a time.
        var logits = try session.logits(Array(ids.prefix(5)))
        for token in ids.dropFirst(5) { logits += try session.logits([token]) }
        #expect(session.position == ids.count)
        let worst = zip(logits, expected).map { abs($0 - $1) }.max() ?? .infinity
        #expect(logits.count == ids.count * vocab)
        #expect(worst <= Self.logitTolerance, "max |Δlogit| = \(worst)")
        session.reset()
        #expect(try session.logits(ids) == (try FloatForward(model: model).logits(ids)))
    }

    @Test func rejectsTokensOutsideTheVocabulary() throws {
        let model = try FloatModel(directory: Self.fixtures.appendingPathComponent("mixtral").path)
        #expect(throws: ModelFormatError.self) { try FloatForward(model: model).logits([1, 96]) }
    }
}
