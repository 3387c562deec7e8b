import Foundation

/// Rotary position embedding, HF convention: pairs (i, i + d/2), `x·cos + rotate_half(x)·sin`.
enum Rope {
    static func apply(_ x: inout [Float], count: Int, heads: Int, dim: Int, theta: Double, offset: Int = 0) {
        let half = dim / 2
        for t in 0..<count {
            let position = Double(t + offset)
            for i in 0..<half {
                let frequency = 1 / pow(theta, Double(2 * i) / Double(dim))
                let angle = position * frequency
                let c = Float(cos(angle)), s = Float(sin(angle))
                for h in 0..<heads {
                    let base = (t * heads + h) * dim
                    let a = x[base + i], b = x[base + i + half]
                    x[base + i] = a * c - b * s
                    x[base + i + half] = b * c + a * s
                }
            }
        }
    }
}

public enum Routing {
    /// Indices of the k largest values, largest first (ties: lower index first, as torch.topk).
    public static func topK(_ values: [Float], k: Int) -> [Int] {
        Array(values.indices.sorted { values[$0] != values[$1] ? values[$0] > values[$1] : $0 < $1 }.prefix(k))
    }
}
