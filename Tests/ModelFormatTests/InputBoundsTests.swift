import Foundation
import Testing

@testable import ModelFormat

/// Sizes and ids that once allocated until the process died or were read as something else
/// (issue 15): each is refused by name.
@Suite struct InputBoundsTests {
    static func configProblem(layers: String, experts: String) -> String? {
        let json =
            #"{"model_type": "mixtral", "vocab_size": 8, "hidden_size": 4, "num_attention_heads": 2,"#
            + #" "num_hidden_layers": \#(layers), "num_experts_per_tok": 1, "num_local_experts": \#(experts),"#
            + #" "intermediate_size": 8}"#
        do {
            _ = try MoEModelConfig.parse(Data(json.utf8), file: "config.json")
            return nil
        } catch {
            return (error as? LocalizedError)?.errorDescription
        }
    }

    @Test func hugeLayerAndExpertCountsAreRefused() {
        #expect(
            Self.configProblem(layers: "2147483648", experts: "2")?.contains(
                "num_hidden_layers: must be at most 4096, got 2147483648") == true)
        #expect(
            Self.configProblem(layers: "2", experts: "2147483648")?.contains(
                "num_local_experts: must be at most 16777216") == true)
        #expect(
            Self.configProblem(layers: "2", experts: "100000")?.contains("pmq reads at most 65536 per layer") == true)
        #expect(Self.configProblem(layers: "64", experts: "32768")?.contains("and 1048576 in all") == true)
        #expect(Self.configProblem(layers: "2", experts: "4") == nil)
    }

    @Test(arguments: ["true", "1.5", "18446744073709551616", "-1", "\"3\""])
    func tokenizerIdsMustBeIntegersInRange(_ id: String) {
        let json = #"{"model": {"type": "BPE", "vocab": {"a": 0, "b": \#(id)}, "merges": []}}"#
        do {
            _ = try BPETokenizer(data: Data(json.utf8), file: "t.json")
            Issue.record("id \(id) was accepted")
        } catch {
            let message = (error as? LocalizedError)?.errorDescription ?? "\(error)"
            #expect(message.contains("t.json: model.vocab[b]: not an integer id from 0 to 2^31 − 1"), "\(message)")
        }
    }

    @Test func jsonIntegersRefuseBooleansFractionsAndOutOfRange() {
        #expect(jsonInteger(NSNumber(value: true), in: 0...8) == nil)
        #expect(jsonInteger(NSNumber(value: 1.5), in: 0...8) == nil)
        #expect(jsonInteger(NSNumber(value: 9), in: 0...8) == nil)
        #expect(jsonInteger(NSNumber(value: 1e300), in: 0...Int.max) == nil)
        #expect(jsonInteger("3", in: 0...8) == nil)
        #expect(jsonInteger(NSNumber(value: 3), in: 0...8) == 3)
        // What JSONSerialization gives for `true` and `3` in a document.
        let parsed = try? JSONSerialization.jsonObject(with: Data(#"[true, 3, 3.0]"#.utf8)) as? [Any]
        #expect(parsed.map { $0.map { jsonInteger($0, in: 0...8) } } == [nil, 3, 3])
    }
}
