import Foundation
@testable import ModelFormat
import Testing

/// Every command on the tiny DeepSeek checkpoints as a user runs them — profile → solve → sweep
/// → quantize → otp train → eval — the FP8 one included; and DeepSeek configs or FP8 scales that
/// do not add up are refused in one line naming the field, with no output.
@Suite struct DeepSeekCLITests {
    static func fixture(_ name: String) -> String {
        RuntimeCLITests.fixtures.appendingPathComponent("tiny/\(name)").path
    }

    @Test(arguments: ["deepseek_v2", "deepseek_v3_fp8"])
    func wholeChainRuns(name: String) throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let calib = try PackAndRunCLITests.calibration(in: directory)
        let source = Self.fixture(name)
        let run = CLITests.succeeds
        _ = try run([
            "profile", "--model", source, "--calib", calib, "--samples", "8", "--seq-len", "16", "--group-size", "16",
            "--sensitivity-windows", "2", "--out", directory + "/profile.json", "--quiet",
        ])
        _ = try run([
            "solve", "--profile", directory + "/profile.json", "--bits", "2.5", "--out", directory + "/a.json",
        ])
        _ = try run([
            "sweep", "--profile", directory + "/profile.json", "--from", "1.5", "--to", "3", "--out",
            directory + "/front",
        ])
        _ = try run([
            "quantize", "--model", source, "--allocation", directory + "/a.json", "--calib", calib, "--samples", "4",
            "--seq-len", "16", "--out", directory + "/packed", "--quiet",
        ])
        // A GPTQ checkpoint: no FP8 left, DeepSeek's float modules named in `dynamic`.
        let packed = try SafeTensorsFile(path: directory + "/packed/model.safetensors")
        #expect(try packed.names.allSatisfy { try FP8.table(packed.info($0).dtype) == nil })
        #expect(!packed.names.contains { $0.hasSuffix("weight_scale_inv") })
        let config = try #require(
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: directory + "/packed/config.json")))
                as? [String: Any])
        // The source's numbers as written: its fp8 quantization_config is cut out of the text, not re-encoded.
        let text = try String(contentsOfFile: directory + "/packed/config.json", encoding: .utf8)
        #expect(text.contains("\"routed_scaling_factor\": 1.") && !text.contains("fp8"))
        let quantization = try #require(config["quantization_config"] as? [String: Any])
        #expect(quantization["quant_method"] as? String == "gptq")
        let dynamic = try #require(quantization["dynamic"] as? [String: Any])
        for module in ["shared_experts\\.gate_proj", "self_attn\\.kv_a_proj_with_mqa", "self_attn\\.kv_b_proj"] {
            #expect(dynamic.keys.contains { $0.hasPrefix("-:") && $0.contains(module) }, "\(module)")
        }
        _ = try run([
            "otp", "train", "--model", directory + "/packed", "--calib", calib, "--keep", "0.75", "--samples", "8",
            "--seq-len", "16", "--epochs", "5", "--quiet",
        ])
        let topK = try MoEModelConfig.read(directory: source).routing.topK
        for prune in ["none", "odp", "otp"] {
            _ = try run([
                "eval", "--model", directory + "/packed", "--tokens", calib, "--seq-len", "16", "--prune", prune,
                "--json", directory + "/eval.json", "--quiet",
            ])
            let json = try #require(
                try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/eval.json")))
                    as? [String: Any])
            let experts = try #require(json["expertsPerToken"] as? Double)
            #expect(prune == "none" ? experts == Double(topK) : experts < Double(topK), "\(prune): \(experts)")
            #expect((json["perplexity"] as? Double ?? .infinity).isFinite)
        }
    }

    /// A copy of `name` with `edit` applied to its config.json.
    static func edited(_ name: String, in directory: String, _ edit: (inout [String: Any]) -> Void) throws -> String {
        let target = directory + "/" + name
        try FileManager.default.copyItem(atPath: Self.fixture(name), toPath: target)
        let path = target + "/config.json"
        var config =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: path))
        return target
    }

    @Test func inconsistentConfigsAndScalesAreOneLine() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let calib = try PackAndRunCLITests.calibration(in: directory)
        let cases: [(String, (inout [String: Any]) -> Void, String)] = [
            ("deepseek_v2", { $0["topk_group"] = 5 }, "topk_group: 5 exceeds n_group 4"),
            ("deepseek_v3", { $0["num_experts_per_tok"] = 9 }, "num_experts_per_tok: 9 exceeds"),
            ("deepseek_v3", { $0["n_group"] = 3 }, "n_group: 3 groups do not divide the 8 routed experts"),
            ("deepseek_v2", { $0["topk_method"] = "noaux_tc" }, "topk_method"),
            ("deepseek_v2", { $0["rope_scaling"] = ["type": "dynamic", "factor": 2.0] }, "rope_scaling.type"),
            ("deepseek_v3", { $0["qk_rope_head_dim"] = 7 }, "qk_rope_head_dim"),
            (
                "deepseek_v3_fp8",
                { $0["quantization_config"] = ["quant_method": "fp8", "weight_block_size": [32, 16]] },
                "weight_scale_inv"
            ),
            ("deepseek_v3_fp8", { $0["quantization_config"] = nil }, "quant_method \"fp8\""),
        ]
        for (index, (name, edit, expected)) in cases.enumerated() {
            try FileManager.default.createDirectory(atPath: directory + "/\(index)", withIntermediateDirectories: true)
            let model = try Self.edited(name, in: directory + "/\(index)", edit)
            let out = directory + "/\(index)/profile.json"
            let result = try CLITests.pmq([
                "profile", "--model", model, "--calib", calib, "--samples", "2", "--seq-len", "16", "--out", out,
            ])
            #expect(result.status != 0 && result.stderr.contains(expected), "case \(index): \(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count == 1, "case \(index): \(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: out))
        }
    }
}
