import Foundation
import ModelFormat

/// Seeded synthetic profiles of real MoE shapes, for testing and benchmarking the allocator at
/// scale before (or without) a calibration run. Their statistics are drawn, not measured, and
/// their model name says so.
///
/// Routing: per-layer log-normal expert popularity (frequency) with mass correlated to it.
/// Error: a per-expert log-normal base, divided by ~4 per extra bit (uniform quantization noise
/// ∝ 2^-2b), with 1-bit binarisation markedly worse; strictly decreasing in width.
public struct SyntheticProfile: Sendable {
    public struct Shape: Sendable {
        public var name: String
        public var architecture: String
        public var layers: Int
        public var experts: Int
        public var topK: Int
        public var hidden: Int
        public var intermediate: Int
        public var widths: [Int]
        /// Spread (σ of log-popularity) of routing across experts.
        public var routingSpread: Double

        public var paramsPerExpert: Int64 { 3 * Int64(hidden) * Int64(intermediate) }
    }

    public static let shapes: [String: Shape] = [
        "mixtral-8x7b": Shape(
            name: "mixtral-8x7b", architecture: "mixtral", layers: 32, experts: 8, topK: 2,
            hidden: 4096, intermediate: 14336, widths: [1, 2, 3], routingSpread: 0.35),
        "deepseek-v3": Shape(
            name: "deepseek-v3", architecture: "deepseek_v3", layers: 58, experts: 256, topK: 8,
            hidden: 7168, intermediate: 2048, widths: [1, 2, 3, 4], routingSpread: 0.8),
        // DeepSeek-V3 with a fifth width, 0 (removal).
        "deepseek-v3-w0": Shape(
            name: "deepseek-v3-w0", architecture: "deepseek_v3", layers: 58, experts: 256, topK: 8,
            hidden: 7168, intermediate: 2048, widths: [0, 1, 2, 3, 4], routingSpread: 0.8),
        "qwen3-30b-a3b": Shape(
            name: "qwen3-30b-a3b", architecture: "qwen3_moe", layers: 48, experts: 128, topK: 8,
            hidden: 2048, intermediate: 768, widths: [1, 2, 3, 4], routingSpread: 0.7),
    ]

    public var shape: Shape
    public var seed: UInt64
    public var groupSize: Int
    public var calibrationTokens: Int

    public init(shape: Shape, seed: UInt64 = 1, groupSize: Int = 128, calibrationTokens: Int = 131_072) {
        self.shape = shape
        self.seed = seed
        self.groupSize = groupSize
        self.calibrationTokens = calibrationTokens
    }

    public func document() -> Profile {
        var random = SplitMix64(seed: seed)
        let params = shape.paramsPerExpert
        let bytes = WidthMap(
            shape.widths.map { width in
                (
                    width,
                    width == Profile.removalWidth
                        ? 0
                        : PackedLayout.expertBytes(
                            hidden: shape.hidden, intermediate: shape.intermediate, bits: width, groupSize: groupSize)
                )
            })
        var layers: [Profile.Layer] = []
        for layer in 0..<shape.layers {
            // Deeper layers matter a little more (larger error scale), as measured on real MoEs.
            let layerScale = 1 + Double(layer) / Double(shape.layers)
            var popularity = (0..<shape.experts).map { _ in exp(shape.routingSpread * random.gaussian()) }
            let total = popularity.reduce(0, +)
            popularity = popularity.map { $0 / total }
            var experts: [Profile.Expert] = []
            for expert in 0..<shape.experts {
                let routed = (popularity[expert] * Double(calibrationTokens * shape.topK)).rounded()
                let mass = popularity[expert] * exp(0.25 * random.gaussian()) * Double(calibrationTokens)
                let base = layerScale * exp(0.5 * random.gaussian()) * Double(params) * 1e-6
                var errors: [(width: Int, value: Double)] = []
                var previous = Double.infinity
                for width in shape.widths where width != Profile.removalWidth {
                    var error = base * pow(4, -Double(width)) * exp(0.1 * random.gaussian())
                    if width == 1 { error *= 2.5 }
                    error = min(error, previous * 0.6)
                    previous = error
                    errors.append((width, error))
                }
                if shape.widths.contains(Profile.removalWidth) {
                    // Removal: 5.5× the lowest width's error, the median ratio measured on both example
                    // models (5.2 and 5.8, log-spread 0.1).
                    errors.insert((0, errors[0].value * 5.5 * exp(0.1 * random.gaussian())), at: 0)
                }
                experts.append(
                    .init(
                        index: expert, params: params, freq: routed, mass: mass,
                        error: WidthMap(errors), bytes: bytes))
            }
            layers.append(.init(index: layer, experts: experts))
        }
        return Profile(
            model: .init(
                name: "synthetic-\(shape.name) (synthetic, seed \(seed))", architecture: shape.architecture,
                topK: shape.topK),
            calibration: .init(
                tokens: calibrationTokens,
                description:
                    "synthetic: seeded log-normal routing statistics and errors (seed \(seed)), not measured from a "
                    + "model"
            ),
            widths: shape.widths, groupSize: groupSize, layers: layers)
    }
}
