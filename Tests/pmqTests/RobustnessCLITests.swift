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
        #expect(!FileManager.default.fileExists(atPath: directory + "/out"))
    }
}
