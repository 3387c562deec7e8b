import Foundation
import Testing

/// profile → solve → quantize → otp train → eval → table as a user runs them, on the tiny Mixtral;
/// bad inputs give one line naming the file, a non-zero exit and no output.
@Suite struct PackAndRunCLITests {
    static let mixtral = RuntimeCLITests.fixtures.appendingPathComponent("tiny/mixtral").path

    static func calibration(in directory: String) throws -> String {
        var data = Data()
        for index in 0..<128 {
            withUnsafeBytes(of: UInt32((index * 37 + 5) % 96).littleEndian) { data.append(contentsOf: $0) }
        }
        try data.write(to: URL(fileURLWithPath: directory + "/calib.u32"))
        return directory + "/calib.u32"
    }

    @Test func wholeChainRunsAndReportsPruning() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let calib = try Self.calibration(in: directory)
        func run(_ arguments: [String]) throws -> CLITests.Run {
            let result = try CLITests.pmq(arguments)
            #expect(result.status == 0, "pmq \(arguments.joined(separator: " ")): \(result.stderr)")
            return result
        }
        _ = try run([
            "profile", "--model", Self.mixtral, "--calib", calib, "--samples", "8", "--seq-len", "16", "--group-size",
            "16",
            "--sensitivity-windows", "2", "--out", directory + "/profile.json", "--quiet",
        ])
        let profile = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/profile.json")))
                as? [String: Any])
        let layers = try #require(profile["layers"] as? [[String: Any]])
        #expect(layers.allSatisfy { ($0["sensitivity"] as? [String: Any])?["width"] as? Int == 2 })
        _ = try run([
            "solve", "--profile", directory + "/profile.json", "--bits", "2.5", "--out", directory + "/allocation.json",
        ])
        let quantized = try run([
            "quantize", "--model", Self.mixtral, "--allocation", directory + "/allocation.json", "--calib", calib,
            "--samples", "4", "--seq-len", "16", "--out", directory + "/packed", "--quiet",
        ])
        #expect(quantized.stdout.contains("24 expert linears packed"))
        for file in ["config.json", "model.safetensors", "quantize_config.json", "pmq_allocation.json"] {
            #expect(FileManager.default.fileExists(atPath: directory + "/packed/" + file), "\(file)")
        }
        _ = try run([
            "otp", "train", "--model", directory + "/packed", "--calib", calib, "--keep", "0.75", "--samples", "8",
            "--seq-len", "16", "--epochs", "5", "--quiet",
        ])
        #expect(FileManager.default.fileExists(atPath: directory + "/packed/pruning.safetensors"))
        // A model-wide budget needs a loss comparable across layers.
        let mixed = try CLITests.pmq([
            "otp", "train", "--model", directory + "/packed", "--calib", calib, "--target", "output",
            "--budget", "global", "--samples", "2", "--seq-len", "16",
        ])
        #expect(mixed.status != 0 && mixed.stderr.contains("--budget global"), "\(mixed.stderr)")
        var rows: [String] = []
        for prune in ["none", "odp", "otp", "odp-matched"] {
            let eval = try run([
                "eval", "--model", directory + "/packed", "--tokens", calib, "--seq-len", "16", "--prune", prune,
                "--decode-tokens", "8", "--json", directory + "/eval-\(prune).json", "--quiet",
            ])
            #expect(eval.stdout.contains("experts per token"))
            let json = try #require(
                try JSONSerialization.jsonObject(
                    with: Data(contentsOf: URL(fileURLWithPath: directory + "/eval-\(prune).json"))) as? [String: Any])
            let experts = try #require(json["expertsPerToken"] as? Double)
            if prune == "none" { #expect(experts == 2) } else { #expect(experts < 2 && experts >= 1) }
            #expect((json["averageBits"] as? Double).map { abs($0 - 2.5) < 1e-9 } == true)
            #expect((json["decodeTokensPerSecond"] as? Double ?? 0) > 0)
            rows.append("\(prune)=\(directory)/eval-\(prune).json")
        }
        let table = try run(["table"] + rows + ["--out", directory + "/table.md"])
        #expect(table.stdout.contains("| otp |") && table.stdout.contains("experts/token"))
        // A uniform model packs every expert at one width.
        let uniform = try run([
            "quantize", "--model", Self.mixtral, "--uniform", "3", "--group-size", "16", "--calib", calib,
            "--samples", "2", "--seq-len", "16", "--out", directory + "/uniform", "--quiet",
        ])
        #expect(uniform.stdout.contains("experts 8×3-bit"))
    }

    @Test func badInputIsOneLineAndNoOutput() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let calib = try Self.calibration(in: directory)
        // An allocation for another model (one expert missing).
        let allocation: [String: Any] = [
            "format": "pmq-allocation", "version": 1, "parameters": ["groupSize": 16],
            "layers": [["index": 0, "experts": [["index": 0, "bits": 2]]]],
        ]
        try JSONSerialization.data(withJSONObject: allocation).write(to: URL(fileURLWithPath: directory + "/a.json"))
        let wrong = try CLITests.pmq([
            "quantize", "--model", Self.mixtral, "--allocation", directory + "/a.json", "--calib", calib,
            "--samples", "2", "--seq-len", "16", "--out", directory + "/out",
        ])
        #expect(wrong.status != 0)
        #expect(wrong.stderr.contains("a.json") && wrong.stderr.split(separator: "\n").count == 1, "\(wrong.stderr)")
        #expect(!FileManager.default.fileExists(atPath: directory + "/out"))
        // Not JSON at all.
        try Data("{\"format\": ".utf8).write(to: URL(fileURLWithPath: directory + "/broken.json"))
        let broken = try CLITests.pmq([
            "quantize", "--model", Self.mixtral, "--allocation", directory + "/broken.json", "--calib", calib,
            "--out", directory + "/out",
        ])
        #expect(broken.status != 0 && broken.stderr.contains("broken.json"))
        #expect(!FileManager.default.fileExists(atPath: directory + "/out"))
        // An existing output directory is refused, not overwritten.
        try FileManager.default.createDirectory(atPath: directory + "/exists", withIntermediateDirectories: true)
        let exists = try CLITests.pmq([
            "quantize", "--model", Self.mixtral, "--uniform", "2", "--group-size", "16", "--calib", calib,
            "--seq-len", "16", "--out", directory + "/exists",
        ])
        #expect(exists.status != 0 && exists.stderr.contains("exists"))
        // OTP on a model without gates.
        let noGates = try CLITests.pmq([
            "eval", "--model", Self.mixtral, "--tokens", calib, "--seq-len", "16", "--prune", "otp",
        ])
        #expect(noGates.status != 0 && noGates.stderr.contains("pruning.safetensors"))
        // A corrupt pruning file names itself.
        let packed = directory + "/packed"
        let quantized = try CLITests.pmq([
            "quantize", "--model", Self.mixtral, "--uniform", "2", "--group-size", "16", "--calib", calib,
            "--samples", "2", "--seq-len", "16", "--out", packed, "--quiet",
        ])
        #expect(quantized.status == 0, "\(quantized.stderr)")
        try Data("garbage".utf8).write(to: URL(fileURLWithPath: packed + "/pruning.safetensors"))
        let corrupt = try CLITests.pmq([
            "eval", "--model", packed, "--tokens", calib, "--seq-len", "16", "--prune", "otp",
        ])
        #expect(corrupt.status != 0 && corrupt.stderr.contains("pruning.safetensors"), "\(corrupt.stderr)")
        // A packed model whose qweight has the wrong shape.
        let config = packed + "/config.json"
        var object = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: config))) as? [String: Any])
        var quantization = try #require(object["quantization_config"] as? [String: Any])
        quantization["bits"] = 4
        object["quantization_config"] = quantization
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: config))
        let mismatch = try CLITests.pmq(["eval", "--model", packed, "--tokens", calib, "--seq-len", "16"])
        #expect(mismatch.status != 0 && mismatch.stderr.contains("model.safetensors"), "\(mismatch.stderr)")
    }
}
