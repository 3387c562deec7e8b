import Foundation
import ModelFormat
import Kernels
import MoERuntime

/// Scores a model on held-out tokens against the float model: mean next-token NLL (perplexity)
/// and mean KL(float ‖ model) of the next-token distributions. The float model's log-probabilities
/// are kept per predicted token as 16-bit codes over the 24 nats below each token's most likely
/// one (as llama.cpp's `--kl-divergence-base` keeps them): steps of 3.7e-4 nats, and tokens less
/// likely than e^-24 of the top one count as e^-24. Each token's stored distribution is
/// renormalised before use, so the KL is that of two true distributions (docs/FORMATS.md §3).
public final class HeldOutScorer {
    public static let logProbabilityRange: Float = 24

    public let tokens: [Int]
    public let sequenceLength: Int
    public let vocab: Int
    /// `[predicted token][vocab]` codes: the logit minus the top logit, plus the range, in steps of range / 65535.
    private var codes: [UInt16] = []
    /// Per predicted token: log p = code · step + offset (the stored distribution normalised).
    private var offsets: [Float] = []
    public private(set) var floatNegativeLogLikelihood = 0.0
    public private(set) var floatSeconds = 0.0

    /// The windows (non-overlapping, label shift inside each) and their predicted positions.
    public var predicted: Int { windows.reduce(0) { $0 + $1.count - 1 } }
    var windows: [Range<Int>] {
        stride(from: 0, to: tokens.count - 1, by: sequenceLength).map { $0..<min($0 + sequenceLength, tokens.count) }
            .filter { $0.count >= 2 }
    }

    /// Bytes the float reference holds: 2 per vocabulary entry per predicted token.
    public static func referenceBytes(tokens: Int, vocab: Int) -> Int {
        let (bytes, overflow) = tokens.multipliedReportingOverflow(by: 2 * vocab)
        return overflow ? .max : bytes
    }

    public init(tokens: [Int], sequenceLength: Int, vocab: Int) {
        precondition(sequenceLength >= 2)
        self.tokens = tokens
        self.sequenceLength = sequenceLength
        self.vocab = vocab
    }

    /// Runs the float model once and keeps its distributions.
    public func recordFloat(model: MoEModel, progress: (Int, Int) -> Void = { _, _ in }) throws {
        let start = ContinuousClock.now
        let total = predicted
        codes = [UInt16](repeating: 0, count: total * vocab)
        offsets = [Float](repeating: 0, count: total)
        let vocab = vocab, tokens = tokens
        let scale = 65535 / Self.logProbabilityRange, step = Self.logProbabilityRange / 65535
        let nll = try codes.withUnsafeMutableBufferPointer { codes in
            try offsets.withUnsafeMutableBufferPointer { offsets in
                let output = (codes: UnsafeSendable(codes.baseAddress!), offsets: UnsafeSendable(offsets.baseAddress!))
                return try forEachWindow(model: model, progress: progress) { window, row, logits in
                    let nll = Evaluation.negativeLogLikelihood(
                        logits: logits, tokens: Array(tokens[window]), vocab: vocab)
                    logits.withUnsafeBufferPointer { logits in
                        for t in 0..<(window.count - 1) {
                            let values = UnsafeBufferPointer(rebasing: logits[(t * vocab)..<((t + 1) * vocab)])
                            let peak = values.max()!
                            let floor = peak - Self.logProbabilityRange
                            let stored = output.codes.pointer + (row + t) * vocab
                            for v in 0..<vocab {
                                let level = ((max(values[v], floor) - floor) * scale).rounded()
                                stored[v] = UInt16(min(level, 65535))
                            }
                            let sum = Double(
                                Self.sumExp(codes: stored, count: vocab, step: step, offset: -Self.logProbabilityRange))
                            // log p = code · step + offset, normalised over the stored codes.
                            output.offsets.pointer[row + t] = -Self.logProbabilityRange - Float(Foundation.log(sum))
                        }
                    }
                    return (nll, 0)
                }.nll
            }
        }
        floatNegativeLogLikelihood = nll / Double(max(total, 1))
        floatSeconds = seconds(since: start)
    }

    public struct Score: Codable, Sendable, Equatable {
        public var negativeLogLikelihood: Double
        public var perplexity: Double
        /// Mean over predicted tokens of KL(float ‖ model), nats.
        public var meanKL: Double
        public var predicted: Int
        public var seconds: Double
    }

    /// Scores `model` (the float reference must be recorded first). The NLL is computed as
    /// `pmq eval` computes it, so the perplexity equals what `pmq eval` reports for the same model.
    public func score(model: MoEModel, progress: (Int, Int) -> Void = { _, _ in }) throws -> Score {
        precondition(offsets.count == predicted, "recordFloat first")
        let start = ContinuousClock.now
        let step = Self.logProbabilityRange / 65535
        let vocab = vocab, tokens = tokens
        let (nll, kl) = try codes.withUnsafeBufferPointer { codes in
            try offsets.withUnsafeBufferPointer { offsets in
                let stored = (
                    codes: UnsafeSendable(UnsafeMutablePointer(mutating: codes.baseAddress!)),
                    offsets: UnsafeSendable(UnsafeMutablePointer(mutating: offsets.baseAddress!))
                )
                return try forEachWindow(model: model, progress: progress) { window, row, logits in
                    // One normaliser per position serves both sums; the NLL is summed as `pmq eval` sums it.
                    var nll = 0.0, kl = 0.0
                    logits.withUnsafeBufferPointer { logits in
                        for t in 0..<(window.count - 1) {
                            let values = logits.baseAddress! + t * vocab
                            let logZ = Evaluation.logPartition(values, count: vocab)
                            nll += logZ - Double(values[tokens[window.lowerBound + t + 1]])
                            kl += Self.divergence(
                                logits: values, logZ: Float(logZ), codes: stored.codes.pointer + (row + t) * vocab,
                                count: vocab, step: step, offset: stored.offsets.pointer[row + t])
                        }
                    }
                    return (nll, kl)
                }
            }
        }
        let count = Double(max(predicted, 1))
        return Score(
            negativeLogLikelihood: nll / count, perplexity: Foundation.exp(nll / count), meanKL: kl / count,
            predicted: predicted, seconds: seconds(since: start))
    }

    /// `Σ exp(code · step + offset)` over `count` codes.
    static func sumExp(codes: UnsafePointer<UInt16>, count: Int, step: Float, offset: Float) -> Float {
        var total = SIMD8<Float>(repeating: 0)
        var v = 0
        while v + 8 <= count {
            let levels = UnsafeRawPointer(codes + v).loadUnaligned(as: SIMD8<UInt16>.self)
            total += Kernels.exp(SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: levels)) * step + offset)
            v += 8
        }
        var sum = total.sum()
        while v < count {
            sum += Kernels.exp(Float(codes[v]) * step + offset)
            v += 1
        }
        return sum
    }

    /// KL(p ‖ q) of one position: p from its stored codes (`log p = code · step + offset`), q the
    /// softmax of `logits` (normaliser `logZ`): `Σ p (log p − logit + log Z)`, ≥ 0 (clamped against rounding).
    static func divergence(
        logits: UnsafePointer<Float>, logZ: Float, codes: UnsafePointer<UInt16>, count: Int, step: Float,
        offset: Float
    ) -> Double {
        var terms = SIMD8<Float>(repeating: 0)
        var v = 0
        while v + 8 <= count {
            let levels = UnsafeRawPointer(codes + v).loadUnaligned(as: SIMD8<UInt16>.self)
            let logP = SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: levels)) * step + offset
            terms += Kernels.exp(logP) * (logP - Kernels.load8(logits + v) + logZ)
            v += 8
        }
        var divergence = Double(terms.sum())
        for tail in v..<count {
            let logP = Float(codes[tail]) * step + offset
            divergence += Double(Kernels.exp(logP) * (logP - logits[tail] + logZ))
        }
        return max(0, divergence)
    }

    /// Runs every window through `model`, windows split across the cores (each worker its own
    /// session, kernels on its thread), and sums `body(window, first row, logits)`'s (nll, kl) in
    /// window order: the sums do not depend on the thread count.
    func forEachWindow(
        model: MoEModel, progress: (Int, Int) -> Void,
        _ body: @escaping @Sendable (Range<Int>, Int, [Float]) -> (Double, Double)
    ) throws -> (nll: Double, kl: Double) {
        let windows = windows
        var rows = [Int](repeating: 0, count: windows.count)
        for index in windows.indices.dropFirst() { rows[index] = rows[index - 1] + windows[index - 1].count - 1 }
        let firstRows = rows
        let results = UnsafeMutablePointer<(Double, Double)>.allocate(capacity: windows.count)
        defer { results.deallocate() }
        results.initialize(repeating: (0, 0), count: windows.count)
        let queue = WindowQueue(windows.count, results: UnsafeSendable(results))
        let workers = max(1, min(Parallel.cores, windows.count))
        let tokens = tokens
        try withoutActuallyEscaping(progress) { progress in
            let report = ProgressBox(progress, total: predicted)
            DispatchQueue.concurrentPerform(iterations: workers) { _ in
                Parallel.$serial.withValue(true) {
                    let session = ForwardPass(model: model)
                    while let index = queue.next() {
                        session.reset()
                        do {
                            let logits = try session.logits(Array(tokens[windows[index]]))
                            queue.results.pointer[index] = body(windows[index], firstRows[index], logits)
                        } catch {
                            queue.fail(error)
                        }
                        report.add(windows[index].count - 1)
                    }
                }
            }
            if let error = queue.error { throw error }
        }
        var nll = 0.0, kl = 0.0
        for index in windows.indices {
            nll += results[index].0
            kl += results[index].1
        }
        return (nll, kl)
    }
}

/// The windows still to run, handed out one at a time, and the first error.
final class WindowQueue: @unchecked Sendable {
    private let lock = NSLock()
    private var nextIndex = 0
    private let count: Int
    let results: UnsafeSendable<(Double, Double)>
    private(set) var error: Error?
    init(_ count: Int, results: UnsafeSendable<(Double, Double)>) {
        self.count = count
        self.results = results
    }
    func next() -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard error == nil, nextIndex < count else { return nil }
        nextIndex += 1
        return nextIndex - 1
    }
    func fail(_ failure: Error) {
        lock.lock()
        defer { lock.unlock() }
        if error == nil { error = failure }
    }
}

/// Progress from the workers, one caller at a time.
final class ProgressBox: @unchecked Sendable {
    private let lock = NSLock()
    private let progress: (Int, Int) -> Void
    private let total: Int
    private var done = 0
    init(_ progress: @escaping (Int, Int) -> Void, total: Int) {
        self.progress = progress
        self.total = total
    }
    func add(_ count: Int) {
        lock.lock()
        defer { lock.unlock() }
        done += count
        progress(done, total)
    }
}
