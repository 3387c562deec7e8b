import Foundation
import Testing

/// The shipped example model and its profile, as a user meets them.
@Suite struct ExampleModelTests {
    /// Both shipped example models: the evenly routed Mixtral and the fine-grained Qwen3-MoE.
    static let models = ["examples/model", "examples/model-fine"]
    static let profile = CLITests.packageRoot.appendingPathComponent("examples/profiles/example-model.json")

    /// A real language model: far below the unigram baseline on held-out text, as measured by
    /// pmq itself on the first windows of eval.u32.
    @Test(arguments: models)
    func beatsTheUnigramBaseline(relativePath: String) throws {
        let model = CLITests.packageRoot.appendingPathComponent(relativePath)
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let run = try CLITests.pmq([
            "eval", "--model", model.path, "--tokens", model.appendingPathComponent("eval.u32").path,
            "--max-tokens", "1024", "--json", directory + "/e.json", "--quiet",
        ])
        #expect(run.status == 0, "\(run.stderr)")
        let ours = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/e.json")))
                as? [String: Any])
        let metrics = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: model.appendingPathComponent("metrics.json")))
                as? [String: Any])
        let perplexity = try #require(ours["perplexity"] as? Double)
        let unigram = try #require(metrics["unigram_perplexity"] as? Double)
        #expect(perplexity < unigram / 4, "perplexity \(perplexity) against unigram \(unigram)")
        let counts = try #require(ours["expertTokens"] as? [[Int]])
        if relativePath == "examples/model" {
            // Every expert of every layer gets tokens (no collapsed router).
            #expect(counts.count == 4 && counts.allSatisfy { $0.count == 8 && $0.allSatisfy { $0 > 0 } })
        } else {
            // 32 experts in each of the 4 layers, and no layer collapsed onto a few of them.
            #expect(counts.count == 4 && counts.allSatisfy { $0.count == 32 && $0.filter { $0 > 0 }.count >= 16 })
        }
    }

    /// freq and mass on the example model equal those from transformers' router on the same
    /// tokens (the first two 512-token windows of eval.u32; metrics.json, written by
    /// tools/example_model/evaluate.py).
    @Test(arguments: models)
    func routingStatisticsMatchTransformers(relativePath: String) throws {
        let model = CLITests.packageRoot.appendingPathComponent(relativePath)
        let directory = try CLITests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let metrics = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: model.appendingPathComponent("metrics.json")))
                as? [String: Any])
        let reference = try #require(metrics["first_1024_tokens"] as? [String: Any])
        let freq = try #require(reference["freq"] as? [[Int]])
        let mass = try #require(reference["mass"] as? [[Double]])
        let run = try CLITests.pmq([
            "profile", "--model", model.path, "--calib", model.appendingPathComponent("eval.u32").path,
            "--samples", "2", "--seq-len", "512", "--widths", "8", "--layers", "0..<2", "--quiet",
            "--out", directory + "/p.json",
        ])
        #expect(run.status == 0, "\(run.stderr)")
        let profile = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/p.json")))
                as? [String: Any])
        for layer in try #require(profile["layers"] as? [[String: Any]]) {
            let index = try #require(layer["index"] as? Int)
            for expert in try #require(layer["experts"] as? [[String: Any]]) {
                let e = try #require(expert["index"] as? Int)
                #expect(expert["freq"] as? Double == Double(freq[index][e]), "layer \(index) expert \(e)")
                #expect(abs((expert["mass"] as? Double ?? -1) - mass[index][e]) <= 1e-3, "layer \(index) expert \(e)")
            }
        }
    }

    /// The committed profile: error never rises with width, every expert was reached, and it feeds the solver.
    @Test func profileIsConsistent() throws {
        let json = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: Self.profile)) as? [String: Any])
        let layers = try #require(json["layers"] as? [[String: Any]])
        #expect(layers.count == 4)
        for layer in layers {
            for expert in try #require(layer["experts"] as? [[String: Any]]) {
                let error = try #require(expert["error"] as? [String: Double])
                let ordered = error.keys.compactMap(Int.init).sorted().map { error[String($0)]! }
                #expect(zip(ordered, ordered.dropFirst()).allSatisfy { $0 >= $1 }, "\(ordered)")
                #expect((expert["tokens"] as? Int ?? 0) > 0)
            }
        }
        let run = try CLITests.pmq(["solve", "--profile", Self.profile.path, "--bits", "2.5"])
        #expect(run.status == 0 && run.stdout.contains("status optimal"), "\(run.stderr)")
    }
}
