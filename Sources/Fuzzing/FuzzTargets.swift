import Foundation
import ModelFormat
import MoERuntime
import QuantEngine

/// One input format: a valid seed and the real reader it goes through. A reader either accepts
/// the bytes or throws; a trap or a hang is a finding.
public struct FuzzTarget: Sendable {
    public let name: String
    public let seed: [UInt8]
    /// Reads `bytes` with pmq's reader; `scratch` is an empty folder for formats read from files.
    let read: @Sendable (_ bytes: [UInt8], _ scratch: String) throws -> Void

    public static let all: [FuzzTarget] = [
        profile, allocation, config, tokenizer, safetensors, shardIndex, tokens, packedConfig, fp8Config, cache,
        pruning,
    ]

    /// Targets that prove the harness itself: one that traps and one that never returns, each on
    /// its case 3 (`pmq fuzz --format harness-trap|harness-hang`; not part of a normal run).
    public static let harnessChecks: [FuzzTarget] = [
        FuzzTarget(
            name: "harness-trap", seed: [0],
            read: { _, scratch in if try countRead(scratch) == 5 { fatalError("harness check: a trap") } }),
        FuzzTarget(
            name: "harness-hang", seed: [0],
            read: { _, scratch in
                guard try countRead(scratch) == 5 else { return }
                while true { sleep(1) }
            }),
    ]

    /// The target of that name, a harness check included.
    public static func named(_ name: String) -> FuzzTarget? {
        (all + harnessChecks).first { $0.name == name }
    }

    /// Counts the reads of a harness check in its scratch folder: the seed's is 1, case N's N + 2.
    static func countRead(_ scratch: String) throws -> Int {
        let marker = scratch + "/cases"
        let count = ((try? String(contentsOfFile: marker, encoding: .utf8)).flatMap { Int($0) } ?? 0) + 1
        try String(count).write(toFile: marker, atomically: false, encoding: .utf8)
        return count
    }

    static func write(_ bytes: [UInt8], _ path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    static let mixtralConfig = """
        {"model_type": "mixtral", "vocab_size": 16, "hidden_size": 8, "num_attention_heads": 2,
         "num_key_value_heads": 1, "num_hidden_layers": 2, "num_experts_per_tok": 2, "num_local_experts": 4,
         "intermediate_size": 12, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64,
         "hidden_act": "silu", "tie_word_embeddings": false}
        """

    static let profile = FuzzTarget(
        name: "profile",
        seed: Array(
            """
            {"format": "pmq-profile", "version": 1, "model": {"name": "m", "architecture": "mixtral", "topK": 1},
             "calibration": {"tokens": 1024, "description": "c", "fingerprint": "f"}, "widths": [0, 1, 2, 3],
             "groupSize": 128, "layers": [{"index": 0, "experts": [
              {"index": 0, "params": 288, "freq": 10, "mass": 2.5, "tokens": 10,
               "error": {"0": 9.0, "1": 4.0, "2": 1.0, "3": 0.25}, "bytes": {"0": 0, "1": 120, "2": 200, "3": 260},
               "outputError": {"0": 0.9, "1": 0.4, "2": 0.1, "3": 0.02}},
              {"index": 1, "params": 288, "freq": 3, "mass": 0.5,
               "error": {"0": 5.0, "1": 2.0, "2": 0.5, "3": 0.125}, "bytes": {"0": 0, "1": 120, "2": 200, "3": 260}}],
              "sensitivity": {"width": 2, "deltaNLL": 0.05, "tokens": 512,
               "byWidth": {"1": 0.3, "2": 0.05, "3": 0.01}}}]}
            """.utf8),
        read: { bytes, _ in
            // The streaming reader may only accept what the tree reader reads the same way.
            guard ProfileReader.streamingAgreesWithTree(Data(bytes)) else {
                fatalError("the streaming and tree profile readers disagree")
            }
            _ = try ProfileReader.parse(Data(bytes), file: "profile.json")
        })

    static let allocation = FuzzTarget(
        name: "allocation",
        seed: Array(
            """
            {"format": "pmq-allocation", "version": 1, "parameters": {"groupSize": 128, "calibration": "c"},
             "layers": [{"index": 0, "experts": [{"index": 0, "bits": 2}, {"index": 1, "bits": 3}, {"index": 2,
             "bits": 0}, {"index": 3, "bits": 1}]}, {"index": 1, "experts": [{"index": 0, "bits": 8}, {"index": 1,
             "bits": 4}, {"index": 2, "bits": 2}, {"index": 3, "bits": 2}]}]}
            """.utf8),
        read: { bytes, scratch in
            let path = scratch + "/allocation.json"
            try write(bytes, path)
            let plan = try AllocationPlan.read(path: path)
            try plan.validate(against: try MoEModelConfig.parse(Data(mixtralConfig.utf8), file: "c"), file: path)
        })

    static let config = FuzzTarget(
        name: "config", seed: Array(mixtralConfig.utf8),
        read: { bytes, _ in _ = try MoEModelConfig.parse(Data(bytes), file: "config.json") })

    static let tokenizer = FuzzTarget(
        name: "tokenizer",
        seed: Array(
            """
            {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "\\u0120": 3, "\\u0120a": 4},
             "merges": ["a b", ["\\u0120", "a"]]}, "added_tokens": [{"id": 5, "content": "<s>"}],
             "pre_tokenizer": {"type": "ByteLevel"}}
            """.utf8),
        read: { bytes, _ in
            let tokenizer = try BPETokenizer(data: Data(bytes), file: "tokenizer.json")
            _ = tokenizer.encode("ab a b<s>")
        })

    /// A small safetensors file: three tensors and metadata.
    static let safetensorsSeed: [UInt8] = {
        var writer = SafeTensorsWriter()
        try? writer.add("a.weight", shape: [2, 3], floats: [1, 2, 3, 4, 5, 6])
        try? writer.add("b", dtype: .bf16, shape: [4], data: Data(repeating: 0x3F, count: 8))
        try? writer.add("c", dtype: .i32, shape: [1], data: Data([1, 0, 0, 0]))
        writer.metadata = ["format": "pt"]
        return Array((try? writer.serialized()) ?? Data())
    }()

    static let safetensors = FuzzTarget(
        name: "safetensors", seed: safetensorsSeed,
        read: { bytes, scratch in
            let path = scratch + "/model.safetensors"
            try write(bytes, path)
            let file = try SafeTensorsFile(path: path)
            for name in file.names where file.tensors[name]!.dtype.isFloatingPoint { _ = try file.floats(name) }
        })

    static let shardIndex = FuzzTarget(
        name: "shard-index",
        seed: Array(
            (#"{"metadata": {"total_size": 40}, "weight_map": {"a.weight": "s1.safetensors", "b": "s1.safetensors","#
                + #" "c": "s1.safetensors"}}"#).utf8),
        read: { bytes, scratch in
            try write(safetensorsSeed, scratch + "/s1.safetensors")
            try write(bytes, scratch + "/model.safetensors.index.json")
            _ = try CheckpointFiles(directory: scratch)
        })

    static let tokens = FuzzTarget(
        name: "tokens", seed: (0..<64).flatMap { index in [UInt8(index % 16), 0, 0, 0] },
        read: { bytes, scratch in
            let path = scratch + "/tokens.u32"
            try write(bytes, path)
            try TokenFile(path: path).validate(vocabSize: 16)
        })

    static let packedConfigSeed =
        String(mixtralConfig.dropLast()) + """
            , "quantization_config": {"quant_method": "gptq", "bits": 2, "group_size": 128, "desc_act": false,
             "checkpoint_format": "gptq", "dynamic": {"-:^model\\\\.layers\\\\.0\\\\.self_attn$": {},
             "^model\\\\.layers\\\\.1\\\\.block_sparse_moe\\\\.experts\\\\.0\\\\.w1$": {"bits": 3, "group_size": 64}},
             "pmq": {"removed_experts": {"1": [2]}}}}
            """

    static let packedConfig = FuzzTarget(
        name: "packed-config", seed: Array(packedConfigSeed.utf8),
        read: { bytes, scratch in
            try write(bytes, scratch + "/config.json")
            guard let config = try QuantizationConfig.read(directory: scratch) else { return }
            _ = try config.width(of: "model.layers.1.block_sparse_moe.experts.0.w1")
            _ = try config.width(of: "model.layers.0.self_attn")
        })

    static let fp8Config = FuzzTarget(
        name: "fp8-config",
        seed: Array(
            (String(mixtralConfig.dropLast())
                + #", "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128],"#
                + #" "activation_scheme": "dynamic"}}"#)
                .utf8),
        read: { bytes, scratch in
            try write(bytes, scratch + "/config.json")
            _ = try FP8Config.read(directory: scratch)
        })

    static let cache = FuzzTarget(
        name: "cache-manifest",
        seed: Array(
            """
            {"format": "pmq-quantization-cache", "version": 1, "modelDirectory": "m", "fingerprint": {"model": "1f",
             "architecture": "mixtral", "calibration": "c", "groupSize": 128, "dampening": 0.01, "actOrder": false,
             "clipSearch": false}}
            """.utf8),
        read: { bytes, scratch in
            try write(bytes, scratch + "/cache.json")
            _ = try QuantizationCache.open(directory: scratch)
        })
}

extension FuzzTarget {
    /// A pruning file for `mixtralConfig` (two MoE layers, top-2 of 4 experts, hidden size 8):
    /// an OTP gate and the ODP thresholds per layer, as `pmq otp train` writes it.
    static let pruningSeed: [UInt8] = {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("pmq-fuzz-seed-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        guard (try? FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)) != nil,
            let config = try? MoEModelConfig.parse(Data(mixtralConfig.utf8), file: "config.json")
        else { return [] }
        var gates: [Int: OTPGate] = [:]
        for layer in 0..<2 {
            var gate = OTPGate(odpBeta: 0.1 * Float(layer + 1), hiddenSize: 8, slots: 2, expertCount: 4)
            gate.weight = (0..<8).map { Float($0) * 0.01 }
            gate.expertBias = [0.5, -0.25, 0, 1]
            gates[layer] = gate
        }
        try? PruningFile.write(
            otp: OTPPruner(gates: gates), odp: ODPPruner(betas: [0: 0.1, 1: 0.2]), oracleThresholds: [0: 0.01],
            config: config, metadata: ["trainedOn": "fuzz seed"], directory: scratch)
        return Array((try? Data(contentsOf: URL(fileURLWithPath: scratch + "/" + PruningFile.fileName))) ?? Data())
    }()

    static let pruning = FuzzTarget(
        name: "pruning", seed: pruningSeed,
        read: { bytes, scratch in
            try write(bytes, scratch + "/" + PruningFile.fileName)
            let config = try MoEModelConfig.parse(Data(mixtralConfig.utf8), file: "config.json")
            guard let policies = try PruningFile.read(directory: scratch, config: config) else { return }
            // The runtime's use of the gates: decide the second slot of one token in each layer.
            let hidden = [Float](repeating: 0.5, count: 8)
            for layer in 0..<2 {
                _ = hidden.withUnsafeBufferPointer {
                    policies.otp.keep(
                        layer: layer, hidden: $0, probabilities: [0.6, 0.3, 0.06, 0.04], experts: [0, 1],
                        weights: [0.67, 0.33])
                }
            }
        })
}
