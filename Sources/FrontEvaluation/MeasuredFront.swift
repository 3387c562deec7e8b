import Foundation
import Kernels
import ModelFormat
import MoERuntime
import PMQSolver
import QuantEngine

/// Measures a swept front: every solved point's allocation is assembled in memory from the
/// quantization cache (packed experts, the other tensors stored as the packed checkpoint stores
/// them) and scored on held-out tokens against the float model, as are the uniform-width models
/// for reference. Each measured point is saved in a work folder as it finishes, so a killed run
/// resumes where it stopped.
public struct MeasuredFront {
    public struct Options: Sendable {
        public var sequenceLength = 512
        /// Score at most this many held-out tokens (nil: all).
        public var maxTokens: Int?
        /// Also write each point's packed checkpoint to `models/point-NNN/` of this folder.
        public var saveModels: String?
        /// Measure only the models whose number (references first, then points) is `index` modulo
        /// `count`: one task of an array (`pmq sweep --shard I/N`).
        public var shard: (index: Int, count: Int)?
        public init() {}
    }

    public typealias Measurement = FrontMeasurement

    public struct Result: Sendable {
        /// Per sweep point, nil where infeasible.
        public var points: [Measurement?]
        public var references: [FrontReference]
        public var floatNegativeLogLikelihood: Double
        public var floatPerplexity: Double
        public var tokens: Int
        public var predicted: Int
        public var seconds: Double
        /// Models measured by this run (the others were saved in the work folder); 0 when it
        /// loaded no model at all.
        public var measuredNow: Int
        /// The models in the result: references and measured points.
        public var modelCount: Int { references.count + points.compactMap { $0 }.count }
    }

    public let modelDirectory: String
    public let cache: QuantizationCache
    public let options: Options

    public init(modelDirectory: String, cache: QuantizationCache, options: Options) {
        self.modelDirectory = modelDirectory
        self.cache = cache
        self.options = options
    }

    /// An allocation report's widths as the packer reads them.
    public static func plan(_ report: AllocationReport) -> AllocationPlan {
        var widths: [Int: [Int: Int]] = [:]
        for layer in report.layers {
            widths[layer.index] = Dictionary(uniqueKeysWithValues: layer.experts.map { ($0.index, $0.bits) })
        }
        return AllocationPlan(
            widths: widths, groupSize: report.parameters.groupSize, calibration: report.parameters.calibration)
    }

    /// `progress(stage, done, total)`; `workDirectory` keeps finished points for a rerun. With
    /// `options.shard` only that shard's measurements are taken (saved in the work folder; the
    /// result holds just those); a later run without a shard finds them all there and, when the
    /// float model's figures are saved too, loads no model at all.
    public func run(
        reports: [AllocationReport?], tokens allTokens: [Int], tokensFile: String, workDirectory: String,
        progress: (String, Int, Int) -> Void = { _, _, _ in }
    ) throws -> Result {
        let start = ContinuousClock.now
        let config = try MoEModelConfig.read(directory: modelDirectory)
        let tokens = options.maxTokens.map { Array(allTokens.prefix($0)) } ?? allTokens
        guard tokens.count >= 2 else { throw ModelFormatError(file: tokensFile, "fewer than 2 tokens to evaluate") }
        let plans = reports.map { $0.map(Self.plan) }
        // The points of one sweep share their group size and calibration: each distinct pair is
        // checked once (the check digests the model).
        var checked = Set<String>()
        for plan in plans.compactMap({ $0 })
        where checked.insert("\(plan.groupSize) \(plan.calibration ?? "")").inserted {
            try CacheAssembly.check(
                cache, modelDirectory: modelDirectory, config: config, groupSize: plan.groupSize,
                calibration: plan.calibration, source: "the profile")
        }
        let uniformWidths = try cachedWidths(config: config)
        let needed = HeldOutScorer.referenceBytes(tokens: tokens.count, vocab: config.vocabSize)
        let physical = physicalMemoryBytes
        if physical > 0, needed > physical / 2 {
            throw ModelFormatError(
                file: tokensFile,
                String(
                    format: "keeping the float model's distributions over %d tokens needs %.1f GB; "
                        + "bound them with --max-tokens", tokens.count, Double(needed) / 1e9))
        }
        let work = try WorkFolder(
            directory: workDirectory,
            fingerprint: "\(cache.fingerprint.model)|\(cache.fingerprint.calibration)|"
                + "\(cache.fingerprint.groupSize)|tokens \(tokensFile) \(tokens.count) "
                + "\(String(FNV1a.hash(tokens), radix: 16))|seq \(options.sequenceLength)")
        let jobs = try self.jobs(plans: plans, uniformWidths: uniformWidths, config: config)
        let mine = jobs.indices.filter { index in options.shard.map { index % $0.count == $0.index } ?? true }
        // A saved model is measured again only when its packed checkpoint was asked for and is not on disk.
        let pendingAtStart = Set(
            mine.filter { index in
                work.load(key: jobs[index].key) == nil
                    || jobs[index].save.map { !FileManager.default.fileExists(atPath: $0) } ?? false
            })
        var measured: [String: Measurement] = [:]
        var float = work.loadFloat()
        if float == nil || !pendingAtStart.isEmpty {
            let model = try MoEModel(directory: modelDirectory)
            guard model.quantization == nil else {
                throw ModelFormatError(file: modelDirectory, "is already quantized; name the float model")
            }
            let scorer = HeldOutScorer(
                tokens: tokens, sequenceLength: options.sequenceLength, vocab: config.vocabSize)
            try scorer.recordFloat(model: model) { progress("float model", $0, $1) }
            float = .init(negativeLogLikelihood: scorer.floatNegativeLogLikelihood, predicted: scorer.predicted)
            try work.saveFloat(float!)
            try model.roundPassthroughToBFloat16()
            let originals = Dictionary(
                uniqueKeysWithValues: (0..<config.layerCount).filter { config.moeLayers[$0] }.flatMap { layer in
                    (0..<config.expertCount).flatMap { TensorRole.expertLinears(layer: layer, expert: $0) }
                }.map { ($0, model.matrix($0)) })
            for index in mine where pendingAtStart.contains(index) {
                let job = jobs[index]
                let assemblyStart = ContinuousClock.now
                for (role, matrix) in originals { model.replace(role, with: matrix) }
                try CacheAssembly.forEachLinear(plan: job.plan, config: config, cache: cache) { role, _, linear in
                    model.replace(
                        role,
                        with: Matrix(
                            rows: linear.outFeatures, columns: linear.inFeatures, storage: .packed(.init(linear))))
                }
                model.removedExperts = job.plan.removedExperts.mapValues(Set.init)
                let assembly = seconds(since: assemblyStart)
                let score = try scorer.score(model: model) { progress(job.stage, $0, $1) }
                let measurement = Measurement(
                    perplexity: score.perplexity, negativeLogLikelihood: score.negativeLogLikelihood,
                    deltaNLL: score.negativeLogLikelihood - scorer.floatNegativeLogLikelihood, meanKL: score.meanKL,
                    assemblySeconds: assembly, evaluationSeconds: score.seconds)
                if let save = job.save {
                    try? FileManager.default.removeItem(atPath: save)
                    let output = try CacheAssembly.output(plan: job.plan, config: config, cache: cache)
                    try PackedModelExport.write(
                        sourceDirectory: modelDirectory, output: output, actOrder: cache.fingerprint.actOrder,
                        keepF32: false, to: save)
                }
                try work.save(measurement, key: job.key)
                measured[job.key] = measurement
            }
            for (role, matrix) in originals { model.replace(role, with: matrix) }
        }
        for index in mine where measured[jobs[index].key] == nil {
            guard let saved = work.load(key: jobs[index].key) else {
                throw ModelFormatError(file: workDirectory, "\(jobs[index].key).json vanished during the run")
            }
            measured[jobs[index].key] = saved
        }
        var references: [FrontReference] = []
        var points = [Measurement?](repeating: nil, count: plans.count)
        for job in mine.map({ jobs[$0] }) {
            let measurement = measured[job.key]!
            if let point = job.point {
                points[point] = measurement
                continue
            }
            let width = job.plan.widths.values.first?.values.first ?? 0
            let bytes = PackedLayout.expertBytes(
                hidden: config.hiddenSize, intermediate: config.expertIntermediateSize, bits: width,
                groupSize: cache.fingerprint.groupSize)
            let experts = (0..<config.layerCount).filter { config.moeLayers[$0] }.count * config.expertCount
            references.append(
                .init(
                    name: "uniform \(width)-bit", width: width, averageBits: Double(width),
                    effectiveBits: Double(bytes * 8) / Double(3 * config.hiddenSize * config.expertIntermediateSize),
                    bytes: bytes * Int64(experts), measured: measurement))
        }
        return Result(
            points: points, references: references, floatNegativeLogLikelihood: float!.negativeLogLikelihood,
            floatPerplexity: Foundation.exp(float!.negativeLogLikelihood), tokens: tokens.count,
            predicted: float!.predicted, seconds: seconds(since: start), measuredNow: pendingAtStart.count)
    }

    /// One model to measure: a uniform reference (`point` nil) or a sweep point.
    struct Job {
        var key: String
        var plan: AllocationPlan
        var stage: String
        var save: String?
        var point: Int?
    }

    /// The uniform references, then the feasible points, in the order shards number them.
    func jobs(plans: [AllocationPlan?], uniformWidths: [Int], config: MoEModelConfig) throws -> [Job] {
        var jobs = uniformWidths.map { width in
            Job(
                key: "uniform-\(width)",
                plan: AllocationPlan.uniform(bits: width, config: config, groupSize: cache.fingerprint.groupSize),
                stage: "uniform \(width)-bit")
        }
        for (index, plan) in plans.enumerated() {
            guard let plan else { continue }
            let save = options.saveModels.map { "\($0)/models/" + String(format: "point-%03d", index) }
            if let save {
                do {
                    try FileManager.default.createDirectory(
                        atPath: (save as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                } catch {
                    throw FileWriteError(file: save, reason: (error as NSError).localizedDescription)
                }
            }
            jobs.append(
                Job(
                    key: Self.key(plan), plan: plan, stage: "point \(index + 1)/\(plans.count)", save: save,
                    point: index))
        }
        return jobs
    }

    /// The widths every MoE layer's experts are cached at (the uniform reference models).
    func cachedWidths(config: MoEModelConfig) throws -> [Int] {
        let layers = (0..<config.layerCount).filter { config.moeLayers[$0] }
        return [1, 2, 3, 4, 8].filter { width in layers.allSatisfy { cache.contains(layer: $0, width: width) } }
    }

    /// A plan's identity in the work folder: its widths, hashed.
    static func key(_ plan: AllocationPlan) -> String {
        var hash = FNV1a()
        for layer in plan.widths.keys.sorted() {
            for (expert, bits) in plan.widths[layer]!.sorted(by: { $0.key < $1.key }) {
                for value in [layer, expert, bits] { hash.add(value) }
            }
        }
        return "plan-" + hash.hex
    }
}

/// Finished measurements of a `MeasuredFront` run, one JSON file each, under a fingerprint of
/// the run's inputs: a folder from other inputs is refused rather than mixed in.
struct WorkFolder {
    let directory: String

    init(directory: String, fingerprint: String) throws {
        self.directory = directory
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw FileWriteError(file: directory, reason: (error as NSError).localizedDescription)
        }
        let marker = directory + "/run.txt"
        if let existing = try? String(contentsOfFile: marker, encoding: .utf8) {
            guard existing == fingerprint else {
                throw ModelFormatError(
                    file: directory, "holds measurements of a different run (\(existing)); delete it to start over")
            }
        } else {
            try AtomicFile.write(fingerprint, to: marker)
        }
    }

    func load(key: String) -> MeasuredFront.Measurement? {
        guard let data = FileManager.default.contents(atPath: "\(directory)/\(key).json") else { return nil }
        return try? JSONDecoder().decode(MeasuredFront.Measurement.self, from: data)
    }

    func save(_ measurement: MeasuredFront.Measurement, key: String) throws {
        try AtomicFile.writeJSON(measurement, to: "\(directory)/\(key).json")
    }

    /// The float model's figures, so that a run whose measurements are all saved loads no model.
    struct FloatFigures: Codable {
        var negativeLogLikelihood: Double
        var predicted: Int
    }

    func loadFloat() -> FloatFigures? {
        guard let data = FileManager.default.contents(atPath: "\(directory)/float.json") else { return nil }
        return try? JSONDecoder().decode(FloatFigures.self, from: data)
    }

    func saveFloat(_ figures: FloatFigures) throws { try AtomicFile.writeJSON(figures, to: "\(directory)/float.json") }
}
