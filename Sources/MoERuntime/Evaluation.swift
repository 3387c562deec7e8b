import Foundation
import ModelFormat

/// Perplexity over non-overlapping windows (transformers' label shift: position t predicts
/// token t+1 inside each window), with throughput and routing counts.
public struct Evaluation: Sendable, Encodable {
    public var tokens: Int
    public var predicted: Int
    public var windows: Int
    public var sequenceLength: Int
    public var negativeLogLikelihood: Double
    public var perplexity: Double
    public var seconds: Double
    public var tokensPerSecond: Double
    public var peakResidentBytes: Int
    /// `[layer][expert]`: tokens routed to each expert.
    public var expertTokens: [[Int]]

    final class Counter: RouterObserver {
        var counts: [[Int]]
        init(layers: Int, experts: Int) { counts = Array(repeating: Array(repeating: 0, count: experts), count: layers) }
        func routed(layer: Int, token: Int, probabilities: [Float], experts: [Int], weights: [Float]) {
            for expert in experts { counts[layer][expert] += 1 }
        }
    }

    public static func run(model: FloatModel, tokens: [Int], sequenceLength: Int,
                           progress: (Int, Int) -> Void = { _, _ in }) throws -> Evaluation {
        precondition(sequenceLength >= 2)
        let counter = Counter(layers: model.config.layerCount, experts: model.config.expertCount)
        let session = FloatForward(model: model, observer: counter)
        let vocab = model.config.vocabSize
        let start = ContinuousClock.now
        var nll = 0.0, predicted = 0, windows = 0
        var offset = 0
        while offset + 1 < tokens.count {
            let window = Array(tokens[offset..<min(offset + sequenceLength, tokens.count)])
            offset += window.count
            session.reset()
            let logits = try session.logits(window)
            for t in 0..<(window.count - 1) {
                let row = logits[(t * vocab)..<((t + 1) * vocab)]
                let peak = row.max()!
                var sum = 0.0
                for value in row { sum += Foundation.exp(Double(value - peak)) }
                nll += Foundation.log(sum) + Double(peak) - Double(row[row.startIndex + window[t + 1]])
            }
            predicted += window.count - 1
            windows += 1
            progress(offset, tokens.count)
        }
        let seconds = ModelFormat.seconds(since: start)
        return Evaluation(tokens: tokens.count, predicted: predicted, windows: windows, sequenceLength: sequenceLength,
                          negativeLogLikelihood: nll / Double(max(predicted, 1)), perplexity: Foundation.exp(nll / Double(max(predicted, 1))),
                          seconds: seconds, tokensPerSecond: Double(tokens.count) / seconds,
                          peakResidentBytes: peakResidentBytes(), expertTokens: counter.counts)
    }

    /// Peak resident set size of this process (Linux `ru_maxrss` is in KiB).
    public static func peakResidentBytes() -> Int {
        var usage = rusage()
        #if os(Linux)
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Int(usage.ru_maxrss) * 1024
        #else
        getrusage(RUSAGE_SELF, &usage)
        return Int(usage.ru_maxrss)
        #endif
    }
}
