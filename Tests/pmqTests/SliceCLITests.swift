import Foundation
import Testing

/// Issue 16: profile slices (`--slice I/N`) measure everything a whole run does, sensitivity
/// included, so their merge is the single run's profile (timings aside) and their quantization
/// cache the single run's cache, byte for byte. `scripts/cluster-test.sh` runs the same on both
/// example models through a real Slurm array.
@Suite struct SliceCLITests {
    static let tiny = RuntimeCLITests.fixtures.appendingPathComponent("tiny").path

    static func profile(
        model: String, calib: String, out: String, cache: String? = nil, _ extra: [String] = []
    ) throws -> CLITests.Run {
        try CLITests.pmq(
            [
                "profile", "--model", model, "--calib", calib, "--samples", "4", "--seq-len", "16", "--group-size",
                "16", "--widths", "0,2,3", "--sensitivity-windows", "2", "--quiet", "--out", out,
            ] + (cache.map { ["--cache", $0] } ?? []) + extra)
    }

    static func profileWithoutTimings(_ path: String) throws -> NSDictionary {
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path)))
        return FaultCLITests.withoutTimings(object) as! NSDictionary
    }

    /// Whole run, then 2 slices into one shared cache and 2 slices into their own caches: both
    /// merges equal the whole run; so do the caches. Mixtral, and DeepSeek-V3 whose first layer
    /// is dense (slice 0 holds it with the first MoE layer).
    @Test(arguments: ["mixtral", "deepseek_v3"])
    func slicesMergeIntoTheSingleRunsProfileAndCache(architecture: String) throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let calib = try PackAndRunCLITests.calibration(in: directory)
        let model = Self.tiny + "/" + architecture
        let whole = try Self.profile(
            model: model, calib: calib, out: directory + "/whole.json", cache: directory + "/c")
        try #require(whole.status == 0, "\(whole.stderr)")
        let reference = try Self.profileWithoutTimings(directory + "/whole.json")
        let layers = try #require(reference["layers"] as? [[String: Any]])
        #expect(layers.allSatisfy { $0["sensitivity"] != nil }, "the whole run measured no sensitivity")
        // One slice: the whole run is its own merge.
        _ = try CLITests.succeeds([
            "profile", "merge", directory + "/whole.json", "--out", directory + "/one.json", "--cache",
            directory + "/c",
        ])
        #expect(try Self.profileWithoutTimings(directory + "/one.json") == reference)
        for index in 0..<2 {
            let shared = try Self.profile(
                model: model, calib: calib, out: directory + "/shared-\(index).json", cache: directory + "/shared",
                ["--slice", "\(index)/2"])
            #expect(shared.status == 0, "\(shared.stderr)")
            let own = try Self.profile(
                model: model, calib: calib, out: directory + "/own-\(index).json", cache: directory + "/own-\(index)",
                ["--slice", "\(index)/2"])
            #expect(own.status == 0, "\(own.stderr)")
        }
        // Slices in reverse order: the merge sorts them.
        _ = try CLITests.succeeds([
            "profile", "merge", directory + "/shared-1.json", directory + "/shared-0.json", "--out",
            directory + "/shared.json", "--cache", directory + "/shared",
        ])
        _ = try CLITests.succeeds([
            "profile", "merge", directory + "/own-0.json", directory + "/own-1.json", "--out", directory + "/own.json",
            "--cache", directory + "/joined", "--slice-cache", directory + "/own-0", "--slice-cache",
            directory + "/own-1",
        ])
        #expect(try Self.profileWithoutTimings(directory + "/shared.json") == reference)
        #expect(try Self.profileWithoutTimings(directory + "/own.json") == reference)
        let cache = try CacheCLITests.files(directory + "/c")
        #expect(cache.count >= 5)
        #expect(try CacheCLITests.files(directory + "/shared") == cache)
        #expect(try CacheCLITests.files(directory + "/joined") == cache)
    }

    /// Overlapping or missing slices, slices of another model, calibration set or setting, and a
    /// cache without a slice's layers: each refused in one line naming the slice files.
    @Test func mismatchedSlicesAreRefusedNamingTheFiles() throws {
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let calib = try PackAndRunCLITests.calibration(in: directory)
        let mixtral = Self.tiny + "/mixtral"
        func slice(_ name: String, model: String = mixtral, _ extra: [String]) throws {
            let result = try Self.profile(
                model: model, calib: calib, out: directory + "/\(name).json", cache: directory + "/cache-\(name)", extra
            )
            try #require(result.status == 0, "\(result.stderr)")
        }
        try slice("a", ["--slice", "0/2"])
        try slice("b", ["--slice", "1/2"])
        try slice("b-damp", ["--slice", "1/2", "--dampening", "0.02"])
        try slice("b-calib", ["--slice", "1/2", "--samples", "3"])
        try slice("b-olmoe", model: Self.tiny + "/olmoe", ["--slice", "1/2"])
        let cases: [([String], String)] = [
            (["a", "a"], "a.json and \(directory)/a.json: slices overlap: layers 0..<1 and 0..<1"),
            (["a"], "a.json: layers 1..<2 of the model's 2 are in no slice (a slice is missing)"),
            (["a", "b-damp"], "a.json and \(directory)/b-damp.json: slices of different runs: profiling.dampening"),
            (["a", "b-calib"], "b-calib.json: slices of different runs: calibration.tokens: 64 against 48"),
            (["a", "b-olmoe"], "b-olmoe.json: slices of different runs: profiling.modelDigest"),
        ]
        for (names, expected) in cases {
            let result = try CLITests.pmq(
                ["profile", "merge"] + names.map { directory + "/\($0).json" } + ["--out", directory + "/m.json"])
            #expect(result.status != 0 && result.stderr.contains(expected), "\(names): \(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: directory + "/m.json"))
        }
        // A slice claiming more decoder layers than a config may have.
        let object = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: directory + "/a.json")))
        var edited = try #require(object as? [String: Any])
        edited["profiling"] = (edited["profiling"] as? [String: Any] ?? [:]).merging([
            "decoderLayers": 1 << 62, "layers": [0, 1 << 62],
        ]) { $1 }
        try JSONSerialization.data(withJSONObject: edited).write(to: URL(fileURLWithPath: directory + "/huge.json"))
        let huge = try CLITests.pmq(["profile", "merge", directory + "/huge.json", "--out", directory + "/m.json"])
        #expect(huge.status != 0 && huge.stderr.contains("without a valid layer range"), "\(huge.stderr)")
        let missing = try CLITests.pmq([
            "profile", "merge", directory + "/a.json", directory + "/b.json", "--out", directory + "/m.json", "--cache",
            directory + "/joined", "--slice-cache", directory + "/cache-a",
        ])
        #expect(
            missing.status != 0 && missing.stderr.contains("has no entry for layer 1 at 2 bits"), "\(missing.stderr)")
        #expect(!FileManager.default.fileExists(atPath: directory + "/m.json"))
        let otherRun = try CLITests.pmq([
            "profile", "merge", directory + "/a.json", directory + "/b.json", "--out", directory + "/m.json", "--cache",
            directory + "/joined2", "--slice-cache", directory + "/cache-a", "--slice-cache",
            directory + "/cache-b-damp",
        ])
        #expect(
            otherRun.status != 0 && otherRun.stderr.contains("slice caches of different runs: dampening"),
            "\(otherRun.stderr)")
    }
}
