import Foundation
@testable import ModelFormat
import Testing

/// `quantization_config` as GPTQModel reads it: default width, `dynamic` overrides matched at the
/// start of the module name, `-:` skips.
@Suite struct QuantizationConfigTests {
    static func directory(_ quantization: Any?) throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pmq-qc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var config: [String: Any] = ["model_type": "mixtral"]
        if let quantization { config["quantization_config"] = quantization }
        try JSONSerialization.data(withJSONObject: config).write(to: directory.appendingPathComponent("config.json"))
        return directory.path
    }

    @Test func floatModelsHaveNone() throws {
        #expect(try QuantizationConfig.read(directory: try Self.directory(nil)) == nil)
    }

    @Test func dynamicOverridesFollowGPTQModel() throws {
        let config = try #require(
            try QuantizationConfig.read(
                directory: try Self.directory([
                    "quant_method": "gptq", "bits": 2, "group_size": 128, "desc_act": false,
                    "dynamic": [
                        #"+:model\.layers\.0\.block_sparse_moe\.experts\.3\."#: ["bits": 3],
                        #"model\.layers\.1\..*\.w2"#: ["bits": 1, "group_size": 64],
                        #"-:.*\.gate$"#: [String: Any](),
                    ],
                ])))
        #expect(try config.width(of: "model.layers.0.block_sparse_moe.experts.3.w1")! == (3, 128))
        #expect(try config.width(of: "model.layers.0.block_sparse_moe.experts.2.w1")! == (2, 128))
        #expect(try config.width(of: "model.layers.1.block_sparse_moe.experts.5.w2")! == (1, 64))
        // Anchored at the start, as re.match: "xmodel.layers.1…" does not match.
        #expect(try config.width(of: "xmodel.layers.1.block_sparse_moe.experts.5.w2")! == (2, 128))
        #expect(try config.width(of: "model.layers.1.block_sparse_moe.gate") == nil)
    }

    @Test func conflictingOverlapsAndBadFilesAreErrors() throws {
        let ambiguous = try #require(
            try QuantizationConfig.read(
                directory: try Self.directory([
                    "quant_method": "gptq", "bits": 4, "group_size": 128,
                    "dynamic": [#"model\.layers\.0\."#: ["bits": 2], #"model\.layers\.0\.mlp"#: ["bits": 3]],
                ])))
        #expect(throws: ModelFormatError.self) { try ambiguous.width(of: "model.layers.0.mlp.experts.0.up_proj") }
        for bad: Any in [
            ["quant_method": "awq", "bits": 4, "group_size": 128],
            ["quant_method": "gptq", "bits": true, "group_size": 128],
            ["quant_method": "gptq", "bits": 4],
            ["quant_method": "gptq", "bits": 4, "group_size": 128, "dynamic": ["([": ["bits": 2]]],
            "not an object",
        ] {
            #expect(throws: ModelFormatError.self) { try QuantizationConfig.read(directory: try Self.directory(bad)) }
        }
    }
}
