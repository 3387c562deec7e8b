/// Quantization grids per group of input columns, one row at a time.
///
/// - widths 2…8: asymmetric min-max (GPTQ's `Quantizer`): the range always includes 0,
///   `scale = (max − min) / (2^b − 1)`, integer `zero = round(−min / scale)`,
///   `q = clamp(round(w / scale) + zero, 0, 2^b − 1)`, `ŵ = scale · (q − zero)`.
/// - width 1: sign binarisation (MC-MoE): `ŵ = ±mean|w|` over the group; stored as
///   `q ∈ {0, 1}`, `scale = 2·mean|w|`, fixed `zero = ½`.
public struct GroupQuantizer: Sendable, Equatable {
    public var bits: Int
    /// Search a shrunken range (factors 1.0, 0.98, …, 0.50 of min and max) for the grid with the
    /// least squared error on the group; off reproduces GPTQ's plain min-max grid.
    public var clipSearch: Bool

    public init(bits: Int, clipSearch: Bool = false) {
        precondition([1, 2, 3, 4, 8].contains(bits), "unsupported width \(bits)")
        self.bits = bits
        self.clipSearch = clipSearch
    }

    public var maxCode: Int { (1 << bits) - 1 }

    /// Scale and zero of one row's group.
    public struct Parameters: Sendable, Equatable {
        public var scale: Float
        public var zero: Float
    }

    public func parameters(_ values: UnsafeBufferPointer<Float>) -> Parameters {
        if bits == 1 {
            var sum: Float = 0
            for value in values { sum += abs(value) }
            let mean = values.isEmpty ? 0 : sum / Float(values.count)
            return Parameters(scale: 2 * mean, zero: 0.5)
        }
        var low: Float = 0, high: Float = 0
        for value in values {
            low = min(low, value)
            high = max(high, value)
        }
        if low == 0 && high == 0 {
            low = -1
            high = 1
        }
        let plain = grid(low: low, high: high)
        guard clipSearch else { return plain }
        var best = plain
        var bestError = squaredError(values, plain)
        for step in 1...25 {
            let shrink = 1 - Float(step) * 0.02
            let candidate = grid(low: low * shrink, high: high * shrink)
            let error = squaredError(values, candidate)
            if error < bestError {
                best = candidate
                bestError = error
            }
        }
        return best
    }

    func grid(low: Float, high: Float) -> Parameters {
        let scale = (high - low) / Float(maxCode)
        return Parameters(scale: scale, zero: (-low / scale).rounded(.toNearestOrEven))
    }

    /// `Σ (w − ŵ)²` over the group on the given grid.
    public func squaredError(_ values: UnsafeBufferPointer<Float>, _ parameters: Parameters) -> Float {
        var total: Float = 0
        for value in values {
            let difference = value - dequantize(code(value, parameters), parameters)
            total += difference * difference
        }
        return total
    }

    @inline(__always)
    public func code(_ value: Float, _ parameters: Parameters) -> Int {
        if bits == 1 { return value >= 0 ? 1 : 0 }
        let q = (value / parameters.scale).rounded(.toNearestOrEven) + parameters.zero
        return Int(min(max(q, 0), Float(maxCode)))
    }

    @inline(__always)
    public func dequantize(_ code: Int, _ parameters: Parameters) -> Float {
        parameters.scale * (Float(code) - parameters.zero)
    }
}
