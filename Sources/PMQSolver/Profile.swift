/// The expert profile (format `pmq-profile`, version 1): the contract between the profiler and
/// the allocator. See README "Profile format". Values here are as read from the file; the
/// reader has validated them (finite, non-negative, widths consistent).
public struct Profile: Sendable, Equatable {
    public struct Model: Sendable, Equatable, Codable {
        public var name: String
        public var architecture: String
        public init(name: String, architecture: String) {
            self.name = name
            self.architecture = architecture
        }
    }

    public struct Calibration: Sendable, Equatable, Codable {
        public var tokens: Int
        public var description: String
        public init(tokens: Int, description: String) {
            self.tokens = tokens
            self.description = description
        }
    }

    public struct Expert: Sendable, Equatable {
        /// Expert index within its layer.
        public var index: Int
        /// Parameters of the expert (gate + up + down).
        public var params: Int64
        /// Routing frequency (tokens that put this expert in their top-k); any non-negative scale.
        public var freq: Double
        /// Routing-probability mass; any non-negative scale.
        public var mass: Double
        /// Output-space quantization error per candidate width.
        public var error: [Int: Double]
        /// Real packed size in bytes per candidate width (weights + scales + zeros + index).
        public var bytes: [Int: Int64]
        public init(index: Int, params: Int64, freq: Double, mass: Double, error: [Int: Double], bytes: [Int: Int64]) {
            self.index = index
            self.params = params
            self.freq = freq
            self.mass = mass
            self.error = error
            self.bytes = bytes
        }
    }

    public struct Layer: Sendable, Equatable {
        public var index: Int
        public var experts: [Expert]
        /// Measured end-to-end loss increase with every expert of the layer at one width.
        public var sensitivity: Sensitivity?
        public init(index: Int, experts: [Expert], sensitivity: Sensitivity? = nil) {
            self.index = index
            self.experts = experts
            self.sensitivity = sensitivity
        }
    }

    /// `deltaNLL` (nats per token, may be ≤ 0 within noise) with the layer's experts at `width`.
    public struct Sensitivity: Sendable, Equatable {
        public var width: Int
        public var deltaNLL: Double
        public init(width: Int, deltaNLL: Double) {
            self.width = width
            self.deltaNLL = deltaNLL
        }
    }

    public static let formatName = "pmq-profile"
    public static let currentVersion = 1
    /// Widths pmq knows how to pack.
    public static let supportedWidths: Set<Int> = [1, 2, 3, 4, 8]

    public var model: Model
    public var calibration: Calibration
    /// Candidate widths, ascending.
    public var widths: [Int]
    public var groupSize: Int
    public var layers: [Layer]

    public init(model: Model, calibration: Calibration, widths: [Int], groupSize: Int, layers: [Layer]) {
        self.model = model
        self.calibration = calibration
        self.widths = widths
        self.groupSize = groupSize
        self.layers = layers
    }

    public var expertCount: Int { layers.reduce(0) { $0 + $1.experts.count } }
    public var totalParams: Int64 { layers.reduce(0) { $0 + $1.experts.reduce(0) { $0 + $1.params } } }
}
