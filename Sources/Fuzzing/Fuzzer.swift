import Foundation
import ModelFormat

/// Runs seeded mutations of every format through pmq's readers in this process. A reader must
/// accept or throw: a trap ends the process (the signal handler first prints the case that
/// trapped, to be saved with `--case` and committed as a regression case), and a case slower
/// than `hangSeconds` is reported as a hang.
public struct Fuzzer {
    public struct Options: Sendable {
        public var cases = 2000
        public var seed: UInt64 = 1
        public var formats: [FuzzTarget] = FuzzTarget.all
        public var hangSeconds = 2.0
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
                CrashNote.set("pmq fuzz: trapped on --format \(target.name) --case \(index) --seed \(options.seed)\n")
                let bytes = Self.input(target: target, seed: options.seed, index: index)
                let caseStart = ContinuousClock.now
                do {
                    try target.read(bytes, scratch)
                    report.accepted += 1
                } catch {
                    report.refused += 1
                }
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

    static func set(_ text: String) {
        let bytes = Array(text.utf8.prefix(511))
        length = 0
        for (index, byte) in bytes.enumerated() { buffer[index] = CChar(bitPattern: byte) }
        length = bytes.count
    }

    static func install() {
        for signal in [SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGFPE, SIGABRT] {
            _ = Foundation.signal(signal) { code in
                _ = write(2, CrashNote.buffer, CrashNote.length)
                _exit(128 + code)
            }
        }
    }
}
