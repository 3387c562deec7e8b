import Foundation
import Testing

/// Inputs that used to crash or be accepted silently (issue 15's findings), each a regression case.
@Suite struct RobustnessCLITests {
    /// A one-component relative `--out` ("x") once trapped in path handling after all the work.
    @Test func quantizeWritesToAOneLetterRelativeName() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let calib = try PackAndRunCLITests.calibration(in: directory)
        let result = try CLITests.pmq(
            [
                "quantize", "--model", PackAndRunCLITests.mixtral, "--uniform", "2", "--group-size", "16", "--calib",
                calib, "--samples", "2", "--seq-len", "16", "--out", "x", "--quiet",
            ], in: directory)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(FileManager.default.fileExists(atPath: directory + "/x/model.safetensors"))
    }

    /// A token file with nothing to predict was reported as perplexity 1.000 over 0 predictions.
    @Test func evalRefusesATokenFileWithNothingToPredict() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Data([5, 0, 0, 0]).write(to: URL(fileURLWithPath: directory + "/one.u32"))
        let result = try CLITests.pmq([
            "eval", "--model", PackAndRunCLITests.mixtral, "--tokens", directory + "/one.u32", "--seq-len", "16",
            "--json",
            directory + "/eval.json",
        ])
        #expect(
            result.status != 0 && result.stderr.contains("one.u32: 1 tokens in windows of ≤ 16 leave no token"),
            "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: directory + "/eval.json"))
    }

    /// Config keys pmq does not implement were ignored; now they are refused by name.
    @Test(arguments: [
        ("hidden_act", "\"gelu\"", "hidden_act: pmq runs SiLU-gated experts"),
        ("sliding_window", "8", "sliding_window: 8 is not supported"),
        ("use_sliding_window", "true", "use_sliding_window: true is not supported"),
    ])
    func unsupportedConfigKeysAreRefused(key: String, value: String, expected: String) throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let model = directory + "/model"
        try FileManager.default.copyItem(atPath: PackAndRunCLITests.mixtral, toPath: model)
        let object = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: model + "/config.json")))
        var edited = object as! [String: Any]
        edited[key] = try JSONSerialization.jsonObject(with: Data(value.utf8), options: .fragmentsAllowed)
        try JSONSerialization.data(withJSONObject: edited).write(to: URL(fileURLWithPath: model + "/config.json"))
        let calib = try PackAndRunCLITests.calibration(in: directory)
        let result = try CLITests.pmq(["eval", "--model", model, "--tokens", calib, "--seq-len", "16"])
        #expect(result.status != 0 && result.stderr.contains(expected), "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
    }

    /// Budgets and point counts that trapped on overflow or exhausted memory are refused in one line.
    @Test(arguments: [
        (["solve", "--size", "999999999999999999999999999999TiB"], "at most 18 digits"),
        (["solve", "--bits", "2.50000000000000000000000000001"], "at most 18 digits"),
        (["sweep", "--from", "1.5", "--to", "3", "--points", "9223372036854775807"], "--points must be 1 to 100,000"),
    ])
    func hugeBudgetsAndPointCountsAreRefused(arguments: [String], expected: String) throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let result = try CLITests.pmq(
            arguments + ["--profile", CLITests.exampleProfile, "--out", directory + "/out"])
        #expect(result.status != 0 && result.stderr.contains(expected), "\(result.stderr)")
        // An option's refusal is one line too (argument-parser printed the usage block after it).
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: directory + "/out"))
    }

    /// The fuzzer's harness finds what it exists to find: a reader that traps and one that never
    /// returns each end the run with a non-zero status naming the case to save.
    @Test(arguments: [
        ("harness-trap", "pmq fuzz: trapped on --format harness-trap --case 3 --seed 1"),
        ("harness-hang", "pmq fuzz: still running after the timeout (a hang) on --format harness-hang --case 3"),
    ])
    func theFuzzerReportsTrapsAndHangsByCase(format: String, expected: String) throws {
        let result = try CLITests.pmq(["fuzz", "--format", format, "--cases", "10", "--timeout", "1", "--quiet"])
        #expect(result.status != 0 && result.stderr.contains(expected), "\(result.stderr)")
    }

    /// A 0xFF byte where a key starts trapped inside Foundation's JSON5 scanner; comments, trailing
    /// commas and huge parameter counts were accepted. Each is now one line naming the file.
    @Test func malformedProfilesAreRefusedInOneLine() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let source = try Data(
            contentsOf: CLITests.packageRoot.appendingPathComponent("examples/profiles/example-model.json"))
        let text = String(decoding: source, as: UTF8.self)
        let cases: [(String, Data, String)] = [
            (
                "ff", source.prefix(1) + Data([0xFF]) + source.dropFirst(1),
                "not valid JSON: expected a key at line 1, column 2"
            ),
            ("ff-in-key", source.prefix(5) + Data([0xFF]) + source.dropFirst(5), "invalid UTF-8 byte 0xFF at line 2"),
            (
                "comment", Data(text.replacingOccurrences(of: "{", with: "{ // c\n", options: [], range: nil).utf8),
                "not valid JSON: expected a key"
            ),
            (
                "comma", Data(text.replacingOccurrences(of: "\"version\" : 1", with: "\"version\" : 1,").utf8),
                "not valid JSON: expected a key"
            ),
            (
                "params",
                Data(
                    text.replacingOccurrences(of: "\"params\" : 184320", with: "\"params\" : 9000000000000000")
                        .utf8), "params: must be 1 to 1000000000000"
            ),
            (
                "twice",
                Data(
                    text.replacingOccurrences(of: "\"version\" : 1", with: "\"version\" : 1, \"version\" : 1")
                        .utf8), "key \"version\" appears twice"
            ),
        ]
        for (name, data, message) in cases {
            #expect(data != source, "\(name): the edit did not apply")
            let path = directory + "/\(name).json"
            try data.write(to: URL(fileURLWithPath: path))
            let result = try CLITests.pmq(["solve", "--profile", path, "--bits", "2.5", "--out", directory + "/a.json"])
            #expect(result.status == 1, "\(name): \(result.status) \(result.stderr)")
            #expect(result.stderr.contains(path) && result.stderr.contains(message), "\(name): \(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count == 1, "\(name): \(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: directory + "/a.json"))
        }
    }

    /// A tensor in two shards was read from whichever shard came last, which changed between runs.
    @Test func aTensorInTwoShardsIsRefused() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let model = directory + "/model"
        try FileManager.default.copyItem(atPath: PackAndRunCLITests.mixtral, toPath: model)
        let single = model + "/model.safetensors"
        try FileManager.default.copyItem(atPath: single, toPath: model + "/model-00001-of-00002.safetensors")
        try FileManager.default.moveItem(atPath: single, toPath: model + "/model-00002-of-00002.safetensors")
        let names = try SafeTensorsNames.read(model + "/model-00001-of-00002.safetensors")
        var map: [String: String] = [:]
        for (index, name) in names.enumerated() {
            map[name] = index % 2 == 0 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors"
        }
        try JSONSerialization.data(withJSONObject: ["weight_map": map]).write(
            to: URL(fileURLWithPath: model + "/model.safetensors.index.json"))
        let calib = try PackAndRunCLITests.calibration(in: directory)
        let result = try CLITests.pmq(["eval", "--model", model, "--tokens", calib, "--seq-len", "16"])
        #expect(result.status == 1, "\(result.stderr)")
        #expect(
            result.stderr.contains("is in both model-00001-of-00002.safetensors and model-00002-of-00002.safetensors"),
            "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
    }

    /// `--group-size 9223372036854775807` and `--dampening 1e300` trapped on overflow; tiny dampening
    /// printed only `notPositiveDefinite`.
    @Test func outOfRangeGPTQSettingsAreRefused() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let calib = try PackAndRunCLITests.calibration(in: directory)
        let model = PackAndRunCLITests.mixtral
        for (arguments, message) in [
            (
                ["quantize", "--model", model, "--uniform", "2", "--group-size", "9223372036854775807"],
                "--group-size must be 1 to 1048576"
            ),
            (["profile", "--model", model, "--dampening", "1e300"], "--dampening must be from 1e-9 to 100"),
            (["profile", "--model", model, "--group-size", "16", "--dampening", "1e-9"], "raise --dampening"),
        ] {
            let result = try CLITests.pmq(
                arguments + ["--calib", calib, "--samples", "2", "--seq-len", "16", "--out", directory + "/out"])
            #expect(result.status != 0 && result.stderr.contains(message), "\(arguments): \(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: directory + "/out"))
        }
    }

    /// Errors near the smallest double and huge exponents made costs infinite, which ended in the
    /// JSON encoder's `invalidValue` after the solve; now the expert (or the option) is named.
    @Test func nonFiniteCostsAreNamedBeforeTheSolve() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let source = CLITests.packageRoot.appendingPathComponent("examples/profiles/example-model.json")
        var object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: source)) as? [String: Any])
        var layers = try #require(object["layers"] as? [[String: Any]])
        layers[0]["experts"] = try #require(layers[0]["experts"] as? [[String: Any]]).map { expert in
            var copy = expert
            for key in ["error", "outputError"] {
                if let map = expert[key] as? [String: Any] { copy[key] = map.mapValues { _ in Double("1e-320")! } }
            }
            return copy
        }
        object["layers"] = layers
        let path = directory + "/tiny-errors.json"
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
        let tiny = try CLITests.pmq(["solve", "--profile", path, "--bits", "2.5", "--out", directory + "/a.json"])
        #expect(tiny.status == 1 && tiny.stderr.contains("layer 0 expert 0: the cost at width"), "\(tiny.stderr)")
        #expect(tiny.stderr.split(separator: "\n").count == 1)
        let alpha = try CLITests.pmq([
            "solve", "--profile", source.path, "--bits", "2.5", "--alpha", "1e300", "--out", directory + "/a.json",
        ])
        #expect(alpha.status != 0 && alpha.stderr.contains("--alpha must be > 0 and at most 10"), "\(alpha.stderr)")
        #expect(!FileManager.default.fileExists(atPath: directory + "/a.json"))
    }
}

/// The tensor names of a safetensors file, read from its header with Foundation (independently of pmq).
enum SafeTensorsNames {
    static func read(_ path: String) throws -> [String] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let length = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        let header = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + length))) as? [String: Any] ?? [:]
        return header.keys.filter { $0 != "__metadata__" }.sorted()
    }
}
