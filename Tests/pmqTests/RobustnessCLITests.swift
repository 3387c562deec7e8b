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
}
