import Foundation
import Calibration
import Kernels
import ModelFormat
import Quantization
import MoERuntime

/// The calibration run: routing statistics and, per expert and candidate width, the GPTQ output
/// error `tr((W − Q) H (W − Q)ᵀ)` of its gate, up and down projections with Hessians built from
/// the tokens routed to it (the down projection from that expert's own activations).
public struct Profiler {
    public struct Options: Sendable {
        public var widths: [Int]
        public var groupSize: Int
        public var sequenceLength: Int
        public var samples: Int
        public var dampening: Double
        public var actOrder: Bool
        public var clipSearch: Bool
        /// Calibration windows for the layer-sensitivity stage (0: skip it).
        public var sensitivityWindows: Int
        /// The width each layer is quantized at for its sensitivity (default: the smallest
        /// candidate width ≥ 2, else the smallest).
        public var sensitivityWidth: Int?
        /// Routed tokens sampled per expert to measure its real, routing-weighted output error
        /// (`Profile.Expert.outputError`); 0 skips it.
        public var outputSamples: Int
        /// Measure each layer's sensitivity at every candidate width (its loss curve), not only at
        /// the reference width; holds every layer's experts at every width in memory meanwhile.
        public var sensitivityCurve: Bool
        public init(
            widths: [Int] = [1, 2, 3], groupSize: Int = 128, sequenceLength: Int = 512, samples: Int = 128,
            dampening: Double = 0.01,
            actOrder: Bool = false, clipSearch: Bool = false, sensitivityWindows: Int = 32,
            sensitivityWidth: Int? = nil,
            outputSamples: Int = 512, sensitivityCurve: Bool = true
        ) {
            self.sensitivityCurve = sensitivityCurve
            self.outputSamples = outputSamples
            self.sensitivityWindows = sensitivityWindows
            self.sensitivityWidth = sensitivityWidth
            self.actOrder = actOrder
            self.clipSearch = clipSearch
            self.widths = widths
            self.groupSize = groupSize
            self.sequenceLength = sequenceLength
            self.samples = samples
            self.dampening = dampening
        }
    }

    public let model: MoEModel
    public let options: Options

    /// Receives every expert linear's GPTQ-dequantized weights at every candidate width, as the
    /// profiler computes them (`pmq bench objective` assembles allocations from these).
    public typealias QuantizedWeights = (_ role: TensorRole, _ width: Int, _ weights: [Float]) -> Void

    /// The width layers are quantized at to measure their sensitivity.
    public var referenceWidth: Int {
        if let width = options.sensitivityWidth { return width }
        let sorted = quantizedWidths
        return sorted.first { $0 >= 2 } ?? sorted[0]
    }

    /// The candidate widths GPTQ runs at: all but width 0 (removal), ascending.
    var quantizedWidths: [Int] { options.widths.filter { $0 != Profile.removalWidth }.sorted() }

    public init(model: MoEModel, options: Options) {
        self.model = model
        self.options = options
    }

    /// Profiles the MoE layers in `layers` (all by default), layer by layer as GPTQ does: the
    /// calibration windows' hidden states go through one layer at a time, that layer's statistics
    /// are gathered and its experts quantized, and only then the next layer runs. With a
    /// `checkpointDirectory`, each finished layer is saved there and a rerun continues after the
    /// last finished one. `progress(stage, done, total)`.
    public func run(
        tokens: [Int], description: String, layers requested: Range<Int>? = nil,
        checkpointDirectory: String? = nil, cacheDirectory: String? = nil,
        progress: (String, Int, Int) -> Void = { _, _, _ in },
        quantized: QuantizedWeights? = nil
    ) throws -> Profile {
        let runStart = ContinuousClock.now
        let config = model.config
        let windows = try CalibrationWindows.count(
            tokens: tokens, samples: options.samples, sequenceLength: options.sequenceLength)
        let range = requested ?? 0..<config.layerCount
        guard range.lowerBound >= 0, range.upperBound <= config.layerCount, !range.isEmpty else {
            throw ModelFormatError(
                file: model.directory,
                "layers \(range.lowerBound)..<\(range.upperBound) are not within the model's \(config.layerCount)")
        }
        let targets = range.filter { config.moeLayers[$0] }
        // The calibration tokens are hashed once, for the checkpoint and the cache alike.
        let tokenHash = FNV1a.hash(tokens.prefix(windows * options.sequenceLength))
        let checkpoint = try checkpointDirectory.map {
            try LayerCheckpoint(directory: $0, fingerprint: fingerprint(tokenHash: tokenHash, windows: windows))
        }
        let calibrationFingerprint = Self.calibrationFingerprint(
            tokenHash: tokenHash, windows: windows, sequenceLength: options.sequenceLength)
        let modelDigest = try ModelDigest.compute(directory: model.directory)
        let cache = try cacheDirectory.map {
            try QuantizationCache.openOrCreate(
                directory: $0, fingerprint: cacheFingerprint(calibration: calibrationFingerprint, digest: modelDigest),
                modelDirectory: model.directory)
        }
        // A layer is finished when its checkpoint is saved and, with a cache, every width is cached.
        func finishedLayer(_ layer: Int) throws -> Profile.Layer? {
            guard let saved = try checkpoint?.load(layer: layer) else { return nil }
            guard let cache else { return saved }
            return quantizedWidths.allSatisfy { cache.contains(layer: layer, width: $0) } ? saved : nil
        }
        // The layer's linears at `width` (nil: the reference width) from a finished run.
        func savedLinears(layer: Int, width: Int?) throws -> [String: PackedLinear]? {
            if let cache { return try cache.read(layer: layer, width: width ?? referenceWidth) }
            return try checkpoint?.loadReference(layer: layer, width: width)
        }

        let session = ForwardPass(model: model)
        var states = CalibrationWindows.embed(
            model: model, tokens: tokens, windows: windows, sequenceLength: options.sequenceLength)
        var finished: [Profile.Layer] = []
        // Per layer and width, its experts packed for the sensitivity stage: the reference width, and
        // every other width for the loss curve.
        var packedLayers: [Int: [Int: [TensorRole: PackedLinear]]] = [:]
        var forwardStart = ContinuousClock.now
        try CalibrationWindows.layerByLayer(
            model: model, session: session, states: &states, sequenceLength: options.sequenceLength, rerun: false,
            layers: targets.last.map { $0 + 1 } ?? 0,
            observer: { layer -> ExpertStatistics? in
                guard targets.contains(layer) else { return nil }
                if let saved = try finishedLayer(layer) {
                    finished.append(saved)
                    if let stored = try savedLinears(layer: layer, width: nil) {
                        var packed = [referenceWidth: referenceRoles(layer: layer, stored)]
                        for width in quantizedWidths where width != referenceWidth && options.sensitivityCurve {
                            guard let other = try savedLinears(layer: layer, width: width) else { break }
                            packed[width] = referenceRoles(layer: layer, other)
                        }
                        packedLayers[layer] = packed
                    }
                    return nil
                }
                forwardStart = ContinuousClock.now
                return ExpertStatistics(layer: layer, config: config, sampleLimit: options.outputSamples)
            },
            afterWindow: { layer, window, _ in progress("layer \(layer): calibration windows", window + 1, windows) }
        ) { layer, statistics in
            let forwardSeconds = seconds(since: forwardStart)
            let quantizationStart = ContinuousClock.now
            var (measured, packed) = try measure(
                layer: layer, statistics, quantized: quantized, packAllWidths: cache != nil
            ) { done, total in
                progress("layer \(layer): experts quantized", done, total)
            }
            measured.seconds = .init(forward: forwardSeconds, quantization: seconds(since: quantizationStart))
            if let cache {
                for (width, linears) in packed {
                    try cache.write(
                        layer: layer, width: width,
                        linears: Dictionary(uniqueKeysWithValues: linears.map { (model.moduleName($0.key), $0.value) }))
                }
                if !options.sensitivityCurve { packed = packed.filter { $0.key == referenceWidth } }
            }
            if let checkpoint {
                for (width, linears) in packed where cache == nil {
                    try checkpoint.saveReference(
                        layer: layer, width: width == referenceWidth ? nil : width,
                        linears: Dictionary(uniqueKeysWithValues: linears.map { (model.moduleName($0.key), $0.value) }))
                }
                try checkpoint.save(measured)
            }
            finished.append(measured)
            packedLayers[layer] = packed
        }
        // Layer sensitivity runs the whole model with one profiled layer quantized at a time: a slice
        // measures its own layers exactly as a whole run does (each variant is independent).
        let sensitivityWindows = min(options.sensitivityWindows, windows)
        if sensitivityWindows > 0, quantizedWidths.contains(referenceWidth),
            targets.allSatisfy({ packedLayers[$0]?[referenceWidth] != nil })
        {
            // The whole curve when every layer's experts are at hand at every width.
            let widths =
                targets.allSatisfy { packedLayers[$0]!.count == quantizedWidths.count }
                ? quantizedWidths : [referenceWidth]
            var variants: [LayerSensitivity.Variant] = []
            for layer in targets {
                for width in widths {
                    variants.append(.init(layer: layer, width: width, linears: packedLayers[layer]![width]!))
                }
            }
            packedLayers = [:]
            let measured = try LayerSensitivity.measure(
                model: model, tokens: tokens, windows: sensitivityWindows,
                sequenceLength: options.sequenceLength, variants: variants, progress: progress)
            for layer in targets {
                let position = finished.firstIndex { $0.index == layer }!
                let points = measured.filter { $0.layer == layer }
                let reference = points.first { $0.width == referenceWidth }!
                finished[position].sensitivity = .init(
                    width: referenceWidth, deltaNLL: reference.deltaNLL,
                    tokens: sensitivityWindows * options.sequenceLength,
                    byWidth: widths.count > 1 ? WidthMap(points.map { (width: $0.width, value: $0.deltaNLL) }) : nil)
            }
        }
        // The directory as the user named it ("examples/model"), not just its last component.
        let name = model.directory.hasSuffix("/") ? String(model.directory.dropLast()) : model.directory
        return Profile(
            model: .init(name: name, architecture: config.architecture.rawValue, topK: config.routing.topK),
            calibration: .init(
                tokens: windows * options.sequenceLength, description: description,
                fingerprint: calibrationFingerprint),
            widths: options.widths.sorted(), groupSize: options.groupSize, layers: finished,
            seconds: seconds(since: runStart),
            profiling: .init(
                modelDigest: modelDigest, decoderLayers: config.layerCount, layers: range,
                sequenceLength: options.sequenceLength, dampening: options.dampening, actOrder: options.actOrder,
                clipSearch: options.clipSearch, sensitivityWindows: sensitivityWindows,
                sensitivityWidth: referenceWidth, sensitivityCurve: options.sensitivityCurve,
                outputSamples: options.outputSamples))
    }

    /// A layer's reference linears as saved (by module name), back to tensor roles.
    func referenceRoles(layer: Int, _ stored: [String: PackedLinear]) -> [TensorRole: PackedLinear] {
        var roles: [TensorRole: PackedLinear] = [:]
        for expert in 0..<model.config.expertCount {
            for role in TensorRole.expertLinears(layer: layer, expert: expert) {
                if let linear = stored[model.moduleName(role)] { roles[role] = linear }
            }
        }
        return roles
    }

    /// GPTQ of every expert of one layer at every candidate width; also returns the layer's
    /// linears packed at the sensitivity reference width (and every other width for the curve).
    func measure(
        layer: Int, _ statistics: ExpertStatistics, quantized: QuantizedWeights? = nil, packAllWidths: Bool = false,
        progress: (Int, Int) -> Void
    ) throws
        -> (Profile.Layer, [Int: [TensorRole: PackedLinear]])
    {
        var packed: [Int: [TensorRole: PackedLinear]] = [:]
        let config = model.config
        let gptq = GPTQ(
            options: .init(
                groupSize: options.groupSize, blockSize: 128, dampening: options.dampening,
                actOrder: options.actOrder, clipSearch: options.clipSearch))
        let hidden = config.hiddenSize, width = config.expertIntermediateSize
        let removal =
            options.widths.contains(Profile.removalWidth)
            ? RemovalError.measure(model: model, layer: layer, statistics: statistics) : nil
        var experts: [Profile.Expert] = []
        for expert in 0..<config.expertCount {
            let reached = statistics.frequency[expert] > 0
            let (inputH, downH) = statistics.hessians(expert: expert)
            var errors: [(width: Int, value: Double)] = []
            var outputErrors: [(width: Int, value: Double)] = []
            var bytes: [(width: Int, value: Int64)] = []
            // Gate and up (one input Hessian, one factor), then down: every width from one factor each.
            let widths = quantizedWidths
            let roles = TensorRole.expertLinears(layer: layer, expert: expert)
            let weights = roles.map { model.matrix($0) }
            var timing = GPTQ.Timing()
            let gateUp = try gptq.quantize(
                weights: [weights[0].floats, weights[1].floats], rows: [weights[0].rows, weights[1].rows],
                columns: weights[0].columns, hessian: inputH, widths: widths, timing: &timing)
            let down = try gptq.quantize(
                weight: weights[2].floats, rows: weights[2].rows, columns: weights[2].columns, hessian: downH,
                widths: widths, timing: &timing)
            let linears = (0..<3).map { i in
                (roles[i], weights[i], i < 2 ? gateUp.map { $0[i] } : down)
            }
            let sample = OutputErrorSample(statistics, expert: expert)
            let floatOutput = sample.map { $0.output(linears.map(\.1)) }
            if let removal {
                // Width 0: the weight-space error of losing the expert's output (Ŵ = 0), and the
                // output error of removing it with its tokens rerouted (`RemovalError`).
                let lost = zip(linears, [inputH, inputH, downH]).reduce(0.0) { total, entry in
                    let weight = entry.0.1
                    return total
                        + GPTQ.outputError(
                            weight.floats, [Float](repeating: 0, count: weight.rows * weight.columns),
                            rows: weight.rows, columns: weight.columns, hessian: entry.1)
                }
                errors.append((Profile.removalWidth, max(0, lost)))
                bytes.append((Profile.removalWidth, 0))
                if sample != nil { outputErrors.append((Profile.removalWidth, removal[expert] ?? 0)) }
            }
            for (position, bits) in widths.enumerated() {
                let e = linears.reduce(0) { $0 + $1.2[position].error }
                if let sample, let floatOutput {
                    let quantized = linears.map {
                        Matrix(rows: $0.1.rows, columns: $0.1.columns, floats: $0.2[position].dequantized)
                    }
                    outputErrors.append((bits, sample.error(sample.output(quantized), reference: floatOutput)))
                }
                for (role, _, results) in linears { quantized?(role, bits, results[position].dequantized) }
                if bits == referenceWidth || options.sensitivityCurve || packAllWidths {
                    for (role, weight, results) in linears {
                        packed[bits, default: [:]][role] = PackedLinear(
                            packing: results[position], rows: weight.rows, columns: weight.columns,
                            bits: bits, groupSize: options.groupSize)
                    }
                }
                errors.append((bits, max(0, e)))
                bytes.append(
                    (
                        bits,
                        PackedLayout.expertBytes(
                            hidden: hidden, intermediate: width, bits: bits, groupSize: options.groupSize)
                    ))
            }
            experts.append(
                Profile.Expert(
                    index: expert, params: 3 * Int64(hidden) * Int64(width),
                    freq: Double(statistics.frequency[expert]), mass: statistics.mass[expert],
                    error: WidthMap(errors), bytes: WidthMap(bytes),
                    outputError: sample == nil ? nil : WidthMap(outputErrors), tokens: statistics.frequency[expert],
                    note: reached
                        ? nil : "no calibration token reached this expert: error measured with H = I (weight space)"))
            progress(expert + 1, config.expertCount)
        }
        return (Profile.Layer(index: layer, experts: experts), packed)
    }

    /// Identifies the calibration tokens a run uses: their windows and the FNV-1a hash of their tokens.
    static func calibrationFingerprint(tokenHash: UInt64, windows: Int, sequenceLength: Int) -> String {
        "\(windows) windows of \(sequenceLength) tokens, FNV-1a \(String(tokenHash, radix: 16))"
    }

    /// What this run's GPTQ results depend on, for the quantization cache.
    func cacheFingerprint(calibration: String, digest: String) -> QuantizationCache.Fingerprint {
        .init(
            model: digest,
            architecture: model.config.architecture.rawValue, calibration: calibration,
            groupSize: options.groupSize, dampening: options.dampening, actOrder: options.actOrder,
            clipSearch: options.clipSearch)
    }

    /// Identifies a run's inputs, so that a checkpoint is only resumed by the same run.
    func fingerprint(tokenHash: UInt64, windows: Int) -> String {
        "\(model.directory)|widths \(options.widths.sorted())|group \(options.groupSize)|seq "
            + "\(options.sequenceLength)|windows \(windows)|damp \(options.dampening)|act-order "
            + "\(options.actOrder)|clip \(options.clipSearch)|reference \(referenceWidth)|output samples "
            + "\(options.outputSamples)|tokens "
            + "\(String(tokenHash, radix: 16))"
    }
}
