import Foundation
import Kernels
import ModelFormat

/// Perplexity over non-overlapping windows (transformers' label shift: position t predicts
/// token t+1 inside each window), with throughput and routing counts; written by `pmq eval --json`
/// (docs/FORMATS.md §8).
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
    /// `[layer][expert]`: tokens routed to each expert (the router's top-k, before pruning).
    public var expertTokens: [[Int]]
    /// Per MoE layer: experts run per token after pruning (top-k when nothing is pruned).
    public var layerExpertsPerToken: [Double]
    /// Mean over MoE layers of `layerExpertsPerToken`.
    public var expertsPerToken: Double
    /// Which pruning ran: a `PruningPolicy` name ("none", "odp", "otp", "oracle-mse", "odp-matched").
    public var pruning: String
    /// Decode speed: tokens fed one at a time with the KV cache (`decodeTokens` of them, after a
    /// one-token prefill), 0 when not measured.
    public var decodeTokens: Int
    public var decodeTokensPerSecond: Double
    /// The expert weights as held in memory: bytes (packed: codes, zeros, scales, g_idx),
    /// parameters, nominal bits per parameter (the widths) and effective bits (bytes · 8 / parameters).
    public var expertBytes: Int
    public var expertParameters: Int
    public var averageBits: Double
    public var effectiveBits: Double
    /// How the packed linears were multiplied: "float" (exact kernels) or "int8" (int8 activations).
    public var activations: String
    /// Whether each window was scored one token at a time through the KV cache.
    public var oneTokenAtATime: Bool
    /// `--attention-bits`: the width attention and an untied head were rounded to (absent: as stored).
    public var attentionBits: Int?

    final class Counter: RouterObserver {
        var counts: [[Int]]
        init(layers: Int, experts: Int) {
            counts = Array(repeating: Array(repeating: 0, count: experts), count: layers)
        }
        func routed(layer: Int, token: Int, probabilities: [Float], experts: [Int], weights: [Float]) {
            for expert in experts { counts[layer][expert] += 1 }
        }
    }

    public static func run(
        model: MoEModel, tokens: [Int], sequenceLength: Int, pruner: ExpertPruner? = nil,
        pruning: String = "none", decodeTokens: Int = 0, oneTokenAtATime: Bool = false,
        progress: (Int, Int) -> Void = { _, _ in }
    ) throws -> Evaluation {
        precondition(sequenceLength >= 2)
        let counter = Counter(layers: model.config.layerCount, experts: model.config.expertCount)
        let session = ForwardPass(model: model, observer: counter)
        session.pruner = pruner
        let vocab = model.config.vocabSize
        let start = ContinuousClock.now
        var nll = 0.0, predicted = 0, windows = 0
        var offset = 0
        while offset + 1 < tokens.count {
            let window = Array(tokens[offset..<min(offset + sequenceLength, tokens.count)])
            offset += window.count
            session.reset()
            let logits: [Float]
            if oneTokenAtATime {
                // Row t from token t alone, through the KV cache: the path generation decodes on.
                var rows = [Float]()
                rows.reserveCapacity(window.count * vocab)
                for token in window { rows += try session.logits([token]) }
                logits = rows
            } else {
                logits = try session.logits(window)
            }
            nll += negativeLogLikelihood(logits: logits, tokens: window, vocab: vocab)
            predicted += window.count - 1
            windows += 1
            progress(offset, tokens.count)
        }
        let seconds = ModelFormat.seconds(since: start)
        let moeLayers = (0..<model.config.layerCount).filter { model.config.moeLayers[$0] }
        let perLayer = moeLayers.map {
            session.tokensRouted[$0] > 0 ? Double(session.expertsRun[$0]) / Double(session.tokensRouted[$0]) : 0
        }
        let storage = model.expertStorage
        let decodeSpeed =
            try decodeTokens > 0 ? measureDecode(session: session, tokens: tokens, count: decodeTokens) : 0
        return Evaluation(
            tokens: tokens.count, predicted: predicted, windows: windows, sequenceLength: sequenceLength,
            negativeLogLikelihood: nll / Double(max(predicted, 1)),
            perplexity: Foundation.exp(nll / Double(max(predicted, 1))),
            seconds: seconds, tokensPerSecond: Double(tokens.count) / seconds,
            peakResidentBytes: peakResidentBytes(), expertTokens: counter.counts,
            layerExpertsPerToken: perLayer,
            expertsPerToken: perLayer.isEmpty ? 0 : perLayer.reduce(0, +) / Double(perLayer.count),
            pruning: pruning, decodeTokens: decodeTokens, decodeTokensPerSecond: decodeSpeed,
            expertBytes: storage.bytes, expertParameters: storage.parameters, averageBits: storage.nominalBits,
            effectiveBits: storage.parameters > 0 ? Double(storage.bytes * 8) / Double(storage.parameters) : 0,
            activations: Kernels.int8Activations ? "int8" : "float", oneTokenAtATime: oneTokenAtATime,
            attentionBits: nil)
    }

    /// Tokens/s of one-at-a-time decoding with the KV cache, median of three runs (the host is noisy).
    static func measureDecode(session: ForwardPass, tokens: [Int], count: Int) throws -> Double {
        let length = min(count, session.model.config.maxPositions - 1, tokens.count - 1)
        guard length > 0 else { return 0 }
        var rates: [Double] = []
        for _ in 0..<3 {
            session.reset()
            _ = try session.logits([tokens[0]])
            let start = ContinuousClock.now
            for t in 1...length { _ = try session.logits([tokens[t]]) }
            rates.append(Double(length) / ModelFormat.seconds(since: start))
        }
        return rates.sorted()[1]
    }

    /// `−Σ_t log p(tokens[t+1] | logits row t)` over a window (label shift inside the window).
    public static func negativeLogLikelihood(logits: [Float], tokens: [Int], vocab: Int) -> Double {
        var nll = 0.0
        logits.withUnsafeBufferPointer { logits in
            for t in 0..<(tokens.count - 1) {
                let row = logits.baseAddress! + t * vocab
                nll += logPartition(row, count: vocab) - Double(row[tokens[t + 1]])
            }
        }
        return nll
    }

    /// `log Σ exp(logit)` of one row of logits, the softmax's normaliser. The sums use the
    /// eight-lane `Kernels.exp` (relative error 1.2e-7 a term), in Float over blocks of 64 and in
    /// Double across blocks. Every held-out NLL and KL pmq reports goes through it.
    public static func logPartition(_ row: UnsafePointer<Float>, count: Int) -> Double {
        var peak = -Float.infinity
        for v in 0..<count { peak = max(peak, row[v]) }
        var sum = 0.0
        var v = 0
        while v + 64 <= count {
            var block = SIMD8<Float>(repeating: 0)
            for lane in stride(from: v, to: v + 64, by: 8) { block += Kernels.exp(Kernels.load8(row + lane) - peak) }
            sum += Double(block.sum())
            v += 64
        }
        while v < count {
            sum += Double(Kernels.exp(row[v] - peak))
            v += 1
        }
        return Foundation.log(sum) + Double(peak)
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
