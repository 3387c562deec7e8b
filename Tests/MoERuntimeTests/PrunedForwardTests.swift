import Foundation
@testable import ModelFormat
@testable import MoERuntime
import Testing

/// Expert pruning inside the forward pass: dropped experts do not run, the kept weights are
/// rescaled to the full top-k's sum, and the counts say how many experts ran.
@Suite struct PrunedForwardTests {
    /// Keeps only the router's top-1.
    final class TopOne: ExpertPruner {
        func keep(
            layer: Int, hidden: UnsafeBufferPointer<Float>, probabilities: [Float], experts: [Int], weights: [Float]
        ) -> [Bool] {
            experts.indices.map { $0 == 0 }
        }
    }

    /// The tiny Mixtral fixture copied with `num_experts_per_tok` changed.
    static func mixtral(topK: Int) throws -> String {
        let source = ForwardPassTests.fixtures.appendingPathComponent("mixtral")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pmq-pruned-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            at: source.appendingPathComponent("model.safetensors"),
            to: directory.appendingPathComponent("model.safetensors"))
        var config =
            try JSONSerialization.jsonObject(with: Data(contentsOf: source.appendingPathComponent("config.json")))
            as! [String: Any]
        config["num_experts_per_tok"] = topK
        try JSONSerialization.data(withJSONObject: config).write(to: directory.appendingPathComponent("config.json"))
        return directory.path
    }

    @Test func droppingTheSecondExpertEqualsTopOneRouting() throws {
        // Mixtral renormalises its top-k weights, so top-2 pruned to its top-1 (weight rescaled
        // to 1) must equal a top-1 Mixtral.
        let topTwo = try MoEModel(directory: try Self.mixtral(topK: 2))
        let topOne = try MoEModel(directory: try Self.mixtral(topK: 1))
        let ids = Array(0..<24).map { ($0 * 7 + 3) % topTwo.config.vocabSize }
        let pruned = ForwardPass(model: topTwo)
        pruned.pruner = TopOne()
        let logits = try pruned.logits(ids)
        let expected = try ForwardPass(model: topOne).logits(ids)
        let worst = zip(logits, expected).map { abs($0 - $1) }.max()!
        #expect(worst <= 1e-5, "max |Δlogit| = \(worst)")
        for layer in 0..<topTwo.config.layerCount {
            #expect(pruned.tokensRouted[layer] == ids.count)
            #expect(pruned.expertsRun[layer] == ids.count)
        }
        // And pruning does change the output of the top-2 model.
        let unpruned = ForwardPass(model: topTwo)
        let full = try unpruned.logits(ids)
        #expect(zip(full, logits).map { abs($0 - $1) }.max()! > 1e-3)
        #expect(unpruned.expertsRun.allSatisfy { $0 == 2 * ids.count })
        unpruned.resetCounts()
        #expect(unpruned.expertsRun.allSatisfy { $0 == 0 })
    }

    @Test func noPruningChangesNothing() throws {
        let model = try MoEModel(directory: ForwardPassTests.fixtures.appendingPathComponent("qwen2_moe").path)
        let ids = Array(0..<16).map { ($0 * 5 + 1) % model.config.vocabSize }
        let session = ForwardPass(model: model)
        session.pruner = NoPruning()
        #expect(try session.logits(ids) == (try ForwardPass(model: model).logits(ids)))
    }

    @Test func pruningFileRoundTripsAndRejectsStrayTensors() throws {
        let model = try MoEModel(directory: ForwardPassTests.fixtures.appendingPathComponent("mixtral").path)
        let config = model.config
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "pmq-pruning-\(UUID().uuidString)"
        ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let odp = ODPPruner(betas: [0: 0.25, 1: 0.5])
        let gates = Dictionary(
            uniqueKeysWithValues: (0..<config.layerCount).map { layer in
                (
                    layer,
                    OTPGate(
                        hiddenSize: config.hiddenSize, slots: config.routing.topK, expertCount: config.expertCount,
                        weight: (0..<(config.hiddenSize * (config.routing.topK - 1))).map {
                            Float($0 % 7) * 0.01 - Float(layer)
                        },
                        ratioScale: [1.5], bias: [0.25], expertBias: Array(repeating: 0.125, count: config.expertCount))
                )
            })
        try PruningFile.write(
            otp: OTPPruner(gates: gates), odp: odp, config: config, metadata: ["keep": "0.8"], directory: directory)
        let read = try #require(try PruningFile.read(directory: directory, config: config))
        #expect(read.odp.betas == odp.betas)
        #expect(read.otp.gates == gates)
        #expect(read.metadata["keep"] == "0.8")
        // A tensor for a layer the model does not have is an error naming the file.
        var writer = SafeTensorsWriter()
        try writer.add("model.layers.9.block_sparse_moe.odp_beta", shape: [1], floats: [0.5])
        try writer.write(to: directory + "/" + PruningFile.fileName)
        #expect(throws: ModelFormatError.self) { try PruningFile.read(directory: directory, config: config) }
    }
}
