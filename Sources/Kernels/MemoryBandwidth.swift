import Foundation
import ModelFormat

/// Sustained read bandwidth of this machine: sums a buffer much larger than the caches with all
/// cores, best of several passes. The yardstick decode speed is compared against.
public enum MemoryBandwidth {
    public static func measure(bytes: Int = 1 << 30, passes: Int = 5) -> Double {
        let count = bytes / 4
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { buffer.deallocate() }
        buffer.initialize(repeating: 1, count: count)
        let threads = Parallel.cores
        let slice = count / threads
        struct Shared: @unchecked Sendable { let base: UnsafePointer<Float> }
        let shared = Shared(base: buffer)
        var best = 0.0
        for _ in 0..<passes {
            let start = ContinuousClock.now
            DispatchQueue.concurrentPerform(iterations: threads) { t in
                let base = UnsafeRawPointer(shared.base + t * slice)
                var a = SIMD8<Float>(), b = SIMD8<Float>(), c = SIMD8<Float>(), d = SIMD8<Float>()
                var i = 0
                while i + 32 <= slice {
                    a += base.load(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
                    b += base.load(fromByteOffset: 4 * (i + 8), as: SIMD8<Float>.self)
                    c += base.load(fromByteOffset: 4 * (i + 16), as: SIMD8<Float>.self)
                    d += base.load(fromByteOffset: 4 * (i + 24), as: SIMD8<Float>.self)
                    i += 32
                }
                if (a + b + c + d).sum() == -1 { print("") } // keep the loads alive
            }
            let seconds = ModelFormat.seconds(since: start)
            best = max(best, Double(slice * threads * 4) / seconds)
        }
        return best
    }
}
