import Foundation
@testable import Kernels
import Synchronization
import Testing

/// `Parallel.perform` (the helper-thread pool on Linux): every iteration runs exactly once per
/// region, back-to-back regions do not mix, and concurrent callers (which fall back to
/// `concurrentPerform`) get their own iterations.
@Suite struct ParallelTests {
    /// The affinity mask's cores from `/proc/PID/status` texts: one word, several words, none allowed,
    /// and malformed or missing lines.
    @Test func allowedCoresCountsTheMask() {
        #expect(Parallel.allowedCores(status: "Name:\tpmq\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\n") == 2)
        #expect(Parallel.allowedCores(status: "Cpus_allowed:\tff,00000001\n") == 9)
        #expect(Parallel.allowedCores(status: "Cpus_allowed:\t00000000\n") == 0)
        #expect(Parallel.allowedCores(status: "Cpus_allowed:\t3g\n") == nil)
        #expect(Parallel.allowedCores(status: "Cpus_allowed:\n") == nil)
        #expect(Parallel.allowedCores(status: "Name:\tpmq\n") == nil)
    }

    /// The cores the kernels use: at least one, at most the online cores.
    @Test func coresWithinOnlineCores() {
        #expect(Parallel.cores >= 1)
        #expect(Parallel.cores <= max(1, ProcessInfo.processInfo.activeProcessorCount))
    }

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

    final class Flag: Sendable {
        let value = Atomic<Bool>(false)
    }

    @Test func everyIterationOnceAcrossManyRegions() {
        for region in 0..<2000 {
            let iterations = 1 + region % 37
            let counts = Counts(iterations)
            Parallel.perform(iterations: iterations) { i in counts.values[i] += region + 1 }
            #expect((0..<iterations).allSatisfy { counts.values[$0] == region + 1 }, "region \(region)")
        }
    }

    /// Under oversubscription (busy threads beside the callers, so helpers get preempted between
    /// reading a region's claim word and claiming from it), every region still runs each
    /// iteration once: a helper holding a stale claim of a finished region must not claim in the
    /// next one (an earlier pool did, about one run in two under load).
    @Test func concurrentCallers() {
        let failures = Counts(8)
        let stop = Flag()
        for _ in 0..<3 {
            Thread.detachNewThread { while !stop.value.load(ordering: .relaxed) {} }
        }
        defer { stop.value.store(true, ordering: .relaxed) }
        DispatchQueue.concurrentPerform(iterations: 8) { caller in
            for region in 0..<4000 {
                let iterations = 3 + (region + caller) % 20
                let counts = Counts(iterations)
                Parallel.perform(iterations: iterations) { i in counts.values[i] += 1 }
                if !(0..<iterations).allSatisfy({ counts.values[$0] == 1 }) { failures.values[caller] += 1 }
            }
        }
        #expect((0..<8).allSatisfy { failures.values[$0] == 0 })
    }
}
