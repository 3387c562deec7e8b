import Foundation

/// Rotary position embedding parameters: the base, and YaRN's context extension when the config
/// asks for it (`rope_scaling` or, in transformers 5, `rope_parameters`, with `type`/`rope_type`
/// `"yarn"`: DeepSeek-V2-Lite, V3, Kimi-K2). The frequencies and the attention factor follow
/// transformers' `_compute_yarn_parameters`; other scaling types are refused, not ignored.
public struct RopeParameters: Sendable, Equatable {
    public var theta: Double
    public var yarn: YaRN?

    public struct YaRN: Sendable, Equatable {
        public var factor: Double
        public var originalMaxPositions: Int
        public var betaFast: Double
        public var betaSlow: Double
        public var mscale: Double?
        public var mscaleAllDim: Double?
        /// Given explicitly, it replaces the one derived from `factor` and the mscales.
        public var attentionFactor: Double?
        public var truncate: Bool
    }

    /// YaRN's mscale: `0.1 · m · ln(scale) + 1`, 1 when the scale is at most 1.
    static func mscale(_ scale: Double, _ m: Double) -> Double { scale <= 1 ? 1 : 0.1 * m * log(scale) + 1 }

    /// Inverse frequencies of the `dim / 2` rotated pairs.
    public func inverseFrequencies(dim: Int) -> [Double] {
        let base = (0..<(dim / 2)).map { pow(theta, Double(2 * $0) / Double(dim)) }
        guard let yarn else { return base.map { 1 / $0 } }
        func correction(_ rotations: Double) -> Double {
            Double(dim) * log(Double(yarn.originalMaxPositions) / (rotations * 2 * .pi)) / (2 * log(theta))
        }
        var low = correction(yarn.betaFast), high = correction(yarn.betaSlow)
        if yarn.truncate { (low, high) = (floor(low), ceil(high)) }
        low = max(low, 0)
        high = min(high, Double(dim - 1))
        if low == high { high += 0.001 }
        return base.indices.map { i in
            let ramp = min(max((Double(i) - low) / (high - low), 0), 1)
            let extrapolation = 1 - ramp
            return 1 / (yarn.factor * base[i]) * (1 - extrapolation) + 1 / base[i] * extrapolation
        }
    }

    /// What cos and sin are multiplied by (1 without YaRN).
    public var attentionFactor: Double {
        guard let yarn else { return 1 }
        if let given = yarn.attentionFactor { return given }
        if let m = yarn.mscale, let all = yarn.mscaleAllDim, m != 0, all != 0 {
            return Self.mscale(yarn.factor, m) / Self.mscale(yarn.factor, all)
        }
        return Self.mscale(yarn.factor, 1)
    }

    /// DeepSeek's multiplier of the softmax scale: `mscale(factor, mscale_all_dim)²` under YaRN.
    public var softmaxScaleMultiplier: Double {
        guard let yarn, let all = yarn.mscaleAllDim, all != 0 else { return 1 }
        let m = Self.mscale(yarn.factor, all)
        return m * m
    }
}

extension ConfigFields {
    /// `rope_parameters` (transformers 5) or `rope_theta` + `rope_scaling` (the hub's files).
    func rope(maxPositions: Int) throws -> RopeParameters {
        let key = value("rope_parameters") != nil ? "rope_parameters" : "rope_scaling"
        var theta = try number("rope_theta", default: 10000)
        guard let raw = value(key) else { return RopeParameters(theta: theta, yarn: nil) }
        guard let object = raw as? [String: Any] else { throw fail(key, "expected an object") }
        let section = ConfigFields(object: object, file: file)
        func field(_ name: String) -> String { "\(key).\(name)" }
        if section.value("rope_theta") != nil {
            theta = try section.number("rope_theta", default: theta)
        }
        let typeKey = section.value("rope_type") != nil ? "rope_type" : "type"
        let type = section.value(typeKey) == nil ? "default" : try section.string(typeKey)
        switch type {
        case "default": return RopeParameters(theta: theta, yarn: nil)
        case "yarn":
            func number(_ name: String) throws -> Double? {
                do { return try section.optionalNumber(name) } catch { throw fail(field(name), "expected a number") }
            }
            guard let factor = try number("factor") else { throw fail(field("factor"), "missing") }
            guard factor >= 1 else { throw fail(field("factor"), "must be ≥ 1, got \(factor)") }
            let original: Int
            do {
                original = try section.positive("original_max_position_embeddings", default: maxPositions)
            } catch { throw fail(field("original_max_position_embeddings"), "expected a positive integer") }
            let yarn = RopeParameters.YaRN(
                factor: factor, originalMaxPositions: original,
                betaFast: try number("beta_fast").flatMap { $0 == 0 ? nil : $0 } ?? 32,
                betaSlow: try number("beta_slow").flatMap { $0 == 0 ? nil : $0 } ?? 1,
                mscale: try number("mscale"), mscaleAllDim: try number("mscale_all_dim"),
                attentionFactor: try number("attention_factor"),
                truncate: try section.bool("truncate", default: true))
            return RopeParameters(theta: theta, yarn: yarn)
        default:
            throw fail(field(typeKey), "RoPE scaling '\(type)' is not supported (pmq runs default and yarn)")
        }
    }
}
