import Foundation
@testable import ModelFormat
import TestSupport
import Testing

/// Configs and tensor maps against checkpoints written by transformers' own `save_pretrained`
/// (tools/fixtures/make_tiny_models.py).
@Suite struct ModelConfigTests {
    static let fixtures = TestFixtures.tiny

    @Test(arguments: MoEArchitecture.allCases)
    func mapCoversTheCheckpointExactly(architecture: MoEArchitecture) throws {
        let directory = Self.fixtures.appendingPathComponent(architecture.rawValue).path
        let config = try MoEModelConfig.read(directory: directory)
        #expect(config.architecture == architecture)
        let file = try SafeTensorsFile(path: directory + "/model.safetensors")
        let expected = ArchitectureMap(architecture).expectedTensors(config)
        var names = Set<String>()
        for (role, shape) in expected {
            let name = ArchitectureMap(architecture).name(role)
            names.insert(name)
            let info = try file.info(name)
            #expect(info.shape == shape, "\(name)")
        }
        // DeepSeek-V3's multi-token-prediction layer is on disk but not part of the model.
        let trailing = (config.layerCount..<(config.layerCount + config.trailingLayers)).map { "model.layers.\($0)." }
        let stored = Set(file.tensors.keys.filter { name in !trailing.contains { name.hasPrefix($0) } })
        #expect(names == stored, "left over: \(stored.subtracting(names).sorted())")
    }

    @Test func readsEachArchitecturesRouting() throws {
        let mixtral = try MoEModelConfig.read(directory: Self.fixtures.appendingPathComponent("mixtral").path)
        #expect(mixtral.routing == RoutingRule(topK: 2, normalizeTopK: true))
        #expect(mixtral.expertCount == 4 && mixtral.expertIntermediateSize == 48)
        let qwen2 = try MoEModelConfig.read(directory: Self.fixtures.appendingPathComponent("qwen2_moe").path)
        #expect(qwen2.routing.normalizeTopK == false && qwen2.sharedExpertIntermediateSize == 40 && qwen2.attentionBias)
        let qwen3 = try MoEModelConfig.read(directory: Self.fixtures.appendingPathComponent("qwen3_moe").path)
        #expect(qwen3.routing.normalizeTopK && qwen3.qkNorm == .perHead && qwen3.headDim == 16)
        let olmoe = try MoEModelConfig.read(directory: Self.fixtures.appendingPathComponent("olmoe").path)
        #expect(!olmoe.routing.normalizeTopK && olmoe.qkNorm == .fullProjection)
    }

    @Test func rejectsUnsupportedAndBrokenConfigs() {
        func problem(_ json: String) -> String? {
            do {
                _ = try MoEModelConfig.parse(Data(json.utf8), file: "config.json")
                return nil
            } catch {
                return (error as? LocalizedError)?.errorDescription
            }
        }
        #expect(problem(#"{"model_type": "llama"}"#)?.contains("config.json: unsupported architecture 'llama'") == true)
        #expect(
            problem(#"{"model_type": "mixtral", "hidden_size": 32}"#)?.contains(
                "config.json: num_attention_heads: missing") == true)
        #expect(
            problem(
                #"{"model_type": "mixtral", "vocab_size": 8, "hidden_size": -4, "num_attention_heads": 2,"#
                    + #" "num_hidden_layers": 1, "num_experts_per_tok": 1, "num_local_experts": 2,"#
                    + #" "intermediate_size": 8}"#
            )?.contains("hidden_size: must be > 0") == true)
        #expect(
            problem(
                #"{"model_type": "mixtral", "vocab_size": 8, "hidden_size": 4, "num_attention_heads": 2,"#
                    + #" "num_hidden_layers": 1, "num_experts_per_tok": 3, "num_local_experts": 2,"#
                    + #" "intermediate_size": 8}"#
            )?.contains("exceeds the 2 experts") == true)
        #expect(problem("{")?.contains("config.json: not valid JSON") == true)
    }
}
