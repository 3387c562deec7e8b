import Foundation
import ExpertProfiler
import Kernels
import ModelFormat
import MoERuntime
import PMQSolver

/// Does the allocation objective predict the loss? For each budget it builds size-matched
/// allocations of very different quality (each objective's solver optimum, the baselines, PMQ's
/// widths re-dealt by frequency or shuffled, seeded random ones, one budget per layer, one width per
/// layer), assembles each from the experts' GPTQ weights at every width (quantized once, by the
/// profiler), measures its held-out ΔNLL against the float model, and reports the Spearman rank
/// correlation between every objective's value and the measured ΔNLL.
public struct ObjectiveBenchmark {
    public struct Budget: Sendable {
        public var bits: String
        public var widths: [Int]
        public init(bits: String, widths: [Int]) {
            self.bits = bits
            self.widths = widths
        }
    }

    public var modelPath = "examples/model"
    public var calibrationPath = "examples/model/calib.u32"
    public var evaluationPath = "examples/model/eval.u32"
    public var budgets: [Budget] = [
        .init(bits: "2.0", widths: [1, 2, 3]), .init(bits: "2.5", widths: [1, 2, 3]),
        .init(bits: "3.0", widths: [2, 3, 4]),
    ]
    public var evaluationTokens = 32768
    public var sequenceLength = 512
    public var randomDraws = 3
    public var shuffleDraws = 2
    public var profilerOptions = Profiler.Options()
    /// The objectives scored on every allocation; the first is the one whose solver optimum is
    /// called "pmq" and whose widths the re-dealt and shuffled allocations reuse.
    public var objectives: [(name: String, model: CostModel)] = ObjectiveBenchmark.defaultObjectives
    public var json: String?
    public var profileOut: String?

    public static let defaultObjectives: [(name: String, model: CostModel)] = [
        ("pmq", CostModel()),
        ("pmq, reference width only", reference(CostModel())),
        ("pmq, curve as measured", asMeasured(CostModel())),
        ("pmq, no layer sensitivity", CostModel(layerSensitivity: false)),
        ("mc-moe", CostModel(importance: .measured)),
        ("mc-moe, reference width only", reference(CostModel(importance: .measured))),
        ("mc-moe, no layer sensitivity", CostModel(importance: .measured, layerSensitivity: false)),
    ]

    public init() {}

    static func asMeasured(_ model: CostModel) -> CostModel {
        var copy = model
        copy.monotoneCurve = false
        return copy
    }

    static func reference(_ model: CostModel) -> CostModel {
        var copy = model
        copy.sensitivityCurve = false
        return copy
    }

    /// One evaluated allocation.
    public struct Row: Encodable, Sendable {
        public var name: String
        public var averageBits: Double
        public var deltaNLL: Double
        public var perplexity: Double
        public var objectives: [String: Double]
    }

    public struct BudgetReport: Encodable, Sendable {
        public var bits: String
        public var widths: [Int]
        public var rows: [Row]
        /// Spearman ρ between each objective and the measured ΔNLL over `rows`.
        public var spearman: [String: Double]
    }

    public struct Report: Encodable, Sendable {
        public var model: String
        public var evaluationTokens: Int
        public var floatNLL: Double
        public var budgets: [BudgetReport]
    }

    public func run(emit: (String) -> Void) throws -> Report {
        guard !budgets.isEmpty, !objectives.isEmpty else { throw BenchmarkError("give at least one budget") }
        let model = try MoEModel(directory: modelPath)
        let calibration = try TokenFile(path: calibrationPath)
        try calibration.validate(vocabSize: model.config.vocabSize)
        let evaluation = try TokenFile(path: evaluationPath)
        try evaluation.validate(vocabSize: model.config.vocabSize)
        let heldOut = Array(evaluation.tokens.prefix(evaluationTokens))
        guard heldOut.count >= 2 else { throw BenchmarkError("\(evaluationPath): fewer than 2 held-out tokens") }

        var options = profilerOptions
        options.widths = Array(Set(budgets.flatMap(\.widths))).sorted()
        let cache = QuantizedCache()
        let profile = try Profiler(model: model, options: options).run(
            tokens: calibration.tokens, description: calibrationPath,
            progress: { stage, done, total in if done == total { emit("profile: \(stage) \(done)/\(total)") } },
            quantized: cache.store)
        if let profileOut { try AtomicFile.writeJSON(profile, to: profileOut) }
        let float = try Evaluation.run(model: model, tokens: heldOut, sequenceLength: sequenceLength)
        emit(
            String(
                format: "float: NLL %.5f (perplexity %.3f) on %d held-out tokens", float.negativeLogLikelihood,
                float.perplexity, heldOut.count))
        let originals = Dictionary(uniqueKeysWithValues: cache.weights.keys.map { ($0, model.matrix($0)) })

        var reports: [BudgetReport] = []
        for budget in budgets {
            let parsed = try PMQSolver.Budget.parseBits(budget.bits)
            let candidates = try allocations(profile: profile, budget: parsed, widths: budget.widths)
            let scoring = try objectives.map {
                ($0.name, try scoringProblem(profile: profile, model: $0.model, budget: budget))
            }
            var rows: [Row] = []
            for (name, widths) in candidates {
                for (role, original) in originals {
                    let width = widths[role.layerPosition(in: profile)][role.expertIndex]
                    model.replace(
                        role,
                        with: Matrix(
                            rows: original.rows, columns: original.columns, floats: cache.weights[role]![width]!))
                }
                let result = try Evaluation.run(model: model, tokens: heldOut, sequenceLength: sequenceLength)
                var scores: [String: Double] = [:]
                for (name, problem) in scoring { scores[name] = score(widths, profile: profile, problem: problem) }
                let row = Row(
                    name: name, averageBits: averageBits(widths, profile: profile),
                    deltaNLL: result.negativeLogLikelihood - float.negativeLogLikelihood,
                    perplexity: result.perplexity, objectives: scores)
                emit(
                    String(
                        format: "%@ bits: %-28@ bits %.3f  ΔNLL %+.5f  perplexity %.3f", budget.bits, name,
                        row.averageBits, row.deltaNLL, row.perplexity))
                rows.append(row)
            }
            var spearman: [String: Double] = [:]
            for objective in objectives {
                spearman[objective.name] = RankCorrelation.spearman(
                    rows.map { $0.objectives[objective.name]! }, rows.map(\.deltaNLL))
                emit(
                    String(
                        format: "%@ bits: Spearman(%@, ΔNLL) = %.3f over %d allocations", budget.bits,
                        objective.name, spearman[objective.name]!, rows.count))
            }
            reports.append(.init(bits: budget.bits, widths: budget.widths, rows: rows, spearman: spearman))
        }
        for (role, original) in originals { model.replace(role, with: original) }
        let report = Report(
            model: modelPath, evaluationTokens: heldOut.count, floatNLL: float.negativeLogLikelihood, budgets: reports)
        if let json { try AtomicFile.writeJSON(report, to: json) }
        return report
    }

    /// The allocations evaluated at one budget, by name: widths `[layer position][expert]`.
    func allocations(profile: Profile, budget: PMQSolver.Budget, widths: [Int]) throws -> [(String, [[Int]])] {
        func solve(_ base: CostModel) throws -> [[Int]] {
            var model = base
            model.widths = widths
            let problem = try model.makeProblem(profile, budget: budget)
            let choice = try Allocator.solve(problem).choice
            var result = profile.layers.map { $0.experts.map { _ in widths[0] } }
            for (item, option) in zip(problem.items, choice) {
                let width = item.options[option].width
                for member in item.members.isEmpty ? [item] : item.members {
                    let position = profile.layers.firstIndex { $0.index == member.layer }!
                    let expert = profile.layers[position].experts.firstIndex { $0.index == member.expert }!
                    result[position][expert] = width
                }
            }
            return result
        }
        var list: [(String, [[Int]])] = []
        for objective in objectives { list.append(("solver: \(objective.name)", try solve(objective.model))) }
        let pmq = list[0].1
        list.append(("solver: pmq, scope layer", try solve(CostModel(scope: .layer))))
        list.append(("solver: pmq, uniform layers", try solve(CostModel(uniformLayers: true))))
        list.append(("baseline: frequency", try solve(CostModel(importance: .frequency))))
        // PMQ's widths re-dealt inside each layer: the most used experts get the widest.
        list.append(
            (
                "pmq widths by frequency",
                zip(profile.layers, pmq).map { layer, layerWidths in
                    let order = layer.experts.indices.sorted { layer.experts[$0].freq > layer.experts[$1].freq }
                    var dealt = layerWidths
                    for (rank, expert) in order.enumerated() { dealt[expert] = layerWidths.sorted(by: >)[rank] }
                    return dealt
                }
            ))
        for seed in 0..<shuffleDraws {
            var random = SplitMix64(seed: UInt64(seed + 1))
            var flat = pmq.flatMap { $0 }
            for index in stride(from: flat.count - 1, to: 0, by: -1) {
                flat.swapAt(index, Int(random.next() % UInt64(index + 1)))
            }
            var offset = 0
            let shuffled = pmq.map { layer -> [Int] in
                defer { offset += layer.count }
                return Array(flat[offset..<(offset + layer.count)])
            }
            list.append(("pmq widths shuffled \(seed + 1)", shuffled))
        }
        for seed in 0..<randomDraws {
            list.append(
                ("baseline: random \(seed + 1)", try solve(CostModel(importance: .random(seed: UInt64(seed + 1))))))
        }
        return list
    }

    /// The per-expert program whose costs an objective scores allocations by: its global costs
    /// (layer sensitivity as the model says) at the budget's widths; the capacity plays no part.
    func scoringProblem(profile: Profile, model base: CostModel, budget: Budget) throws -> AllocationProblem {
        var model = base
        model.widths = budget.widths
        model.scope = .global
        model.uniformLayers = false
        return try model.makeProblem(profile, budget: .bits(numerator: 64, denominator: 1))
    }

    /// The objective's value for an allocation: the sum of its widths' costs in the scoring program.
    func score(_ widths: [[Int]], profile: Profile, problem: AllocationProblem) -> Double {
        var total = 0.0
        for item in problem.items {
            let position = profile.layers.firstIndex { $0.index == item.layer }!
            let expert = profile.layers[position].experts.firstIndex { $0.index == item.expert }!
            total += item.options.first { $0.width == widths[position][expert] }!.cost
        }
        return total
    }

    func averageBits(_ widths: [[Int]], profile: Profile) -> Double {
        var bits = 0.0, params = 0.0
        for (layer, layerWidths) in zip(profile.layers, widths) {
            for (expert, width) in zip(layer.experts, layerWidths) {
                bits += Double(expert.params) * Double(width)
                params += Double(expert.params)
            }
        }
        return bits / params
    }

}

/// Every expert linear at every width, as the profiler quantized it.
final class QuantizedCache {
    var weights: [TensorRole: [Int: [Float]]] = [:]
    func store(_ role: TensorRole, _ width: Int, _ floats: [Float]) { weights[role, default: [:]][width] = floats }
}

extension TensorRole {
    fileprivate var expertIndex: Int {
        switch self {
        case let .expertGate(_, expert), let .expertUp(_, expert), let .expertDown(_, expert): return expert
        default: return -1
        }
    }

    fileprivate func layerPosition(in profile: Profile) -> Int {
        switch self {
        case let .expertGate(layer, _), let .expertUp(layer, _), let .expertDown(layer, _):
            return profile.layers.firstIndex { $0.index == layer }!
        default: return -1
        }
    }
}
