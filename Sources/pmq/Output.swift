import Foundation
import ModelFormat
import MoERuntime

/// Diagnostics and progress go to stderr so stdout stays clean for results.
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// A line on stdout, unbuffered (benchmarks report as they go, also into a pipe).
func emit(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// Progress on stderr that stays silent for short jobs (the first second).
final class Progress {
    private let start = ContinuousClock.now
    private let label: String
    private let quiet: Bool
    private var shown = false
    private var lastPrinted = -Double.infinity
    private let interactive = isatty(STDERR_FILENO) != 0

    init(_ label: String, quiet: Bool = false) {
        self.label = label
        self.quiet = quiet
    }

    var elapsed: Double { seconds(since: start) }

    func update(done: Int, total: Int, detail: String) {
        guard !quiet, elapsed > 1 else { return }
        // Into a pipe or a log: a line every few seconds, and the last one.
        if !interactive && done < total && elapsed - lastPrinted < 5 { return }
        lastPrinted = elapsed
        let eta = done > 0 ? elapsed / Double(done) * Double(total - done) : 0
        let line =
            "\(label) \(done)/\(total)  \(detail)  \(String(format: "%.1f", elapsed)) s, ETA "
            + "\(String(format: "%.0f", eta)) s"
        FileHandle.standardError.write(Data((interactive ? "\r\u{1B}[K" + line : line + "\n").utf8))
        shown = true
    }

    func finish() {
        if shown && interactive { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

/// Progress over named stages ("layer 3: experts quantized"): a fresh bar per stage.
final class StagedProgress {
    private let command: String
    private let quiet: Bool
    private var current: (stage: String, bar: Progress)?

    init(_ command: String, quiet: Bool) {
        self.command = command
        self.quiet = quiet
    }

    func update(stage: String, done: Int, total: Int) {
        if current?.stage != stage {
            current?.bar.finish()
            current = (stage, Progress("\(command): \(stage)", quiet: quiet))
        }
        current?.bar.update(done: done, total: total, detail: "")
    }

    func finish() { current?.bar.finish() }
}

/// One line on stderr about `--attention-bits`.
func reportAttention(_ change: MoEModel.AttentionQuantization, _ bits: Int) {
    printError(
        String(
            format: "attention and head at %d bits: %d matrices, %.1f MB → %.1f MB", bits, change.matrices,
            Double(change.bytesBefore) / 1e6, Double(change.bytesAfter) / 1e6))
}
