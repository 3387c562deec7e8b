import Foundation
@testable import ModelFormat
import Testing

@Suite struct SafeTensorsTests {
    static func temporaryPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("pmq-st-\(UUID().uuidString)-\(name)").path
    }

    /// A file built byte by byte, independently of the writer: header JSON as given, then data.
    static func file(header: String, data: [UInt8]) -> Data {
        var bytes = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: Array(header.utf8))
        bytes.append(contentsOf: data)
        return bytes
    }

    static func parse(_ data: Data) throws -> SafeTensorsHeader.Parsed {
        try data.withUnsafeBytes { try SafeTensorsHeader.parse($0, file: "m.safetensors") }
    }

    static func problem(_ data: Data) -> String? {
        do {
            _ = try parse(data)
            return nil
        } catch {
            return (error as? LocalizedError)?.errorDescription ?? "\(error)"
        }
    }

    @Test func readsHandWrittenFileWithAllFloatTypes() throws {
        // f32 [2]: 1.5, -2; bf16 [2]: 1.0 (0x3F80), -0.5 (0xBF00); f16 [3]: 1.0 (0x3C00), 65504 (0x7BFF), 2^-24
        // (0x0001).
        let header =
            #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[2],"#
            + #""data_offsets":[8,12]},"c":{"dtype":"F16","shape":[3],"data_offsets":[12,18]},"#
            + #""__metadata__":{"format":"pt"}}"#
        var data: [UInt8] = []
        for value in [Float(1.5), -2] {
            withUnsafeBytes(of: value.bitPattern.littleEndian) { data.append(contentsOf: $0) }
        }
        data += [0x80, 0x3F, 0x00, 0xBF]
        data += [0x00, 0x3C, 0xFF, 0x7B, 0x01, 0x00]
        let path = Self.temporaryPath("hand.safetensors")
        try Self.file(header: header, data: data).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let file = try SafeTensorsFile(path: path)
        #expect(file.metadata == ["format": "pt"])
        #expect(file.names == ["a", "b", "c"])
        #expect(try file.floats("a") == [1.5, -2])
        #expect(try file.floats("b") == [1.0, -0.5])
        #expect(try file.floats("c", shape: [3]) == [1.0, 65504, Float(sign: .plus, exponent: -24, significand: 1)])
        #expect(throws: ModelFormatError.self) { try file.floats("c", shape: [2]) }
        #expect(throws: ModelFormatError.self) { try file.floats("missing") }
    }

    @Test func halfPrecisionConversionMatchesFloat16() {
        for bits in stride(from: 0, through: 0xFFFF, by: 1) {
            let ours = Float(float16Bits: UInt16(bits))
            let reference = Float(Float16(bitPattern: UInt16(bits)))
            #expect(
                ours.bitPattern == reference.bitPattern || (ours.isNaN && reference.isNaN),
                "0x\(String(bits, radix: 16))")
        }
    }

    @Test func writerRoundTrips() throws {
        var writer = SafeTensorsWriter()
        writer.metadata = ["quantization": "none"]
        try writer.add("w", shape: [2, 3], floats: [1, 2, 3, 4, 5, 6])
        try writer.add("q", dtype: .i32, shape: [1], data: Data([1, 0, 0, 0]))
        #expect(throws: ModelFormatError.self) { try writer.add("w", shape: [1], floats: [0]) }
        #expect(throws: ModelFormatError.self) { try writer.add("x", shape: [2], floats: [0]) }
        let path = Self.temporaryPath("rt.safetensors")
        try writer.write(to: path)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let headerLength = bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        #expect(headerLength % 8 == 0)
        let file = try SafeTensorsFile(path: path)
        #expect(try file.floats("w", shape: [2, 3]) == [1, 2, 3, 4, 5, 6])
        #expect(try file.info("q").dtype == .i32)
        #expect(file.metadata["quantization"] == "none")
    }

    @Test(arguments: [
        (
            #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, 8,
            "shape [2] × F32 is 8 bytes but data_offsets span 4"
        ),
        (#"{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}"#, 8, "unknown dtype F33"),
        (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 4, "run past the end of the data"),
        (
            #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"#
                + #""data_offsets":[2,6]}}"#,
            6, "overlap"
        ),
        (#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, 8, "a hole of 4 bytes"),
        (#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, 8, "4 bytes of data after the last tensor"),
        (#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, 4, "not a list of non-negative integers"),
        (#"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}}"#, 4, "overflows"),
        (#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, 4, "data_offsets must be"),
        (#"{"a":{"dtype":"F32","shape":[1]}}"#, 4, "data_offsets must be"),
        (#"{"a":[1]}"#, 0, "entry is not an object"),
        (#"{"__metadata__":{"k":1}}"#, 0, "__metadata__.k is not a string"),
        (#"{"a": "#, 0, "not valid JSON"),
        (#"[1]"#, 0, "does not start with '{'"),
    ])
    func rejectsBadHeaders(header: String, dataBytes: Int, expected: String) {
        let message = Self.problem(Self.file(header: header, data: [UInt8](repeating: 0, count: dataBytes)))
        #expect(message?.hasPrefix("m.safetensors: ") == true)
        #expect(message?.contains(expected) == true, "got \(message ?? "no error")")
    }

    @Test func rejectsBadLengths() {
        #expect(Self.problem(Data([1, 2, 3]))?.contains("truncated") == true)
        var huge = Data()
        withUnsafeBytes(of: UInt64(200_000_000).littleEndian) { huge.append(contentsOf: $0) }
        #expect(Self.problem(huge)?.contains("exceeds the 100,000,000-byte limit") == true)
        var long = Data()
        withUnsafeBytes(of: UInt64(50).littleEndian) { long.append(contentsOf: $0) }
        long.append(contentsOf: Array("{}".utf8))
        #expect(Self.problem(long)?.contains("truncated: header of 50 bytes") == true)
    }

    /// Thousands of seeded mutations of a valid file: every one is accepted or rejected with a
    /// message naming the file, never a crash; accepted ones satisfy the invariants.
    @Test func mutatedHeadersNeverCrash() throws {
        var writer = SafeTensorsWriter()
        try writer.add(
            "model.layers.0.mlp.experts.0.gate_proj.weight", shape: [4, 8], floats: (0..<32).map(Float.init))
        try writer.add("model.layers.0.mlp.gate.weight", dtype: .bf16, shape: [2, 8], data: Data(count: 32))
        try writer.add("lm_head.weight", dtype: .f16, shape: [3], data: Data(count: 6))
        let valid = try writer.serialized()
        var state: UInt64 = 12345
        func next() -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int(truncatingIfNeeded: state >> 33)
        }
        let alphabet = Array("{}[],:\"0123456789-eE.FBIU_ abcdefghijklmnopqrstuvwxyz".utf8)
        var accepted = 0
        for _ in 0..<4000 {
            var bytes = [UInt8](valid)
            for _ in 0..<(1 + next() % 4) {
                let position = next() % bytes.count
                switch next() % 4 {
                case 0: bytes[position] = alphabet[next() % alphabet.count]
                case 1: bytes.remove(at: position)
                case 2: bytes.insert(alphabet[next() % alphabet.count], at: position)
                default: bytes = Array(bytes.prefix(position))
                }
                if bytes.isEmpty { break }
            }
            let data = Data(bytes)
            do {
                let parsed = try Self.parse(data)
                accepted += 1
                for info in parsed.tensors.values {
                    #expect(info.dataRange.upperBound <= data.count - parsed.dataStart)
                    #expect(info.elementCount * info.dtype.byteSize == info.dataRange.count)
                }
            } catch let error as ModelFormatError {
                #expect(error.file == "m.safetensors")
            }
        }
        #expect(accepted < 4000)
    }
}
