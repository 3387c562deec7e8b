import Foundation
import Testing

/// The quantization cache as a user runs it: `profile --cache`, `assemble` (byte-identical to
/// `quantize --float-propagation`), `sweep --evaluate`, and the refusals of a cache made for
/// other inputs.
@Suite struct CacheCLITests {
    static let run = CLITests.succeeds

    /// Profiles the tiny Mixtral into `directory/cache` and solves one allocation.
    static func prepare(_ directory: String) throws -> (calib: String, allocation: String) {
        let calib = try PackAndRunCLITests.calibration(in: directory)
        let profiled = try run([
            "profile", "--model", PackAndRunCLITests.mixtral, "--calib", calib, "--samples", "8", "--seq-len", "16",
            "--group-size", "16", "--widths", "0,1,2,3", "--sensitivity-windows", "2", "--cache", directory + "/cache",
            "--out", directory + "/profile.json", "--quiet",
        ])
        #expect(profiled.stdout.contains("quantization cache"), "\(profiled.stdout)")
        _ = try run([
            "solve", "--profile", directory + "/profile.json", "--bits", "1.75", "--out", directory + "/a.json",
        ])
        return (calib, directory + "/a.json")
    }

    /// Writes `heldOutTokens` held-out tokens into `directory` and returns the arguments of a
    /// 3-point measured sweep of `prepare`'s profile into `directory/OUT`.
    static func measuredSweep(_ directory: String, heldOutTokens: Int) throws -> (String) -> [String] {
        var heldOut = Data()
        for index in 0..<heldOutTokens {
            withUnsafeBytes(of: UInt32((index * 53 + 11) % 96).littleEndian) { heldOut.append(contentsOf: $0) }
        }
        try heldOut.write(to: URL(fileURLWithPath: directory + "/heldout.u32"))
        return { out in
            [
                "sweep", "--profile", directory + "/profile.json", "--from", "1.5", "--to", "3.0", "--points", "3",
                "--out", directory + "/" + out, "--evaluate", directory + "/heldout.u32", "--model",
                PackAndRunCLITests.mixtral, "--cache", directory + "/cache", "--seq-len", "16",
            ]
        }
    }

    static func files(_ directory: String) throws -> [String: Data] {
        var result: [String: Data] = [:]
        for name in try FileManager.default.subpathsOfDirectory(atPath: directory) {
            var isDirectory: ObjCBool = false
            let path = directory + "/" + name
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
                result[name] = try Data(contentsOf: URL(fileURLWithPath: path))
            }
        }
        return result
    }

    @Test func assembleIsByteIdenticalToFloatPropagatedQuantize() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (calib, allocation) = try Self.prepare(directory)
        let plan = try String(contentsOfFile: allocation, encoding: .utf8)
        #expect(
            plan.contains("\"calibration\" : \"8 windows of 16 tokens, FNV-1a "), "the allocation names its calibration"
        )
        // A second allocation that removes experts (width 0): removed experts are left out of both.
        let removing = directory + "/b.json"
        _ = try Self.run(["solve", "--profile", directory + "/profile.json", "--bits", "0.75", "--out", removing])
        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: removing)))
        let counts = try #require((report as? [String: Any])?["widthCounts"] as? [String: Int])
        #expect((counts["0"] ?? 0) > 0, "the 0.75-bit allocation removes no expert: \(counts)")
        for (widths, name) in [(allocation, "a"), (removing, "b")] {
            _ = try Self.run([
                "quantize", "--model", PackAndRunCLITests.mixtral, "--allocation", widths, "--calib", calib,
                "--samples", "8", "--seq-len", "16", "--float-propagation", "--out", directory + "/q-" + name,
                "--quiet",
            ])
            let assembled = try Self.run([
                "assemble", "--model", PackAndRunCLITests.mixtral, "--allocation", widths, "--cache",
                directory + "/cache", "--out", directory + "/c-" + name,
            ])
            #expect(assembled.stdout.contains("expert linears from"), "\(assembled.stdout)")
            let quantized = try Self.files(directory + "/q-" + name), cached = try Self.files(directory + "/c-" + name)
            #expect(quantized.keys.sorted() == cached.keys.sorted())
            for (file, data) in quantized { #expect(cached[file] == data, "\(file) differs") }
        }
    }

    @Test func aCacheForOtherInputsIsRefusedByName() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (calib, allocation) = try Self.prepare(directory)
        func refused(_ arguments: [String], _ message: String, sourceLocation: SourceLocation = #_sourceLocation) throws
        {
            let result = try CLITests.pmq(arguments)
            #expect(result.status != 0, sourceLocation: sourceLocation)
            #expect(result.stderr.contains(message), "\(result.stderr)", sourceLocation: sourceLocation)
            #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)", sourceLocation: sourceLocation)
            #expect(!FileManager.default.fileExists(atPath: directory + "/out"), sourceLocation: sourceLocation)
        }
        func edited(_ change: (inout [String: Any]) -> Void) throws -> String {
            var object = try #require(
                try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: allocation)))
                    as? [String: Any])
            change(&object)
            let path = directory + "/edited-\(UUID().uuidString).json"
            try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
            return path
        }
        func assemble(model: String = PackAndRunCLITests.mixtral, _ plan: String, cache: String = "/cache") -> [String]
        {
            [
                "assemble", "--model", model, "--allocation", plan, "--cache", directory + cache, "--out",
                directory + "/out",
            ]
        }
        // Another model: the same checkpoint with one config byte changed.
        let other = directory + "/other"
        try FileManager.default.copyItem(atPath: PackAndRunCLITests.mixtral, toPath: other)
        let config = try Data(contentsOf: URL(fileURLWithPath: other + "/config.json"))
        try (config + Data(" ".utf8)).write(to: URL(fileURLWithPath: other + "/config.json"))
        try refused(assemble(model: other, allocation), "made for another model (weights digest")
        try refused(
            assemble(
                try edited { object in
                    var parameters = object["parameters"] as! [String: Any]
                    parameters["groupSize"] = 32
                    object["parameters"] = parameters
                }), "made for another group size (16, not 32)")
        try refused(
            assemble(
                try edited { object in
                    var parameters = object["parameters"] as! [String: Any]
                    parameters["calibration"] = "8 windows of 16 tokens, FNV-1a 0"
                    object["parameters"] = parameters
                }), "made for another calibration set")
        // A cache without the width the allocation needs says which.
        _ = try Self.run([
            "profile", "--model", PackAndRunCLITests.mixtral, "--calib", calib, "--samples", "8", "--seq-len", "16",
            "--group-size", "16", "--widths", "1,2", "--sensitivity-windows", "0", "--cache", directory + "/cache12",
            "--out", directory + "/profile12.json", "--quiet",
        ])
        let allThree = try edited { object in
            object["layers"] = (object["layers"] as! [[String: Any]]).map { layer in
                var copy = layer
                copy["experts"] = (layer["experts"] as! [[String: Any]]).map { expert in
                    var e = expert
                    e["bits"] = 3
                    return e
                }
                return copy
            }
        }
        try refused(assemble(allThree, cache: "/cache12"), "has no 3-bit entry for layer 0")
        // Profiling into a cache made with another group size is refused before any work.
        try refused(
            [
                "profile", "--model", PackAndRunCLITests.mixtral, "--calib", calib, "--samples", "8", "--seq-len",
                "16", "--group-size", "32", "--widths", "1,2", "--cache", directory + "/cache12", "--out",
                directory + "/out", "--quiet",
            ], "made for another group size (16, not 32)")
    }

    @Test func sweepEvaluateMeasuresEveryPointAsEvalWould() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = try Self.prepare(directory)
        var heldOut = Data()
        for index in 0..<160 {
            withUnsafeBytes(of: UInt32((index * 53 + 11) % 96).littleEndian) { heldOut.append(contentsOf: $0) }
        }
        try heldOut.write(to: URL(fileURLWithPath: directory + "/heldout.u32"))
        let swept = try Self.run([
            "sweep", "--profile", directory + "/profile.json", "--from", "1.5", "--to", "3.0", "--points", "4", "--out",
            directory + "/front", "--evaluate", directory + "/heldout.u32", "--model", PackAndRunCLITests.mixtral,
            "--cache", directory + "/cache", "--seq-len", "16", "--save-models", "--quiet",
        ])
        #expect(swept.stdout.contains("Spearman ρ(predicted loss, measured ΔNLL)"), "\(swept.stdout)")
        #expect(!FileManager.default.fileExists(atPath: directory + "/front.partial"))
        let front = try #require(
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: directory + "/front/front.json")))
                as? [String: Any])
        let evaluation = try #require(front["evaluation"] as? [String: Any])
        let references = try #require(evaluation["references"] as? [[String: Any]])
        #expect(references.compactMap { $0["width"] as? Int } == [1, 2, 3])
        let floatPerplexity = try #require(evaluation["floatPerplexity"] as? Double)
        let points = try #require(front["points"] as? [[String: Any]])
        #expect(points.count == 4)
        for (index, point) in points.enumerated() {
            let measured = try #require(point["measured"] as? [String: Any])
            let perplexity = try #require(measured["perplexity"] as? Double)
            let kl = try #require(measured["meanKL"] as? Double)
            #expect(kl > 0 && perplexity > floatPerplexity * 0.9)
            // The saved model, run by `pmq eval`, scores exactly what the sweep measured in memory.
            let model = directory + String(format: "/front/models/point-%03d", index)
            _ = try Self.run([
                "eval", "--model", model, "--tokens", directory + "/heldout.u32", "--seq-len", "16", "--json",
                directory + "/eval.json", "--quiet",
            ])
            let eval = try #require(
                try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/eval.json")))
                    as? [String: Any])
            let evaluated = try #require(eval["perplexity"] as? Double)
            #expect(abs(evaluated - perplexity) <= 1e-9 * perplexity, "point \(index): \(evaluated) vs \(perplexity)")
        }
        let csv = try String(contentsOfFile: directory + "/front/front.csv", encoding: .utf8)
        #expect(csv.hasPrefix("budget_kind,") && csv.contains(",perplexity,delta_nll,mean_kl,"))
        let svg = try String(contentsOfFile: directory + "/front/front.svg", encoding: .utf8)
        #expect(svg.contains("uniform 2-bit") && svg.contains("predicted loss"))
    }

    /// A sweep killed while measuring resumes from `DIR.partial/`: the rerun does not measure
    /// again what was saved, and the front equals that of an uninterrupted run.
    @Test func aKilledMeasuredSweepResumesWhereItStopped() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = try Self.prepare(directory)
        let arguments = try Self.measuredSweep(directory, heldOutTokens: 6000)
        let process = Process()
        process.executableURL = CLITests.binary
        process.arguments = arguments("killed")
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let partial = directory + "/killed.partial"
        let deadline = Date().addingTimeInterval(120)
        var saved: [String] = []
        while Date() < deadline, process.isRunning {
            saved = ((try? FileManager.default.contentsOfDirectory(atPath: partial)) ?? []).filter {
                $0.hasSuffix(".json") && !$0.hasPrefix(".")
            }
            if saved.count >= 2 { break }
            usleep(2000)
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try #require(saved.count >= 2, "the sweep finished before it could be killed; saved \(saved)")
        #expect(!FileManager.default.fileExists(atPath: directory + "/killed/front.json"))
        let resumed = try CLITests.pmq(arguments("killed"))
        #expect(resumed.status == 0, "\(resumed.stderr)")
        // Two or more models were saved before the kill: the rerun measures the rest only.
        #expect(resumed.stdout.contains("models measured now, the others read from"), "\(resumed.stdout)")
        #expect(!FileManager.default.fileExists(atPath: partial))
        _ = try Self.run(arguments("clean") + ["--quiet"])
        func measured(_ out: String) throws -> [[String: Any]] {
            let front = try #require(
                try JSONSerialization.jsonObject(
                    with: Data(contentsOf: URL(fileURLWithPath: directory + "/\(out)/front.json"))) as? [String: Any])
            let points = try #require(front["points"] as? [[String: Any]])
            return try points.map { point in
                var measured = try #require(point["measured"] as? [String: Any])
                measured["assemblySeconds"] = nil
                measured["evaluationSeconds"] = nil
                return measured
            }
        }
        let killed = try measured("killed"), clean = try measured("clean")
        #expect(killed.count == clean.count)
        for (a, b) in zip(killed, clean) { #expect(NSDictionary(dictionary: a).isEqual(to: b)) }
    }

    /// Array tasks measure a front's models in shards (`--shard I/N`) into `DIR.partial/`; the
    /// run without a shard then loads no model and writes the front an unsharded run writes.
    @Test func shardedMeasurementsMergeIntoTheSameFront() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = try Self.prepare(directory)
        let arguments = try Self.measuredSweep(directory, heldOutTokens: 600)
        for index in 0..<2 {
            let shard = try Self.run(arguments("sharded") + ["--shard", "\(index)/2", "--quiet"])
            #expect(shard.stdout.contains("shard \(index)/2: 3 models measured"), "\(shard.stdout)")
        }
        #expect(!FileManager.default.fileExists(atPath: directory + "/sharded"), "a shard wrote the front")
        let merged = try Self.run(arguments("sharded"))
        #expect(merged.stdout.contains("0 of 6 models measured now"), "\(merged.stdout)")
        _ = try Self.run(arguments("whole") + ["--quiet"])
        func front(_ out: String) throws -> NSDictionary {
            let object = try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: directory + "/\(out)/front.json")))
            return FaultCLITests.withoutTimings(object, also: ["assemblySeconds", "evaluationSeconds"]) as! NSDictionary
        }
        #expect(try front("sharded") == front("whole"))
        let bad = try CLITests.pmq(arguments("x") + ["--shard", "2/2"])
        #expect(bad.status != 0 && bad.stderr.contains("--shard: '2/2' is not I/N"), "\(bad.stderr)")
        let saving = try CLITests.pmq(arguments("x") + ["--shard", "0/2", "--save-models"])
        #expect(saving.status != 0 && saving.stderr.contains("go with the run without --shard"), "\(saving.stderr)")
    }
}
