import Foundation
import Testing
@testable import MoERuntime

/// `Parallel.perform` (the helper-thread pool on Linux): every iteration runs exactly once per
/// region, back-to-back regions do not mix, and concurrent callers (which fall back to
/// `concurrentPerform`) get their own iterations.
@Suite struct ParallelTests {
    final class Counts: @unchecked Sendable {
        let values: UnsafeMutablePointer<Int>
        let count: Int
        init(_ count: Int) {
            self.count = count
            values = .allocate(capacity: count)
            values.initialize(repeating: 0, count: count)
        }
        deinit { values.deallocate() }
    }

    @Test func everyIterationOnceAcrossManyRegions() {
        for region in 0..<2000 {
            let iterations = 1 + region % 37
            let counts = Counts(iterations)
            Parallel.perform(iterations: iterations) { i in counts.values[i] += region + 1 }
            #expect((0..<iterations).allSatisfy { counts.values[$0] == region + 1 }, "region \(region)")
        }
    }

    @Test func concurrentCallers() {
        let failures = Counts(8)
        DispatchQueue.concurrentPerform(iterations: 8) { caller in
            for region in 0..<300 {
                let iterations = 3 + (region + caller) % 20
                let counts = Counts(iterations)
                Parallel.perform(iterations: iterations) { i in counts.values[i] += 1 }
                if !(0..<iterations).allSatisfy({ counts.values[$0] == 1 }) { failures.values[caller] += 1 }
            }
        }
        #expect((0..<8).allSatisfy { failures.values[$0] == 0 })
    }
}
