import Foundation
import Testing
@testable import ModelFormat

@Suite struct ProfileReaderTests {
    static let valid = """
        {"format": "pmq-profile", "version": 1,
         "model": {"name": "tiny", "architecture": "mixtral"},
         "calibration": {"tokens": 1024, "description": "test"},
         "widths": [2, 3], "groupSize": 128,
         "layers": [{"index": 0, "experts": [
            {"index": 0, "params": 3000, "freq": 3, "mass": 2.5, "error": {"2": 8.0, "3": 2.0},
             "bytes": {"2": 900, "3": 1300}},
            {"index": 1, "params": 3000, "freq": 1, "mass": 0.5, "error": {"2": 6.0, "3": 1.0},
             "bytes": {"2": 900, "3": 1300}}]}]}
        """

    /// The valid document with one substring replaced.
    func mutated(_ old: String, _ new: String) -> Data {
        precondition(Self.valid.contains(old), old)
        return Data(Self.valid.replacingOccurrences(of: old, with: new).utf8)
    }

    func message(_ data: Data) -> String? {
        do {
            _ = try ProfileReader.parse(data, file: "p.json")
            return nil
        } catch {
            return (error as? LocalizedError)?.errorDescription
        }
    }

    @Test func readsAValidProfile() throws {
        let result = try ProfileReader.parse(Data(Self.valid.utf8), file: "p.json")
        #expect(result.profile.widths == [2, 3])
        #expect(result.profile.expertCount == 2)
        #expect(result.profile.layers[0].experts[1].error[3] == 1.0)
        #expect(result.profile.layers[0].experts[0].bytes[2] == 900)
        #expect(result.warnings.isEmpty)
    }

    @Test(arguments: [
        // (old, new, text the one-line message must contain)
        ("\"version\": 1", "\"version\": 2", "p.json: version: unsupported version 2"),
        ("\"format\": \"pmq-profile\"", "\"format\": \"other\"", "p.json: format: expected \"pmq-profile\""),
        ("\"params\": 3000, \"freq\": 3", "\"freq\": 3", "p.json: layers[0].experts[0].params: missing"),
        (
            "\"error\": {\"2\": 8.0, \"3\": 2.0}", "\"error\": {\"2\": -8.0, \"3\": 2.0}",
            "layers[0].experts[0].error.2: must be a finite number ≥ 0"
        ),
        (
            "\"error\": {\"2\": 8.0, \"3\": 2.0}", "\"error\": {\"2\": NaN, \"3\": 2.0}",
            "layers[0].experts[0].error.2: must be a finite number ≥ 0, got nan"
        ),
        (
            "\"error\": {\"2\": 8.0, \"3\": 2.0}", "\"error\": {\"2\": 8.0, \"3\": Infinity}",
            "layers[0].experts[0].error.3: must be a finite number ≥ 0"
        ),
        ("\"error\": {\"2\": 8.0, \"3\": 2.0}", "\"error\": {\"2\": 8.0}", "layers[0].experts[0].error.3: missing"),
        (
            "\"error\": {\"2\": 8.0, \"3\": 2.0}", "\"error\": {\"2\": 8.0, \"3\": 2.0, \"4\": 1.0}",
            "p.json: width 4: at layers[0].experts[0].error.4 is not in the profile's widths"
        ),
        ("\"widths\": [2, 3]", "\"widths\": [2, 5]", "p.json: width 5: at widths[1] is not supported"),
        ("\"widths\": [2, 3]", "\"widths\": []", "p.json: widths: must list at least one width"),
        ("\"widths\": [2, 3]", "\"widths\": [2, 2]", "p.json: widths[1]: width 2 is listed twice"),
        ("\"mass\": 0.5", "\"mass\": \"high\"", "layers[0].experts[1].mass: expected a number, got string"),
        ("\"freq\": 1,", "\"freq\": -1,", "layers[0].experts[1].freq: must be a finite number ≥ 0"),
        (
            "\"bytes\": {\"2\": 900, \"3\": 1300}}]", "\"bytes\": {\"2\": 0, \"3\": 1300}}]",
            "layers[0].experts[1].bytes.2: must be 1 to 10000000000000 (10^13), got 0"
        ),
        ("\"groupSize\": 128", "\"groupSize\": 0", "p.json: groupSize: must be 1 to 1048576, got 0"),
        (
            "{\"index\": 1, \"params\"", "{\"index\": 0, \"params\"",
            "layers[0].experts[1].index: expert 0 appears twice"
        ),
        (
            "\"params\": 3000, \"freq\": 3", "\"params\": 3000.5, \"freq\": 3",
            "layers[0].experts[0].params: expected an integer"
        ),
        (
            "\"model\": {\"name\": \"tiny\", \"architecture\": \"mixtral\"}", "\"model\": [1]",
            "p.json: model: expected an object, got array"
        ),
    ])
    func rejectsBadFieldsByName(old: String, new: String, expected: String) {
        checkRejected(old: old, new: new, expected: expected)
    }

    /// Width 0 (removal): no bytes, a top-k to keep, and at least one real width.
    static let removal =
        valid
        .replacingOccurrences(of: "\"widths\": [2, 3]", with: "\"widths\": [0, 2, 3]")
        .replacingOccurrences(of: "\"architecture\": \"mixtral\"}", with: "\"architecture\": \"mixtral\", \"topK\": 1}")
        .replacingOccurrences(of: "\"error\": {\"2\"", with: "\"error\": {\"0\": 20.0, \"2\"")
        .replacingOccurrences(of: "\"bytes\": {\"2\"", with: "\"bytes\": {\"0\": 0, \"2\"")

    @Test(arguments: [
        (
            "\"bytes\": {\"0\": 0, \"2\": 900, \"3\": 1300}}]", "\"bytes\": {\"0\": 5, \"2\": 900, \"3\": 1300}}]",
            "layers[0].experts[1].bytes.0: must be 0 (width 0 removes the expert), got 5"
        ),
        (", \"topK\": 1", "", "model.topK: missing (a profile with width 0"),
        ("\"widths\": [0, 2, 3]", "\"widths\": [0]", "widths: must list at least one width other than 0"),
        ("\"topK\": 1", "\"topK\": 0", "model.topK: must be > 0"),
    ])
    func readsWidthZeroAndRejectsItsBadFields(old: String, new: String, expected: String) throws {
        let profile = try ProfileReader.parse(Data(Self.removal.utf8), file: "p.json").profile
        #expect(profile.widths == [0, 2, 3] && profile.model.topK == 1 && profile.layers[0].experts[0].bytes[0] == 0)
        #expect(Self.removal.contains(old))
        let text = Self.removal.replacingOccurrences(of: old, with: new)
        let failure = message(Data(text.utf8))
        #expect(failure?.contains(expected) == true, "\(failure ?? "accepted")")
    }

    /// The measured output errors and loss curve: read back, and rejected by name when bad.
    @Test func readsOutputErrorsAndTheLossCurve() throws {
        let text = Self.valid
            .replacingOccurrences(
                of: "\"bytes\": {\"2\": 900, \"3\": 1300}}]}]}",
                with: "\"bytes\": {\"2\": 900, \"3\": 1300}, \"outputError\": {\"2\": 0.5, \"3\": 0.125}}], "
                    + "\"sensitivity\": {\"width\": 2, \"deltaNLL\": 0.1, \"byWidth\": {\"2\": 0.1, \"3\": 0.01}}}]}")
        let profile = try ProfileReader.parse(Data(text.utf8), file: "p.json").profile
        #expect(profile.layers[0].experts[1].outputError?[3] == 0.125)
        #expect(profile.layers[0].experts[0].outputError == nil)
        #expect(profile.layers[0].sensitivity?.byWidth?[3] == 0.01)
        // Round trip through the writer's encoding.
        let encoded = try JSONEncoder().encode(profile)
        #expect(try ProfileReader.parse(encoded, file: "q.json").profile == profile)
        func rejected(_ old: String, _ new: String) -> String? {
            message(Data(text.replacingOccurrences(of: old, with: new).utf8))
        }
        #expect(
            rejected("\"outputError\": {\"2\": 0.5, \"3\": 0.125}", "\"outputError\": {\"2\": 0.5}")?.contains(
                "p.json: layers[0].experts[1].outputError.3: missing") == true)
        #expect(
            rejected("\"3\": 0.125", "\"3\": -1")?.contains("layers[0].experts[1].outputError.3: must be a finite")
                == true)
        #expect(
            rejected("\"byWidth\": {\"2\": 0.1, \"3\": 0.01}", "\"byWidth\": {\"2\": 0.1, \"3\": NaN}")?.contains(
                "layers[0].sensitivity.byWidth.3: must be a finite number") == true)
        #expect(
            rejected("\"deltaNLL\": 0.1,", "\"deltaNLL\": NaN,")?.contains(
                "layers[0].sensitivity.deltaNLL: must be a finite number") == true)
    }

    func checkRejected(old: String, new: String, expected: String) {
        let text = message(mutated(old, new))
        #expect(text?.contains(expected) == true, "got: \(text ?? "no error")")
        #expect(text?.contains("\n") == false)
    }

    @Test func rejectsEmptyLayersAndExpertLists() {
        let noLayers = Data(
            (#"{"format": "pmq-profile", "version": 1, "model": {"name": "x", "architecture": "mixtral"},"#
                + #" "calibration": {"tokens": 0}, "widths": [2], "groupSize": 128, "layers": []}"#)
                .utf8)
        #expect(message(noLayers)?.contains("p.json: layers: must contain at least one layer") == true)
        let noExperts = Data(
            (#"{"format": "pmq-profile", "version": 1, "model": {"name": "x", "architecture": "mixtral"},"#
                + #" "calibration": {"tokens": 0}, "widths": [2], "groupSize": 128, "layers": [{"index": 0,"#
                + #" "experts": []}]}"#)
                .utf8)
        #expect(message(noExperts)?.contains("p.json: layers[0].experts: layer 0 has no experts") == true)
    }

    @Test func reportsSyntaxErrorsWithAPosition() {
        #expect(
            message(Data("{\"format\": \"pmq-profile\",\n \"version\": x}".utf8))?.hasPrefix(
                "p.json: not valid JSON: unexpected character at line 2, column 13") == true)
        #expect(message(Data())?.contains("p.json: not valid JSON: the file is empty") == true)
        #expect(message(Data("[1, 2]".utf8))?.contains("expected a JSON object") == true)
        // Truncations of a valid profile never crash and always name the file.
        let bytes = Array(Self.valid.utf8)
        for cut in stride(from: 0, to: bytes.count, by: 7) {
            #expect(message(Data(bytes[0..<cut]))?.hasPrefix("p.json: ") == true)
        }
    }

    @Test func warnsWhenErrorGrowsWithWidth() throws {
        let result = try ProfileReader.parse(
            mutated("\"error\": {\"2\": 6.0, \"3\": 1.0}", "\"error\": {\"2\": 6.0, \"3\": 7.0}"), file: "p.json")
        #expect(result.warnings.count == 1)
        #expect(result.warnings[0].contains("layer 0 expert 1: error grows from 2 to 3 bits"))
    }

    @Test func missingFileIsNamed() {
        #expect(throws: ModelFormatError.self) { try ProfileReader.read(path: "/nonexistent/profile.json") }
        do {
            _ = try ProfileReader.read(path: "/nonexistent/profile.json")
        } catch {
            #expect(
                (error as? LocalizedError)?.errorDescription?.hasPrefix("/nonexistent/profile.json: cannot read")
                    == true)
        }
    }
}
