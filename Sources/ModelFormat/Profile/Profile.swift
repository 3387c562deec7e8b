import Foundation

/// The expert profile (`pmq-profile`, version 1; docs/FORMATS.md §1): the contract between the
/// profiler, which writes it, and the allocator, which reads it with `ProfileReader` (strict, every
/// problem named by field). One type for both sides: values as the profiler measured them.
public struct Profile: Codable, Sendable, Equatable {
    /// Bounds the reader puts on one expert, far above any real expert (DeepSeek-V3's has 44 M
    /// parameters), so that sums over a model's experts times widths cannot overflow 64 bits.
    public static let maximumExpertParameters: Int64 = 1_000_000_000_000
    public static let maximumExpertBytes: Int64 = 10_000_000_000_000
    public struct Model: Codable, Sendable, Equatable {
        public var name: String
        public var architecture: String
        /// Experts per token: removal (width 0) must leave a layer at least this many.
        public var topK: Int?
        public init(name: String, architecture: String, topK: Int? = nil) {
            self.name = name
            self.architecture = architecture
            self.topK = topK
        }
    }

    public struct Calibration: Codable, Sendable, Equatable {
        public var tokens: Int
        public var description: String
        /// Identifies the calibration tokens used (`Profiler.calibrationFingerprint`): what a
        /// quantization cache is matched against (absent in older and synthetic profiles).
        public var fingerprint: String?
        public init(tokens: Int, description: String, fingerprint: String? = nil) {
            self.tokens = tokens
            self.description = description
            self.fingerprint = fingerprint
        }
    }

    public struct Expert: Codable, Sendable, Equatable {
        /// Expert index within its layer.
        public var index: Int
        /// Parameters of the expert (gate + up + down).
        public var params: Int64
        /// Routing frequency (tokens that put this expert in their top-k); any non-negative scale.
        public var freq: Double
        /// Routing-probability mass; any non-negative scale.
        public var mass: Double
        /// Output-space quantization error per candidate width.
        public var error: WidthMap<Double>
        /// Real packed size in bytes per candidate width (weights + scales + zeros + index).
        public var bytes: WidthMap<Int64>
        /// The expected squared error the expert's quantization adds to one token's MoE output,
        /// per candidate width: `share · mean g² ‖Ê(x) − E(x)‖²` over a sample of its routed tokens,
        /// with `g` the routing weight and `share` its routed tokens per layer token (absent in
        /// profiles made before it, in synthetic ones, and for experts no token reached).
        public var outputError: WidthMap<Double>?
        /// Calibration tokens routed to the expert (absent in synthetic profiles).
        public var tokens: Int?
        /// How the error was measured when the usual way was impossible.
        public var note: String?

        public init(
            index: Int, params: Int64, freq: Double, mass: Double, error: WidthMap<Double>, bytes: WidthMap<Int64>,
            outputError: WidthMap<Double>? = nil, tokens: Int? = nil, note: String? = nil
        ) {
            self.outputError = outputError
            self.index = index
            self.params = params
            self.freq = freq
            self.mass = mass
            self.error = error
            self.bytes = bytes
            self.tokens = tokens
            self.note = note
        }
    }

    public struct Layer: Codable, Sendable, Equatable {
        public var index: Int
        public var experts: [Expert]
        /// Wall time of this layer's stages: calibration forward pass and Hessians, GPTQ.
        public var seconds: StageSeconds?
        /// End-to-end loss increase when this layer's experts are all quantized at `width`.
        public var sensitivity: Sensitivity?

        public init(index: Int, experts: [Expert], seconds: StageSeconds? = nil, sensitivity: Sensitivity? = nil) {
            self.index = index
            self.experts = experts
            self.seconds = seconds
            self.sensitivity = sensitivity
        }
    }

    /// `deltaNLL`: mean next-token NLL (nats; may be ≤ 0 within noise) over `tokens` calibration
    /// tokens with this layer's experts GPTQ-quantized at `width` and every other layer float,
    /// minus the float model's.
    /// `byWidth`: the same measurement at every candidate width (absent in older profiles): the
    /// layer's loss curve, which lets the cost of each width use the loss measured at that width.
    public struct Sensitivity: Codable, Sendable, Equatable {
        public var width: Int
        public var deltaNLL: Double
        public var tokens: Int?
        public var byWidth: WidthMap<Double>?
        public init(width: Int, deltaNLL: Double, tokens: Int? = nil, byWidth: WidthMap<Double>? = nil) {
            self.width = width
            self.deltaNLL = deltaNLL
            self.tokens = tokens
            self.byWidth = byWidth
        }
    }

    public struct StageSeconds: Codable, Sendable, Equatable {
        public var forward: Double
        public var quantization: Double
        public init(forward: Double, quantization: Double) {
            self.forward = forward
            self.quantization = quantization
        }
    }

    /// How a measured profile was made (absent in synthetic profiles and in older files): what
    /// `pmq profile merge` checks before it joins slices, so that a merged profile is the one a
    /// single run writes.
    public struct Profiling: Codable, Sendable, Equatable {
        /// `ModelDigest` of the checkpoint: config, safetensors headers and sampled data blocks.
        public var modelDigest: String
        /// Decoder layers in the model.
        public var decoderLayers: Int
        /// The decoder layers this run profiled, `[from, to)`: `[0, decoderLayers]` for a whole run.
        public var layers: [Int]
        public var sequenceLength: Int
        public var dampening: Double
        public var actOrder: Bool
        public var clipSearch: Bool
        public var sensitivityWindows: Int
        public var sensitivityWidth: Int
        public var sensitivityCurve: Bool
        public var outputSamples: Int

        public init(
            modelDigest: String, decoderLayers: Int, layers: Range<Int>, sequenceLength: Int, dampening: Double,
            actOrder: Bool, clipSearch: Bool, sensitivityWindows: Int, sensitivityWidth: Int, sensitivityCurve: Bool,
            outputSamples: Int
        ) {
            self.modelDigest = modelDigest
            self.decoderLayers = decoderLayers
            self.layers = [layers.lowerBound, layers.upperBound]
            self.sequenceLength = sequenceLength
            self.dampening = dampening
            self.actOrder = actOrder
            self.clipSearch = clipSearch
            self.sensitivityWindows = sensitivityWindows
            self.sensitivityWidth = sensitivityWidth
            self.sensitivityCurve = sensitivityCurve
            self.outputSamples = outputSamples
        }

        /// `layers` as a range, when it is one within the model (of at most `MoEModelConfig.maximumLayers`).
        public var layerRange: Range<Int>? {
            guard decoderLayers <= MoEModelConfig.maximumLayers, layers.count == 2, layers[0] >= 0,
                layers[0] < layers[1], layers[1] <= decoderLayers
            else {
                return nil
            }
            return layers[0]..<layers[1]
        }

        /// The first setting in which `other` differs (the layer range aside), or nil.
        public func difference(from other: Profiling) -> String? {
            let pairs: [(String, String, String)] = [
                ("profiling.modelDigest (another checkpoint)", modelDigest, other.modelDigest),
                ("profiling.decoderLayers", "\(decoderLayers)", "\(other.decoderLayers)"),
                ("profiling.sequenceLength", "\(sequenceLength)", "\(other.sequenceLength)"),
                ("profiling.dampening", "\(dampening)", "\(other.dampening)"),
                ("profiling.actOrder", "\(actOrder)", "\(other.actOrder)"),
                ("profiling.clipSearch", "\(clipSearch)", "\(other.clipSearch)"),
                ("profiling.sensitivityWindows", "\(sensitivityWindows)", "\(other.sensitivityWindows)"),
                ("profiling.sensitivityWidth", "\(sensitivityWidth)", "\(other.sensitivityWidth)"),
                ("profiling.sensitivityCurve", "\(sensitivityCurve)", "\(other.sensitivityCurve)"),
                ("profiling.outputSamples", "\(outputSamples)", "\(other.outputSamples)"),
            ]
            return pairs.first { $0.1 != $0.2 }.map { "\($0.0): \($0.1) against \($0.2)" }
        }
    }

    public static let formatName = "pmq-profile"
    public static let currentVersion = 1
    /// Widths pmq knows how to pack.
    public static let supportedWidths: Set<Int> = [1, 2, 3, 4, 8]
    /// Width 0: the expert is removed (its bytes are 0; its error is what removing it costs).
    public static let removalWidth = 0

    public var format = Profile.formatName
    public var version = Profile.currentVersion
    public var model: Model
    public var calibration: Calibration
    /// Candidate widths, ascending.
    public var widths: [Int]
    public var groupSize: Int
    public var layers: [Layer]
    /// Wall time of the whole run (absent in synthetic profiles).
    public var seconds: Double?
    public var profiling: Profiling?

    public init(
        model: Model, calibration: Calibration, widths: [Int], groupSize: Int, layers: [Layer],
        seconds: Double? = nil, profiling: Profiling? = nil
    ) {
        self.profiling = profiling
        self.model = model
        self.calibration = calibration
        self.widths = widths
        self.groupSize = groupSize
        self.layers = layers
        self.seconds = seconds
    }

    public var expertCount: Int { layers.reduce(0) { $0 + $1.experts.count } }
    public var totalParams: Int64 { layers.reduce(0) { $0 + $1.experts.reduce(0) { $0 + $1.params } } }

    /// Writes the profile atomically as JSON.
    public func write(to path: String) throws {
        try AtomicFile.writeJSON(self, to: path)
    }
}

/// A width → value map encoded as a JSON object with keys in ascending width order (`{"1": …, "2": …}`).
public struct WidthMap<Value: Codable & Sendable & Equatable>: Codable, Sendable, Equatable,
    ExpressibleByDictionaryLiteral
{
    public var entries: [(width: Int, value: Value)]

    public init(_ entries: [(width: Int, value: Value)]) {
        // Maps read from a profile come in order: kept as they are, without a sorted copy.
        let ordered = entries.indices.dropFirst().allSatisfy { entries[$0 - 1].width <= entries[$0].width }
        self.entries = ordered ? entries : entries.sorted { $0.width < $1.width }
    }

    public init(_ values: [Int: Value]) {
        self.init(values.map { (width: $0.key, value: $0.value) })
    }

    public init(dictionaryLiteral elements: (Int, Value)...) {
        self.init(elements.map { (width: $0.0, value: $0.1) })
    }

    /// The value at `width`, nil when the map has none. Inlinable: the allocator reads it for every
    /// expert and width, and specialised it costs a few compares.
    @inlinable public subscript(width: Int) -> Value? {
        entries.first { $0.width == width }?.value
    }

    @inlinable public var widths: [Int] { entries.map(\.width) }

    public static func == (a: WidthMap, b: WidthMap) -> Bool {
        a.entries.count == b.entries.count
            && zip(a.entries, b.entries).allSatisfy { $0.width == $1.width && $0.value == $1.value }
    }

    private struct WidthKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { return nil }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: WidthKey.self)
        for entry in entries { try container.encode(entry.value, forKey: WidthKey(stringValue: String(entry.width))) }
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: WidthKey.self)
        entries = try container.allKeys.map { key in
            guard let width = Int(key.stringValue) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: container, debugDescription: "not a bit width")
            }
            return (width, try container.decode(Value.self, forKey: key))
        }.sorted { $0.width < $1.width }
    }
}
