import Foundation
#if os(Linux)
import Synchronization
#endif

/// Parallel loops for the kernels. A decode step runs ~80 short parallel regions (matvecs of
/// 30–300 µs); with `DispatchQueue.concurrentPerform` a parked worker thread takes ~20–30 µs to
/// join each one (measured here: 8 × 17 µs of work took 92 µs on 2 cores against 136 µs on one).
/// On Linux, `perform` hands the iterations to persistent helper threads that spin for a while
/// after each region (so the next one finds them awake) and then park; the caller works too.
/// Concurrent or nested callers, and other platforms, fall back to `concurrentPerform`.
/// This is the one parallel-for of pmq's kernels (float, bf16 and packed linears, attention,
/// SGEMM, Cholesky, GPTQ).
public enum Parallel {
    /// Run every region on the calling thread (tests check that results do not depend on it).
    /// Read by the caller when a region starts.
    @TaskLocal public static var serial = false

    /// The cores this process may run on, read once (`activeProcessorCount` costs ~20 µs a call on
    /// Linux, more than a small matvec): on Linux the affinity mask (`Cpus_allowed` in
    /// `/proc/self/status`: `taskset`, cpusets of Slurm jobs and containers), at most
    /// `activeProcessorCount`, which counts every online core (under `taskset -c 0` on a 2-core machine
    /// it said 2, and the kernels' helper thread spun on the caller's only core).
    public static let cores: Int = {
        let online = max(1, ProcessInfo.processInfo.activeProcessorCount)
        #if os(Linux)
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let allowed = allowedCores(status: status)
        {
            return max(1, min(online, allowed))
        }
        #endif
        return online
    }()

    /// The number of cores in the `Cpus_allowed:` line of a `/proc/PID/status` text (a hexadecimal mask
    /// in comma-separated 32-bit words); nil without a well-formed line.
    static func allowedCores(status: String) -> Int? {
        for line in status.split(separator: "\n") where line.hasPrefix("Cpus_allowed:") {
            let mask = line.dropFirst("Cpus_allowed:".count).filter { $0 != "," && $0 != " " && $0 != "\t" }
            guard !mask.isEmpty else { return nil }
            var count = 0
            for digit in mask {
                guard let value = digit.hexDigitValue else { return nil }
                count += value.nonzeroBitCount
            }
            return count
        }
        return nil
    }

    /// `body(i)` for `i` in `0..<iterations`, on all cores unless `serial` (or a single iteration);
    /// returns when every iteration has run.
    /// `perform`, or a plain loop on this thread when `work` (multiply-adds, roughly) is below
    /// `minimumWork`: too little to pay for waking the workers.
    public static func perform(iterations: Int, work: Int, _ body: @Sendable (Int) -> Void) {
        if work >= minimumWork {
            perform(iterations: iterations, body)
        } else {
            for i in 0..<iterations { body(i) }
        }
    }

    /// The work below which the kernels stay on one thread.
    public static let minimumWork = 1 << 18

    public static func perform(iterations: Int, _ body: @Sendable (Int) -> Void) {
        if serial || iterations <= 1 {
            for i in 0..<iterations { body(i) }
            return
        }
        // The pool and concurrentPerform both return only after the last iteration.
        withoutActuallyEscaping(body) { body in
            #if os(Linux)
            if let pool = WorkerPool.shared, pool.tryRun(iterations: iterations, body) { return }
            #endif
            DispatchQueue.concurrentPerform(iterations: iterations, execute: body)
        }
    }
}

/// A raw pointer handed to concurrent tasks that touch disjoint parts of it.
public struct UnsafeSendable<T>: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<T>
    public init(_ pointer: UnsafeMutablePointer<T>) { self.pointer = pointer }
}

#if os(Linux)
final class WorkerPool: @unchecked Sendable {
    /// One helper per further core; nil on one core.
    static let shared: WorkerPool? = Parallel.cores > 1 ? WorkerPool(helpers: Parallel.cores - 1) : nil
    /// How long a helper spins for the next region before it parks (a decode step's regions
    /// come every 50–500 µs).
    static let spin: Duration = .microseconds(300)

    /// `generation << 32 | next iteration`: a helper claims an iteration of the region it saw
    /// by compare-and-swap, so it can never claim one of a later region.
    private let claim = Atomic<Int>(0)
    /// `generation << 32 | iterations` of the current region. A helper checks its claim against
    /// this, not against `iterations`: a helper that loaded the claim word of a region that has
    /// since ended must not read the next region's count and claim one of its iterations under
    /// the old generation (that iteration would then run twice, and `finished` count wrong).
    private let size = Atomic<Int>(0)
    private let finished = Atomic<Int>(0)
    private let busy = Atomic<Bool>(false)
    private let sleepers = Atomic<Int>(0)
    private let condition = NSCondition()
    /// The current region (written by the caller before it publishes the generation).
    private var body: (@Sendable (Int) -> Void)?
    private var generation = 0

    private init(helpers: Int) {
        for _ in 0..<helpers {
            let thread = Thread { [unowned self] in self.helperLoop() }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// Runs the region here if no other caller holds the pool; false if one does.
    func tryRun(iterations count: Int, _ body: @escaping @Sendable (Int) -> Void) -> Bool {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        defer { busy.store(false, ordering: .releasing) }
        self.body = body
        generation = (generation + 1) & 0x7FFF_FFFF
        finished.store(0, ordering: .relaxed)
        size.store(generation << 32 | count, ordering: .releasing)
        claim.store(generation << 32, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            condition.lock()
            condition.broadcast()
            condition.unlock()
        }
        work(generation: generation)
        while finished.load(ordering: .acquiring) < count { spinPause() }
        self.body = nil
        return true
    }

    /// Claims and runs iterations of region `generation` until none is left.
    private func work(generation: Int) {
        while true {
            let value = claim.load(ordering: .acquiring)
            guard value >> 32 == generation else { return }
            let index = value & 0xFFFF_FFFF
            // A successful exchange below proves `value` was still current, so the region is
            // `generation`'s and not finished (its iteration `index` is unclaimed): `size` and
            // `body` are that region's.
            let region = size.load(ordering: .acquiring)
            guard region >> 32 == generation, index < region & 0xFFFF_FFFF else { return }
            guard claim.compareExchange(expected: value, desired: value + 1, ordering: .acquiringAndReleasing).exchanged
            else { continue }
            body!(index)
            finished.add(1, ordering: .releasing)
        }
    }

    private func helperLoop() {
        var seen = 0
        while true {
            var current = claim.load(ordering: .acquiring) >> 32
            if current == seen {
                let deadline = ContinuousClock.now + Self.spin
                var spins = 0
                while current == seen {
                    spins += 1
                    if spins & 255 == 0 && ContinuousClock.now > deadline {
                        condition.lock()
                        sleepers.add(1, ordering: .sequentiallyConsistent)
                        while claim.load(ordering: .sequentiallyConsistent) >> 32 == seen { condition.wait() }
                        sleepers.subtract(1, ordering: .sequentiallyConsistent)
                        condition.unlock()
                    }
                    spinPause()
                    current = claim.load(ordering: .acquiring) >> 32
                }
            }
            seen = current
            work(generation: current)
        }
    }

    /// A short busy wait between polls (`_mm_pause` does not link from Swift here).
    @inline(never)
    private func spinPause() {}
}
#endif
