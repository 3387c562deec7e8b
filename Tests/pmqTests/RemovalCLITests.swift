import Foundation
@testable import ModelFormat
import Testing

/// Width 0 as a user runs it: profile and solve with `--widths 0,1,2`, pack, and run the packed
/// model with its removed experts masked; an allocation that empties a layer is refused.
@Suite struct RemovalCLITests {
    @Test func removedExpertsArePackedOutAndNeverRouted() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let calib = try PackAndRunCLITests.calibration(in: directory)
        let source = PackAndRunCLITests.mixtral
        let run = CLITests.succeeds
        _ = try run([
            "profile", "--model", source, "--calib", calib, "--samples", "8", "--seq-len", "16", "--group-size", "16",
            "--widths", "0,1,2", "--sensitivity-windows", "2", "--out", directory + "/profile.json", "--quiet",
        ])
        let solved = try run([
            "solve", "--profile", directory + "/profile.json", "--bits", "0.75", "--out", directory + "/a.json",
        ])
        #expect(solved.stdout.contains(" removed, "), "\(solved.stdout)")
        let plan = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/a.json")))
        let layers = try #require((plan as? [String: Any])?["layers"] as? [[String: Any]])
        var removed: [Int: [Int]] = [:]
        for layer in layers {
            let experts = try #require(layer["experts"] as? [[String: Any]])
            let gone = experts.filter { $0["bits"] as? Int == 0 }.compactMap { $0["index"] as? Int }
            #expect(experts.count - gone.count >= 2, "a layer keeps top-2")
            if !gone.isEmpty { removed[layer["index"] as! Int] = gone.sorted() }
        }
        #expect(!removed.isEmpty)
        _ = try run([
            "quantize", "--model", source, "--allocation", directory + "/a.json", "--calib", calib, "--samples", "4",
            "--seq-len", "16", "--out", directory + "/packed", "--quiet",
        ])
        let packed = try MoEModelConfig.read(directory: directory + "/packed")
        let quantization = try #require(try QuantizationConfig.read(directory: directory + "/packed"))
        #expect(quantization.removedExperts == removed)
        let file = try SafeTensorsFile(path: directory + "/packed/model.safetensors")
        let map = ArchitectureMap(packed.architecture)
        for (layer, experts) in removed {
            for expert in experts {
                let module = map.moduleName(.expertGate(layer: layer, expert: expert))
                #expect(!file.names.contains { $0.hasPrefix(module + ".") }, "\(module) is still packed")
            }
        }
        let eval = try run([
            "eval", "--model", directory + "/packed", "--tokens", calib, "--seq-len", "16", "--json",
            directory + "/eval.json", "--quiet",
        ])
        let json = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/eval.json")))
                as? [String: Any])
        #expect(json["expertsPerToken"] as? Double == 2)
        for (layer, experts) in removed {
            let line = try #require(eval.stdout.split(separator: "\n").first { $0.hasPrefix("  layer \(layer): ") })
            let counts = line.split(separator: ":")[1].split(separator: " ").map { Int($0)! }
            #expect(experts.allSatisfy { counts[$0] == 0 }, "\(line)")
        }
        // An allocation that leaves a layer fewer experts than top-k is refused in one line.
        var object = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/a.json")))
                as? [String: Any])
        var edited = try #require(object["layers"] as? [[String: Any]])
        edited[0]["experts"] = (edited[0]["experts"] as! [[String: Any]]).map { expert in
            var copy = expert
            copy["bits"] = 0
            return copy
        }
        object["layers"] = edited
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: directory + "/bad.json"))
        let refused = try CLITests.pmq([
            "quantize", "--model", source, "--allocation", directory + "/bad.json", "--calib", calib, "--samples", "2",
            "--seq-len", "16", "--out", directory + "/bad", "--quiet",
        ])
        #expect(refused.status != 0 && refused.stderr.contains("bits 0 removes 4 of 4 experts"), "\(refused.stderr)")
        #expect(refused.stderr.split(separator: "\n").count == 1)
        #expect(!FileManager.default.fileExists(atPath: directory + "/bad"))
    }
}
