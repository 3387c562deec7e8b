import Foundation
import Testing

/// `pmq eval`, `pmq tokenize` and `pmq generate` as a user runs them, on the tiny fixtures.
@Suite struct RuntimeCLITests {
    static let fixtures = CLITests.packageRoot.appendingPathComponent("Tests/Fixtures")

    @Test func evalReportsPerplexityAndRouting() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var data = Data()
        for token in [1, 17, 42, 5, 88, 23, 64, 9, 31, 77, 2, 50] as [UInt32] {
            withUnsafeBytes(of: token.littleEndian) { data.append(contentsOf: $0) }
        }
        try data.write(to: URL(fileURLWithPath: directory + "/t.u32"))
        let run = try CLITests.pmq([
            "eval", "--model", Self.fixtures.appendingPathComponent("tiny/olmoe").path, "--tokens",
            directory + "/t.u32",
            "--seq-len", "6", "--json", directory + "/e.json",
        ])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("perplexity"))
        let json = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/e.json")))
                as? [String: Any])
        #expect(json["windows"] as? Int == 2)
        #expect(json["predicted"] as? Int == 10)

        // An id outside the vocabulary (96) is a one-line error naming the token file.
        var bad = Data()
        for token in [1, 500] as [UInt32] { withUnsafeBytes(of: token.littleEndian) { bad.append(contentsOf: $0) } }
        try bad.write(to: URL(fileURLWithPath: directory + "/bad.u32"))
        let rejected = try CLITests.pmq([
            "eval", "--model", Self.fixtures.appendingPathComponent("tiny/olmoe").path, "--tokens",
            directory + "/bad.u32",
        ])
        #expect(rejected.status != 0)
        #expect(rejected.stderr.contains("bad.u32: token 1 is id 500, outside the model's vocabulary of 96"))
    }

    @Test func tokenizeWritesU32Ids() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.copyItem(
            atPath: Self.fixtures.appendingPathComponent("tokenizers/bytelevel.json").path,
            toPath: directory + "/tokenizer.json")
        try "Hello world! This is pmq's tokenizer test.".write(
            toFile: directory + "/in.txt", atomically: true, encoding: .utf8)
        let run = try CLITests.pmq([
            "tokenize", "--model", directory, "--text", directory + "/in.txt", "--out", directory + "/out.u32",
        ])
        #expect(run.status == 0, "\(run.stderr)")
        let cases =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: Self.fixtures.appendingPathComponent("tokenizers/cases.json")))
            as! [[String: Any]]
        let expected = cases.first { $0["tokenizer"] as? String == "bytelevel.json" }!["ids"] as! [Int]
        let written = try Data(contentsOf: URL(fileURLWithPath: directory + "/out.u32"))
        let ids = written.withUnsafeBytes { raw in
            (0..<(raw.count / 4)).map { Int(raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)) }
        }
        #expect(ids == expected)
    }

    @Test(arguments: ["mixtral", "deepseek_v3_fp8"])
    func generateIsDeterministicWhenGreedy(fixture: String) throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for file in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(
                atPath: Self.fixtures.appendingPathComponent("tiny/\(fixture)/" + file).path,
                toPath: directory + "/" + file)
        }
        // The fixture tokenizer cut down to the tiny model's 96 ids (single characters, no merges).
        var tokenizer =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: Self.fixtures.appendingPathComponent("tokenizers/bytelevel.json")))
            as! [String: Any]
        var model = tokenizer["model"] as! [String: Any]
        model["vocab"] = (model["vocab"] as! [String: Int]).filter { $0.value < 96 }
        model["merges"] = [String]()
        tokenizer["model"] = model
        try JSONSerialization.data(withJSONObject: tokenizer).write(
            to: URL(fileURLWithPath: directory + "/tokenizer.json"))
        let first = try CLITests.pmq(["generate", "--model", directory, "--prompt", "abc", "--max-new-tokens", "6"])
        let second = try CLITests.pmq(["generate", "--model", directory, "--prompt", "abc", "--max-new-tokens", "6"])
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout == second.stdout && first.stdout.hasPrefix("abc"))
        #expect(first.stderr.contains("decode 6 tokens"))
    }
}

extension RuntimeCLITests {
    @Test func corruptCheckpointIsOneLineAndNoCrash() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.copyItem(
            atPath: Self.fixtures.appendingPathComponent("tiny/mixtral/config.json").path,
            toPath: directory + "/config.json")
        let original = try Data(contentsOf: Self.fixtures.appendingPathComponent("tiny/mixtral/model.safetensors"))
        var tokens = Data()
        withUnsafeBytes(of: UInt32(1).littleEndian) { tokens.append(contentsOf: $0) }
        withUnsafeBytes(of: UInt32(2).littleEndian) { tokens.append(contentsOf: $0) }
        try tokens.write(to: URL(fileURLWithPath: directory + "/t.u32"))
        for (label, corrupt) in [
            ("truncated", original.prefix(original.count - 100)), ("header cut", original.prefix(200)),
            ("empty", Data()),
        ] {
            try corrupt.write(to: URL(fileURLWithPath: directory + "/model.safetensors"))
            let run = try CLITests.pmq(["eval", "--model", directory, "--tokens", directory + "/t.u32"])
            #expect(run.status == 1, "\(label)")
            #expect(run.stderr.contains("model.safetensors: "), "\(label): \(run.stderr)")
            #expect(
                run.stderr.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").count == 1, "\(label)"
            )
        }
    }
}

extension RuntimeCLITests {
    /// `pmq profile` writes a profile that `pmq solve` reads unchanged.
    @Test func profileFeedsSolve() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var data = Data()
        for index in 0..<64 {
            withUnsafeBytes(of: UInt32((index * 37 + 5) % 96).littleEndian) { data.append(contentsOf: $0) }
        }
        try data.write(to: URL(fileURLWithPath: directory + "/calib.u32"))
        let profile = try CLITests.pmq([
            "profile", "--model", Self.fixtures.appendingPathComponent("tiny/qwen2_moe").path,
            "--calib", directory + "/calib.u32", "--samples", "4", "--seq-len", "16",
            "--group-size", "8", "--out", directory + "/profile.json", "--quiet",
        ])
        #expect(profile.status == 0, "\(profile.stderr)")
        let solve = try CLITests.pmq([
            "solve", "--profile", directory + "/profile.json", "--bits", "2.5", "--out", directory + "/a.json",
        ])
        #expect(solve.status == 0, "\(solve.stderr)")
        #expect(solve.stdout.contains("status optimal"))
        let missing = try CLITests.pmq([
            "profile", "--model", Self.fixtures.appendingPathComponent("tiny/qwen2_moe").path,
            "--calib", directory + "/calib.u32", "--seq-len", "100", "--out", directory + "/p2.json",
        ])
        #expect(missing.status != 0)
        #expect(!FileManager.default.fileExists(atPath: directory + "/p2.json"))
    }
}

extension RuntimeCLITests {
    @Test func profileSlicesMerge() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var data = Data()
        for index in 0..<32 {
            withUnsafeBytes(of: UInt32((index * 13 + 1) % 96).littleEndian) { data.append(contentsOf: $0) }
        }
        try data.write(to: URL(fileURLWithPath: directory + "/calib.u32"))
        let model = Self.fixtures.appendingPathComponent("tiny/olmoe").path
        func profile(_ extra: [String], _ out: String) throws -> CLITests.Run {
            try CLITests.pmq(
                [
                    "profile", "--model", model, "--calib", directory + "/calib.u32", "--samples", "2", "--seq-len",
                    "16",
                    "--group-size", "8", "--widths", "2,3", "--quiet", "--out", directory + "/" + out,
                ] + extra)
        }
        // Each slice measures its own layers' sensitivity, as the whole run does.
        #expect(try profile([], "whole.json").status == 0)
        #expect(try profile(["--layers", "0..<1"], "a.json").status == 0)
        #expect(try profile(["--layers", "1..<2"], "b.json").status == 0)
        #expect(!FileManager.default.fileExists(atPath: directory + "/a.json.partial"))
        let merge = try CLITests.pmq([
            "profile", "merge", directory + "/b.json", directory + "/a.json", "--out", directory + "/merged.json",
        ])
        #expect(merge.status == 0, "\(merge.stderr)")
        // Equal but for wall times.
        func withoutSeconds(_ value: Any) -> Any {
            if let object = value as? [String: Any] {
                return object.filter { $0.key != "seconds" }.mapValues(withoutSeconds)
            }
            if let array = value as? [Any] { return array.map(withoutSeconds) }
            return value
        }
        let whole =
            withoutSeconds(
                try JSONSerialization.jsonObject(
                    with: Data(contentsOf: URL(fileURLWithPath: directory + "/whole.json")))) as! NSDictionary
        let merged =
            withoutSeconds(
                try JSONSerialization.jsonObject(
                    with: Data(contentsOf: URL(fileURLWithPath: directory + "/merged.json")))) as! NSDictionary
        #expect(whole == merged)
        let twice = try CLITests.pmq([
            "profile", "merge", directory + "/a.json", directory + "/a.json", "--out", directory + "/bad.json",
        ])
        #expect(twice.status != 0 && twice.stderr.contains("slices overlap: layers 0..<1 and 0..<1"))
    }
}
