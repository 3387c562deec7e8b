import Foundation
import ModelFormat
import Synchronization

/// Runs seeded mutations of every format through pmq's readers in this process. A reader must
/// accept or throw: a trap ends the process (the signal handler first prints the case that
/// trapped, to be saved with `--case` and committed as a regression case), and a case slower
/// than `hangSeconds` is reported as a hang. A case still running after `timeoutSeconds` ends the
/// process the same way (a watchdog thread prints the case), so an endless loop is found too.
public struct Fuzzer {
    public struct Options: Sendable {
        public var cases = 2000
        public var seed: UInt64 = 1
        public var formats: [FuzzTarget] = FuzzTarget.all
        public var hangSeconds = 2.0
        public var timeoutSeconds = 30.0
        public init() {}
    }

    public struct FormatReport: Sendable {
        public var format: String
        public var cases: Int
        public var accepted: Int
        public var refused: Int
        public var hangs: Int
        public var slowestSeconds: Double
        public var seconds: Double
    }

    public let options: Options

    public init(options: Options) { self.options = options }

    /// The bytes of one case (`--case N`), for saving a finding.
    public static func input(target: FuzzTarget, seed: UInt64, index: Int) -> [UInt8] {
        var mutator = Mutator(seed: Mutator.caseSeed(seed: seed, format: target.name, index: index))
        return mutator.mutate(target.seed)
    }

    /// `progress(format, done, total)`.
    public func run(progress: (String, Int, Int) -> Void = { _, _, _ in }) throws -> [FormatReport] {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("pmq-fuzz-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        CrashNote.install()
        Watchdog.start(timeoutSeconds: options.timeoutSeconds)
        defer { Watchdog.caseStart.store(0, ordering: .releasing) }
        var reports: [FormatReport] = []
        for target in options.formats {
            let scratch = root + "/" + target.name
            try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
            // The unmutated seed must be accepted, or the fuzzer tests nothing.
            do { try target.read(target.seed, scratch) } catch {
                throw ModelFormatError(file: target.name, "the fuzzer's own seed is refused: \(error)")
            }
            let start = ContinuousClock.now
            var report = FormatReport(
                format: target.name, cases: 0, accepted: 0, refused: 0, hangs: 0, slowestSeconds: 0, seconds: 0)
            for index in 0..<options.cases {
                CrashNote.set("--format \(target.name) --case \(index) --seed \(options.seed)\n")
                let bytes = Self.input(target: target, seed: options.seed, index: index)
                let caseStart = ContinuousClock.now
                Watchdog.caseStart.store(Watchdog.now(), ordering: .releasing)
                do {
                    try target.read(bytes, scratch)
                    report.accepted += 1
                } catch {
                    report.refused += 1
                }
                Watchdog.caseStart.store(0, ordering: .releasing)
                let elapsed = seconds(since: caseStart)
                report.slowestSeconds = max(report.slowestSeconds, elapsed)
                if elapsed > options.hangSeconds { report.hangs += 1 }
                report.cases += 1
                if index % 500 == 499 || index == options.cases - 1 { progress(target.name, index + 1, options.cases) }
            }
            report.seconds = seconds(since: start)
            reports.append(report)
        }
        CrashNote.set("")
        return reports
    }
}

/// What a trap prints before the process ends: the case being read (set before each case; the
/// handler only calls `write(2)` and `_exit`).
enum CrashNote {
    nonisolated(unsafe) static let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: 512)
    nonisolated(unsafe) static var length = 0
    nonisolated(unsafe) static let trapped = strdup("pmq fuzz: trapped on ")!
    nonisolated(unsafe) static let hung = strdup("pmq fuzz: still running after the timeout (a hang) on ")!

    static func set(_ text: String) {
        let bytes = Array(text.utf8.prefix(511))
        length = 0
        for (index, byte) in bytes.enumerated() { buffer[index] = CChar(bitPattern: byte) }
        length = bytes.count
    }

    static func install() {
        for signal in [SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGFPE, SIGABRT] {
            _ = Foundation.signal(signal) { code in
                _ = write(2, CrashNote.trapped, strlen(CrashNote.trapped))
                _ = write(2, CrashNote.buffer, CrashNote.length)
                _exit(128 + code)
            }
        }
    }
}

/// Ends the process when one case runs longer than the timeout, printing the case as a trap does.
enum Watchdog {
    /// Monotonic nanoseconds at the start of the running case; 0 between cases.
    static let caseStart = Atomic<UInt64>(0)
    static let started = Atomic<Bool>(false)
    static let limit = Atomic<UInt64>(30_000_000_000)

    static func now() -> UInt64 { max(1, DispatchTime.now().uptimeNanoseconds) }

    static func start(timeoutSeconds: Double) {
        limit.store(UInt64(min(max(timeoutSeconds, 0.001), 1e6) * 1e9), ordering: .releasing)
        guard !started.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let thread = Thread {
            while true {
                usleep(20_000)
                let start = caseStart.load(ordering: .acquiring)
                let time = now()
                guard start != 0, time > start, time - start > limit.load(ordering: .acquiring) else { continue }
                _ = write(2, CrashNote.hung, strlen(CrashNote.hung))
                _ = write(2, CrashNote.buffer, CrashNote.length)
                _exit(124)
            }
        }
        thread.start()
    }
}
