/// `H += Xᵀ X` for rows of X, in f32 with SIMD rank-1 updates of the upper triangle (by rows of
/// 8-wide column blocks), mirrored when read. `H = Σ_t x_t x_tᵀ` over the tokens routed to an
/// expert: the Hessian of its output error.
public struct HessianAccumulator: Sendable {
    public let dimension: Int
    public private(set) var samples = 0
    private var upper: [Float]

    public init(dimension: Int) {
        self.dimension = dimension
        upper = [Float](repeating: 0, count: dimension * dimension)
    }

    /// Adds `count` rows of `x` (`[count, dimension]`, row-major) selected by `rows` (or all).
    public mutating func add(_ x: [Float], rows: [Int]? = nil) {
        let n = dimension
        let selected = rows ?? Array(0..<(x.count / n))
        samples += selected.count
        x.withUnsafeBufferPointer { x in
            upper.withUnsafeMutableBufferPointer { h in
                let hBase = h.baseAddress!, xBase = x.baseAddress!
                for row in selected {
                    let v = xBase + row * n
                    for i in 0..<n {
                        let scale = v[i]
                        if scale == 0 { continue }
                        let target = hBase + i * n
                        var j = i
                        let splat = SIMD8<Float>(repeating: scale)
                        while j + 8 <= n {
                            let current = UnsafeRawPointer(target + j).loadUnaligned(as: SIMD8<Float>.self)
                            let update = current.addingProduct(splat, UnsafeRawPointer(v + j).loadUnaligned(as: SIMD8<Float>.self))
                            UnsafeMutableRawPointer(target + j).storeBytes(of: update, as: SIMD8<Float>.self)
                            j += 8
                        }
                        while j < n {
                            target[j] += scale * v[j]
                            j += 1
                        }
                    }
                }
            }
        }
    }

    /// The full symmetric matrix in Double, as GPTQ takes it.
    public var matrix: [Double] {
        let n = dimension
        var full = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in i..<n {
                full[i * n + j] = Double(upper[i * n + j])
                full[j * n + i] = Double(upper[i * n + j])
            }
        }
        return full
    }
}
