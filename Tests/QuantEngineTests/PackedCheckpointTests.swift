import Foundation
@testable import ModelFormat
@testable import QuantEngine
import TestSupport
import Testing

/// The packed model directory (docs/PACKED_FORMAT.md): tensors, config fields, atomic writes.
@Suite struct PackedCheckpointTests {
    static func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "pmq-packed-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func linear(out: Int, inputs: Int, bits: Int, groupSize: Int, seed: UInt64) -> PackedLinear {
        var generator = TestGenerator(state: seed)
        let groups = (inputs + groupSize - 1) / groupSize
        let maxCode = (1 << bits) - 1
        let codes = (0..<(out * inputs)).map { _ in generator.int(maxCode + 1) }
        let zeros: [Float] =
            bits == 1
            ? [Float](repeating: 0.5, count: groups * out)
            : (0..<(groups * out)).map { _ in Float(generator.int(maxCode + 1)) }
        let scales = (0..<(groups * out)).map { _ in abs(generator.float()) * 0.01 + 1e-4 }
        return PackedLinear(
            packingCodes: codes, zeros: zeros, scales: scales, groupIndex: (0..<inputs).map { Int32($0 / groupSize) },
            outFeatures: out, inFeatures: inputs, bits: bits, groupSize: groupSize)
    }

    static func floats(_ values: [Float]) -> Data { StoredTensor.littleEndianData(values.map(\.bitPattern)) }

    /// A two-layer Mixtral-like model: layer 0's experts at 3 bits but one at 2 and one at 1,
    /// layer 1's at 3 with one 4-bit expert of another group size.
    static func checkpoint(options: PackedCheckpoint.Options = .init()) -> PackedCheckpoint {
        let hidden = 32, intermediate = 48
        var linears: [String: PackedLinear] = [:]
        var seed: UInt64 = 1
        for layer in 0..<2 {
            for expert in 0..<4 {
                var bits = 3, groupSize = 16
                if layer == 0 && expert == 1 { bits = 2 }
                if layer == 0 && expert == 2 { bits = 1 }
                if layer == 1 && expert == 3 { bits = 4; groupSize = 32 }
                for (name, out, inputs) in [
                    ("w1", intermediate, hidden), ("w3", intermediate, hidden), ("w2", hidden, intermediate),
                ] {
                    seed += 1
                    linears["model.layers.\(layer).block_sparse_moe.experts.\(expert).\(name)"] =
                        linear(out: out, inputs: inputs, bits: bits, groupSize: groupSize, seed: seed)
                }
            }
        }
        let bf16 = Data((0..<(hidden * hidden * 2)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        let passthrough = [
            PackedCheckpoint.Passthrough(
                name: "model.embed_tokens.weight", dtype: "BF16", shape: [hidden, hidden], data: bf16),
            PackedCheckpoint.Passthrough(
                name: "model.layers.0.self_attn.q_proj.weight", dtype: "F32", shape: [2, 4],
                data: floats([1, -2, 0.1, 3.0e38, 1.00390625, 1.01171875, -0.0, 65504])),
            PackedCheckpoint.Passthrough(
                name: "model.layers.0.input_layernorm.weight", dtype: "F32", shape: [4], data: floats([1, 1, 1, 1])),
            PackedCheckpoint.Passthrough(
                name: "model.layers.1.block_sparse_moe.gate.weight", dtype: "BF16", shape: [4, hidden],
                data: Data(repeating: 0x3F, count: 4 * hidden * 2)),
        ]
        let extras = [
            PackedCheckpoint.Extra(name: "pmq.otp.layers.0.gate.weight", shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        ]
        let config = try! JSONSerialization.data(withJSONObject: [
            "model_type": "mixtral", "hidden_size": hidden,
            "architectures": ["MixtralForCausalLM"],
        ])
        return PackedCheckpoint(
            sourceConfig: config, passthrough: passthrough, linears: linears, extras: extras,
            allocationReport: Data("{\"version\": 1}".utf8), options: options)
    }

    static func readAll(_ directory: String) throws -> [String: (file: SafeTensorsFile, info: TensorInfo)] {
        var files: [SafeTensorsFile] = []
        let single = (directory as NSString).appendingPathComponent("model.safetensors")
        if FileManager.default.fileExists(atPath: single) {
            files = [try SafeTensorsFile(path: single)]
        } else {
            let index =
                try JSONSerialization.jsonObject(
                    with: Data(contentsOf: URL(fileURLWithPath: directory + "/model.safetensors.index.json")))
                as! [String: Any]
            let map = index["weight_map"] as! [String: String]
            for shard in Set(map.values).sorted() { files.append(try SafeTensorsFile(path: directory + "/" + shard)) }
            var total = 0
            for file in files {
                for (name, info) in file.tensors {
                    #expect(map[name] == (file.path as NSString).lastPathComponent)
                    total += info.dataRange.count
                }
            }
            #expect((index["metadata"] as! [String: Any])["total_size"] as? Int == total)
        }
        var all: [String: (SafeTensorsFile, TensorInfo)] = [:]
        for file in files { for (name, info) in file.tensors { all[name] = (file, info) } }
        return all
    }

    @Test(arguments: [5_000_000_000, 4000])
    func writtenCheckpointReadsBackEqual(shardBytes: Int) throws {
        let parent = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: parent) }
        let source = parent + "/source"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        try Data("{\"model\": {}}".utf8).write(to: URL(fileURLWithPath: source + "/tokenizer.json"))
        let checkpoint = Self.checkpoint(options: .init(maximumShardBytes: shardBytes))
        let output = parent + "/packed"
        try checkpoint.write(to: output, sourceDirectory: source)

        let names = try FileManager.default.contentsOfDirectory(atPath: output).sorted()
        #expect(
            names.contains("tokenizer.json") && names.contains("config.json") && names.contains("quantize_config.json"))
        #expect(names.contains(PackedCheckpoint.allocationFileName))
        #expect(names.contains("model.safetensors") == (shardBytes > 100_000))
        #expect(names.contains("model.safetensors.index.json") == (shardBytes <= 100_000))
        #expect(!(try FileManager.default.contentsOfDirectory(atPath: parent)).contains { $0.contains("partial") })

        let tensors = try Self.readAll(output)
        for (module, linear) in checkpoint.linears {
            let file = try #require(tensors["\(module).qweight"]).file
            let back = try PackedLinear.read(
                from: file, prefix: module, bits: linear.bits, groupSize: linear.groupSize,
                outFeatures: linear.outFeatures, inFeatures: linear.inFeatures)
            #expect(back == linear, "\(module)")
            #expect((tensors["\(module).qzeros"] == nil) == (linear.bits == 1))
        }
        // Passthrough: bf16 unchanged, f32 rounded to bf16 (nearest even).
        let embed = try #require(tensors["model.embed_tokens.weight"])
        let embedBytes = Data(try embed.file.bytes("model.embed_tokens.weight"))
        #expect(embed.info.dtype == .bf16 && embedBytes == checkpoint.passthrough[0].data)
        let q = try #require(tensors["model.layers.0.self_attn.q_proj.weight"])
        #expect(q.info.dtype == .bf16 && q.info.shape == [2, 4])
        let qValues = try q.file.floats("model.layers.0.self_attn.q_proj.weight")
        #expect(qValues[0] == 1 && qValues[1] == -2 && qValues[4] == 1 && qValues[5] == 1.015625 && qValues[7] == 65536)
        #expect(qValues[2] == Float(bitPattern: 0x3DCD_0000)) // 0.1 → 0x3DCCCCCD rounds up
        #expect(qValues[6].sign == .minus && qValues[6] == 0)
        let gate = try #require(tensors["pmq.otp.layers.0.gate.weight"])
        #expect(gate.info.dtype == .f32 && gate.info.shape == [2, 3])
        #expect(try gate.file.floats("pmq.otp.layers.0.gate.weight") == [1, 2, 3, 4, 5, 6])
        #expect(tensors.count == 4 + 1 + checkpoint.linears.values.reduce(0) { $0 + ($1.bits == 1 ? 3 : 4) })
        #expect(embed.file.metadata["format"] == "pt")
    }

    /// The source config's text is kept as written (`0.0` stays a float: transformers rejects an
    /// int for `router_jitter_noise`), with `quantization_config` added last.
    @Test func configKeepsTheSourceNumbersAsWritten() throws {
        let parent = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: parent) }
        var checkpoint = Self.checkpoint(options: .init())
        let source =
            "{\n  \"model_type\": \"mixtral\",\n  \"router_jitter_noise\": 0.0,\n  \"rope_theta\": 1000000.0,\n  "
            + "\"hidden_size\": 16\n}\n"
        checkpoint.sourceConfig = Data(source.utf8)
        try checkpoint.write(to: parent + "/packed")
        let written = try String(contentsOfFile: parent + "/packed/config.json", encoding: .utf8)
        #expect(
            written.hasPrefix(
                "{\n  \"model_type\": \"mixtral\",\n  \"router_jitter_noise\": 0.0,\n  \"rope_theta\": 1000000.0,\n  "
                    + "\"hidden_size\": 16,\n  \"quantization_config\": {"
            ))
        let config = try #require(try JSONSerialization.jsonObject(with: Data(written.utf8)) as? [String: Any])
        #expect((config["quantization_config"] as? [String: Any])?["quant_method"] as? String == "gptq")
        let separate =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: parent + "/packed/quantize_config.json"))) as? [String: Any]
        #expect(separate?["quant_method"] as? String == "gptq")
    }

    /// An FP8 source's `quantization_config` is cut out of the text wherever it stands (first, middle,
    /// last, only member), the rest kept as written, the GPTQ one added last.
    @Test(arguments: [
        (
            "{\"quantization_config\": {\"quant_method\": \"fp8\", \"weight_block_size\": [128, 128]}, \"a\": 1.0}",
            "{ \"a\": 1.0"
        ),
        (
            "{\"a\": 1.0, \"quantization_config\": {\"quant_method\": \"fp8\", \"x\": \"}\\\",\"}, \"b\": [0.0, 2]}",
            "{\"a\": 1.0, \"b\": [0.0, 2]"
        ),
        ("{\"a\": 1.0,\n  \"quantization_config\" : {\"quant_method\": \"fp8\"}\n}", "{\"a\": 1.0"),
        ("{\"quantization_config\": {}}", "{"),
    ])
    func configReplacesAnFP8QuantizationConfigInPlace(source: String, kept: String) throws {
        #expect(PackedCheckpoint.removingMember("quantization_config", from: source).map { $0.hasPrefix(kept) } == true)
        var checkpoint = Self.checkpoint(options: .init())
        checkpoint.sourceConfig = Data(source.utf8)
        let (text, _) = try checkpoint.config()
        let written = String(decoding: text, as: UTF8.self)
        #expect(written.hasPrefix(kept) && !written.contains("fp8"), "\(written)")
        let config = try #require(try JSONSerialization.jsonObject(with: text) as? [String: Any])
        #expect((config["quantization_config"] as? [String: Any])?["quant_method"] as? String == "gptq")
    }

    @Test func configDeclaresDefaultsAndEveryDifferingModule() throws {
        let parent = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: parent) }
        let checkpoint = Self.checkpoint(options: .init(descAct: true))
        try checkpoint.write(to: parent + "/packed")
        let config =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: parent + "/packed/config.json"))) as! [String: Any]
        #expect(config["model_type"] as? String == "mixtral")
        let quantization = try #require(config["quantization_config"] as? [String: Any])
        #expect(quantization["quant_method"] as? String == "gptq")
        #expect(quantization["bits"] as? Int == 3)
        #expect(quantization["group_size"] as? Int == 16)
        #expect(quantization["desc_act"] as? Bool == true)
        #expect(quantization["sym"] as? Bool == false)
        #expect(quantization["checkpoint_format"] as? String == "gptq")
        let dynamic = try #require(quantization["dynamic"] as? [String: [String: Int]])
        var expected: [String: [String: Int]] = [:]
        for name in ["w1", "w2", "w3"] {
            expected["+:^model\\.layers\\.0\\.block_sparse_moe\\.experts\\.1\\.\(name)$"] = [
                "bits": 2, "group_size": 16,
            ]
            expected["+:^model\\.layers\\.0\\.block_sparse_moe\\.experts\\.2\\.\(name)$"] = [
                "bits": 1, "group_size": 16,
            ]
            expected["+:^model\\.layers\\.1\\.block_sparse_moe\\.experts\\.3\\.\(name)$"] = [
                "bits": 4, "group_size": 32,
            ]
        }
        expected["-:^model\\.layers\\.0\\.self_attn\\.q_proj$"] = [:]
        expected["-:^model\\.layers\\.1\\.block_sparse_moe\\.gate$"] = [:]
        #expect(dynamic == expected)
        // Every key is an exact module name: it matches its module and no other.
        for key in dynamic.keys {
            let pattern = try NSRegularExpression(pattern: String(key.dropFirst(2)))
            let matched = (checkpoint.linears.keys.map { $0 } + checkpoint.floatModules()).filter {
                pattern.firstMatch(in: $0, options: .anchored, range: NSRange($0.startIndex..., in: $0)) != nil
            }
            #expect(matched.count == 1, "\(key) matches \(matched)")
        }
        let pmq = try #require(quantization["pmq"] as? [String: Any])
        #expect(pmq["modules_per_width"] as? [String: Int] == ["1": 3, "2": 3, "3": 15, "4": 3])
        let packedBytes = checkpoint.linears.values.reduce(Int64(0)) { $0 + $1.layout.totalBytes }
        #expect((pmq["packed_bytes"] as? NSNumber)?.int64Value == packedBytes)
        #expect(pmq["allocation_report"] as? String == PackedCheckpoint.allocationFileName)
        #expect(pmq["one_bit"] is String)
        let quantizeConfig =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: parent + "/packed/quantize_config.json"))) as! [String: Any]
        let canonical = { (object: Any) in try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) }
        #expect(try canonical(quantizeConfig) == canonical(quantization))
    }

    @Test func keepFloat32Option() throws {
        var checkpoint = Self.checkpoint(options: .init(keepFloat32: true))
        checkpoint.linears = checkpoint.linears.filter { $0.key.hasPrefix("model.layers.1.") }
        let stored = try checkpoint.storedTensors()
        let q = try #require(stored.first { $0.name == "model.layers.0.self_attn.q_proj.weight" })
        #expect(q.dtype == "F32" && q.data == checkpoint.passthrough[1].data)
    }

    @Test func failureMidWriteLeavesNoOutputDirectory() throws {
        let parent = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: parent) }
        var checkpoint = Self.checkpoint(options: .init(maximumShardBytes: 4000))
        // The last tensor's data disagrees with its shape: found after config and earlier shards are written.
        checkpoint.extras.append(
            PackedCheckpoint.Extra(name: "pmq.otp.layers.1.gate.weight", shape: [2, 3], values: [1, 2]))
        let output = parent + "/packed"
        #expect(throws: (any Error).self) { try checkpoint.write(to: output) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: parent).isEmpty)

        var badData = Self.checkpoint(options: .init(maximumShardBytes: 4000))
        badData.passthrough.append(
            PackedCheckpoint.Passthrough(name: "lm_head.weight", dtype: "BF16", shape: [4, 4], data: Data(count: 3)))
        do { try badData.write(to: output); Issue.record("accepted 3 bytes for a [4, 4] bf16 tensor") } catch let error
            as ModelFormatError
        {
            #expect(error.problem.contains("lm_head.weight"))
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: parent).isEmpty)

        // An existing output is never overwritten.
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: false)
        #expect(throws: ModelFormatError.self) { try Self.checkpoint().write(to: output) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: output).isEmpty)
    }

    @Test func readRejectsMalformedTensorsNamingFileAndTensor() throws {
        let parent = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: parent) }
        let linear = Self.linear(out: 8, inputs: 32, bits: 4, groupSize: 16, seed: 9)
        let prefix = "model.layers.0.mlp.experts.0.up_proj"
        func write(_ tensors: [StoredTensor]) throws -> SafeTensorsFile {
            var writer = SafeTensorsWriter()
            for tensor in tensors {
                try writer.add(
                    tensor.name, dtype: TensorDType(rawValue: tensor.dtype)!, shape: tensor.shape, data: tensor.data)
            }
            let path = parent + "/\(UUID().uuidString).safetensors"
            try writer.write(to: path)
            return try SafeTensorsFile(path: path)
        }
        let good = try linear.storedTensors(module: prefix)
        let file = try write(good)
        #expect(
            try PackedLinear.read(from: file, prefix: prefix, bits: 4, groupSize: 16, outFeatures: 8, inFeatures: 32)
                == linear)

        func expectFailure(
            _ file: SafeTensorsFile, bits: Int = 4, groupSize: Int = 16, out: Int = 8, inputs: Int = 32,
            mentions: String
        ) {
            do {
                _ = try PackedLinear.read(
                    from: file, prefix: prefix, bits: bits, groupSize: groupSize, outFeatures: out, inFeatures: inputs)
                Issue.record("accepted: \(mentions)")
            } catch let error as ModelFormatError {
                #expect(error.file == file.path)
                #expect(error.problem.contains(mentions), "\(error.problem)")
            } catch { Issue.record("unexpected \(error)") }
        }
        expectFailure(file, bits: 3, mentions: "\(prefix).qweight") // shape for another width
        expectFailure(file, out: 16, mentions: "\(prefix).qweight")
        expectFailure(file, groupSize: 8, mentions: "\(prefix).qzeros")
        expectFailure(file, bits: 5, mentions: "unsupported width")
        expectFailure(file, bits: 1, mentions: "\(prefix).qweight")
        expectFailure(try write(good.filter { !$0.name.hasSuffix("scales") }), mentions: "\(prefix).scales is missing")
        var wrongType = good
        wrongType[2].dtype = "BF16"
        expectFailure(try write(wrongType), mentions: "\(prefix).scales is BF16")
        var badGroup = good
        badGroup[3].data = StoredTensor.littleEndianData([UInt32](repeating: 7, count: 32))
        expectFailure(try write(badGroup), mentions: "g_idx")
        let oneBit = Self.linear(out: 8, inputs: 32, bits: 1, groupSize: 16, seed: 3)
        var withZeros = try oneBit.storedTensors(module: prefix)
        withZeros.append(good[1])
        expectFailure(try write(withZeros), bits: 1, mentions: "width 1 stores none")
    }
}
