import Foundation
import ModelFormat

/// The profile file (`pmq-profile`, version 1) as the profiler writes it. The allocator reads the
/// JSON with its own validating reader; the two sides share the format, not the types.
public struct ProfileDocument: Codable, Sendable {
    public struct Model: Codable, Sendable {
        public var name: String
        public var architecture: String
    }

    public struct Calibration: Codable, Sendable {
        public var tokens: Int
        public var description: String
    }

    public struct Expert: Codable, Sendable {
        public var index: Int
        public var params: Int64
        public var freq: Double
        public var mass: Double
        public var error: WidthMap<Double>
        public var bytes: WidthMap<Int64>
        /// Calibration tokens routed to the expert (absent in synthetic profiles).
        public var tokens: Int? = nil
        /// How the error was measured when the usual way was impossible.
        public var note: String? = nil
    }

    public struct Layer: Codable, Sendable {
        public var index: Int
        public var experts: [Expert]
        /// Wall time of this layer's stages: calibration forward pass and Hessians, GPTQ.
        public var seconds: StageSeconds? = nil
        /// End-to-end loss increase when this layer's experts are all quantized at `width`.
        public var sensitivity: Sensitivity? = nil
    }

    /// `deltaNLL`: mean next-token NLL (nats) over `tokens` calibration tokens with this layer's
    /// experts GPTQ-quantized at `width` and every other layer float, minus the float model's.
    public struct Sensitivity: Codable, Sendable, Equatable {
        public var width: Int
        public var deltaNLL: Double
        public var tokens: Int
    }

    public struct StageSeconds: Codable, Sendable, Equatable {
        public var forward: Double
        public var quantization: Double
    }

    public var format = "pmq-profile"
    public var version = 1
    public var model: Model
    public var calibration: Calibration
    public var widths: [Int]
    public var groupSize: Int
    public var layers: [Layer]
    /// Wall time of the whole run (absent in synthetic profiles).
    public var seconds: Double? = nil

    public func write(to path: String) throws {
        try AtomicFile.writeJSON(self, to: path)
    }
}

/// A width → value map encoded as a JSON object with keys in ascending width order (`{"1": …, "2": …}`).
public struct WidthMap<Value: Codable & Sendable>: Codable, Sendable {
    public var entries: [(width: Int, value: Value)]

    public init(_ entries: [(width: Int, value: Value)]) {
        self.entries = entries.sorted { $0.width < $1.width }
    }

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { return nil }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        for entry in entries { try container.encode(entry.value, forKey: Key(stringValue: String(entry.width))) }
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: Key.self)
        entries = try container.allKeys.map { key in
            guard let width = Int(key.stringValue) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: container, debugDescription: "not a bit width")
            }
            return (width, try container.decode(Value.self, forKey: key))
        }.sorted { $0.width < $1.width }
    }
}
