import Foundation
import ModelFormat
import Testing

@testable import QuantEngine

/// `"bits": true`, `"groupSize": true` and `"version": true` were read as 1 through
/// JSONSerialization's bridging (issue 15); an allocation must hold integers.
@Suite struct AllocationPlanTests {
    static func read(_ text: String) -> String? {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("plan-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
            _ = try AllocationPlan.read(path: path)
            return nil
        } catch {
            return (error as? LocalizedError)?.errorDescription ?? "\(error)"
        }
    }

    static func document(version: String = "1", groupSize: String = "128", bits: String = "2") -> String {
        #"{"format": "pmq-allocation", "version": \#(version), "parameters": {"groupSize": \#(groupSize)},"#
            + #" "layers": [{"index": 0, "experts": [{"index": 0, "bits": \#(bits)}]}]}"#
    }

    @Test func integersOnly() {
        #expect(Self.read(Self.document()) == nil)
        #expect(Self.read(Self.document(version: "true"))?.contains("unsupported version") == true)
        #expect(Self.read(Self.document(groupSize: "true"))?.contains("parameters.groupSize") == true)
        #expect(Self.read(Self.document(groupSize: "9223372036854775807"))?.contains("parameters.groupSize") == true)
        #expect(Self.read(Self.document(bits: "true"))?.contains("layers[0].experts[0] needs an integer index") == true)
        #expect(Self.read(Self.document(bits: "2.5"))?.contains("layers[0].experts[0]") == true)
        #expect(Self.read(Self.document() + " // c")?.contains("not valid JSON") == true)
    }
}
