import Foundation
import ModelFormat

/// How experts are scored and how the budget is applied; turns a profile into the integer program.
public struct CostModel: Sendable, Equatable {
    public enum Scope: String, Sendable, CaseIterable {
        /// One budget for the whole model.
        case global
        /// The same budget applied to every layer separately (MC-MoE's formulation).
        case layer
    }

    /// Exponent on the frequency in the significance and on the error in the cost.
    public var alpha: Double = 1
    /// Exponent on the routing mass in the significance.
    public var beta: Double = 1.5
    public var scope: Scope = .global
    /// What the cost of a width is made of: PMQ's measured significance and error, or one of the
    /// baselines that ignore them (for comparisons at the same size).
    public var importance: Importance = .output
    /// Scale each layer's costs so that quantizing the whole layer at the profile's reference width
    /// costs its measured loss increase (`layers[].sensitivity`): layers then trade bits in one
    /// currency, end-to-end loss, instead of layer-local errors whose scale differs by depth.
    /// Used when every layer has a sensitivity, the importance is `measured` and the scope is global.
    public var layerSensitivity = true
    /// Use the layer's loss measured at each width (`sensitivity.byWidth`) when the profile has it;
    /// false: one ratio per layer, at the reference width.
    public var sensitivityCurve = true
    /// Make the measured curve non-increasing in the width (a wider width measuring worse is taken
    /// for noise); false: use it as measured.
    public var monotoneCurve = true
    /// One width for all experts of a layer (what GPTQModel/vLLM-style loaders can serve): each
    /// layer becomes one choice whose weight, bytes and cost are its experts' sums.
    public var uniformLayers = false
    /// MC-MoE's rule: in every layer, at least one expert at the top width and one at the next.
    public var diversity = false
    /// Candidate widths to allocate from (a subset of the profile's); nil means all of them.
    public var widths: [Int]? = nil

    /// Baselines solve the same program (same budget rows, same bytes) with a cost that does not
    /// use the profile's measured errors: `weight_e · params_e · 4^−b`, the textbook noise of a
    /// b-bit uniform grid, with `weight_e` the expert's normalised frequency (`frequency`) or a
    /// seeded uniform random number (`random`). `measured` is PMQ: `s_e · err(e, b)^α`.
    public enum Importance: Sendable, Equatable, CustomStringConvertible {
        /// The expert's measured routing-weighted output error (`outputError`): the squared error it
        /// adds to the layer's output per token, which already counts how often and how strongly
        /// it is routed, so no frequency or mass factor.
        case output
        case measured
        case frequency
        case random(seed: UInt64)

        public var description: String {
            switch self {
            case .output: return "output"
            case .measured: return "measured"
            case .frequency: return "frequency"
            case let .random(seed): return "random(seed \(seed))"
            }
        }
    }

    public init(
        alpha: Double = 1, beta: Double = 1.5, scope: Scope = .global, diversity: Bool = false, widths: [Int]? = nil,
        importance: Importance = .output, layerSensitivity: Bool = true, uniformLayers: Bool = false
    ) {
        self.uniformLayers = uniformLayers
        self.importance = importance
        self.layerSensitivity = layerSensitivity
        self.alpha = alpha
        self.beta = beta
        self.scope = scope
        self.diversity = diversity
        self.widths = widths
    }

    /// `s_e = freq_e^α · mass_e^β`, with freq and mass normalised to sum 1 within the layer.
    /// A layer that no calibration token reached gets significance 0 for every expert.
    public func significance(of layer: Profile.Layer) -> [Double] {
        let freqTotal = layer.experts.reduce(0) { $0 + $1.freq }
        let massTotal = layer.experts.reduce(0) { $0 + $1.mass }
        return layer.experts.map { expert in
            let freq = freqTotal > 0 ? expert.freq / freqTotal : 0
            let mass = massTotal > 0 ? expert.mass / massTotal : 0
            return power(freq, alpha) * power(mass, beta)
        }
    }

    /// `cost(e, b) = s_e · error(e, b)^α`.
    public func cost(significance: Double, error: Double) -> Double {
        significance * power(error, alpha)
    }

    /// The widths in use for this profile, checked against it.
    public func candidateWidths(for profile: Profile, file: String) throws -> [Int] {
        guard let requested = widths else { return profile.widths }
        guard !requested.isEmpty else { throw SolverError.badOption("--widths must name at least one width") }
        for width in requested where !profile.widths.contains(width) {
            throw SolverError.unknownWidth(
                file: file, width: width,
                reason:
                    "was requested but the profile only has widths "
                    + "\(profile.widths.map(String.init).joined(separator: ","))"
            )
        }
        return Array(Set(requested)).sorted()
    }

    public func validate() throws {
        guard alpha.isFinite, alpha > 0 else { throw SolverError.badOption("--alpha must be a finite number > 0") }
        guard beta.isFinite, beta >= 0 else { throw SolverError.badOption("--beta must be a finite number ≥ 0") }
        guard !(diversity && uniformLayers) else {
            throw SolverError.badOption(
                "--mc-diversity needs two widths in a layer; it cannot go with --uniform-layers")
        }
    }

    /// `output` needs the profile's `outputError`; a profile without any (made before pmq measured
    /// it, or synthetic) is costed the MC-MoE way, `measured`.
    public func resolved(for profile: Profile) -> CostModel {
        var copy = self
        if importance == .output, !profile.layers.contains(where: { $0.experts.contains { $0.outputError != nil } }) {
            copy.importance = .measured
        }
        return copy
    }

    public func makeProblem(_ profile: Profile, budget: Budget, file: String = "profile") throws -> AllocationProblem {
        guard resolved(for: profile) == self else {
            return try resolved(for: profile).makeProblem(profile, budget: budget, file: file)
        }
        try validate()
        let widths = try candidateWidths(for: profile, file: file)
        var items: [AllocationProblem.Item] = []
        var layerItems: [[Int]] = []
        var random = SplitMix64(seed: importance.seed ?? 0)
        // Measured costs in units of each layer's measured loss increase, when the profile has them.
        let scales = layerScales(profile)
        for (layerPosition, layer) in profile.layers.enumerated() {
            let layerScale = scales?[layerPosition]
            let significance: [Double]
            switch importance {
            case .output:
                guard layer.experts.contains(where: { $0.outputError != nil }) else {
                    throw SolverError.badOption(
                        "\(file): layer \(layer.index) has no outputError (profile again with this pmq) for "
                            + "--importance output")
                }
                significance = layer.experts.map { _ in 1 }
            case .measured: significance = self.significance(of: layer)
            case .frequency:
                let total = layer.experts.reduce(0) { $0 + $1.freq }
                significance = layer.experts.map { total > 0 ? $0.freq / total : 0 }
            case .random: significance = layer.experts.map { _ in random.uniform() }
            }
            var indices: [Int] = []
            for (expert, s) in zip(layer.experts, significance) {
                let options = widths.map { width -> AllocationProblem.Option in
                    let bytes = expert.bytes[width]!
                    let weight: Int64
                    switch budget {
                    case .bits: weight = expert.params * Int64(width)
                    case .bytes: weight = bytes
                    }
                    let value: Double
                    switch importance {
                    case .output: value = expert.outputError?[width] ?? 0
                    case .measured: value = cost(significance: s, error: expert.error[width]!)
                    default: value = s * Double(expert.params) * pow(4, -Double(width))
                    }
                    return .init(width: width, weight: weight, bytes: bytes, cost: value * (layerScale?(width) ?? 1))
                }
                indices.append(items.count)
                items.append(.init(layer: layerPosition, expert: expert.index, params: expert.params, options: options))
            }
            layerItems.append(indices)
        }

        if uniformLayers {
            var layerLevel: [AllocationProblem.Item] = []
            for (position, indices) in layerItems.enumerated() {
                // A whole layer cannot be removed: width 0 is not a layer-level option.
                let members = indices.map { index in
                    var member = items[index]
                    member.options.removeAll { $0.width == Profile.removalWidth }
                    return member
                }
                let options = members[0].options.indices.map { option in
                    AllocationProblem.Option(
                        width: members[0].options[option].width,
                        weight: members.reduce(0) { $0 + $1.options[option].weight },
                        bytes: members.reduce(0) { $0 + $1.options[option].bytes },
                        cost: members.reduce(0) { $0 + $1.options[option].cost })
                }
                layerLevel.append(
                    .init(
                        layer: position, expert: -1, params: members.reduce(0) { $0 + $1.params }, options: options,
                        members: members))
            }
            items = layerLevel
            layerItems = layerItems.indices.map { [$0] }
        }

        // A cost that overflowed (huge exponents, errors near the smallest double) would reach CBC
        // and the report as inf or NaN: refuse it here, naming the expert.
        for item in items {
            let layer = profile.layers.indices.contains(item.layer) ? profile.layers[item.layer].index : item.layer
            for option in item.options where !option.cost.isFinite {
                throw SolverError.badOption(
                    "\(file): layer \(layer) expert \(item.expert): the cost at width "
                        + "\(option.width) is \(option.cost); lower --alpha or --beta, or check its error and frequency"
                )
            }
        }
        let totalParams = Int128(profile.totalParams)
        func capacity(params: Int128) -> AllocationProblem.Capacity {
            switch budget {
            case let .bits(numerator, denominator):
                return .init(numerator: numerator * params, denominator: denominator)
            case let .bytes(bytes):
                // A layer's share of the size is proportional to its parameters.
                return .init(numerator: Int128(bytes) * params, denominator: totalParams)
            }
        }
        var rows: [AllocationProblem.BudgetRow] = []
        switch scope {
        case .global:
            rows.append(
                .init(
                    items: Array(items.indices), capacity: capacity(params: totalParams), label: "the model",
                    params: profile.totalParams))
        case .layer:
            for (position, indices) in layerItems.enumerated() {
                let params = indices.reduce(Int128(0)) { $0 + Int128(items[$1].params) }
                rows.append(
                    .init(
                        items: indices, capacity: capacity(params: params),
                        label: "layer \(profile.layers[position].index)",
                        params: Int64(params)))
            }
        }
        var diversityRows: [AllocationProblem.DiversityRow] = []
        if diversity, widths.count >= 2 {
            let top = widths[widths.count - 1], next = widths[widths.count - 2]
            for (position, indices) in layerItems.enumerated() where indices.count >= 2 {
                let label = "layer \(profile.layers[position].index)"
                diversityRows.append(.init(items: indices, width: top, label: label))
                diversityRows.append(.init(items: indices, width: next, label: label))
            }
        }
        if widths.contains(Profile.removalWidth), !uniformLayers {
            // Removal must leave every layer the experts a token needs.
            let topK = profile.model.topK ?? 1
            let kept = Set(widths.filter { $0 != Profile.removalWidth })
            for (position, indices) in layerItems.enumerated() {
                diversityRows.append(
                    .init(
                        items: indices, widths: kept, minimum: min(topK, indices.count),
                        label: "layer \(profile.layers[position].index) keeps top-k \(topK)"))
            }
        }
        let unit: AllocationProblem.WeightUnit
        switch budget {
        case .bits: unit = .bits
        case .bytes: unit = .bytes
        }
        return AllocationProblem(items: items, budgetRows: rows, diversityRows: diversityRows, weightUnit: unit)
    }
}

extension CostModel {
    /// Whether `makeProblem` rescales layers by their measured sensitivity for this profile.
    public func appliesLayerSensitivity(_ profile: Profile) -> Bool {
        let importance = resolved(for: profile).importance
        return layerSensitivity && (importance == .measured || importance == .output) && scope == .global
            && profile.layers.count > 1
            && profile.layers.allSatisfy { $0.sensitivity != nil }
            && profile.layers.contains { $0.sensitivity!.deltaNLL > 0 }
    }

    /// Per layer, the factor that turns a width's layer-local costs into end-to-end loss.
    /// With the profile's loss curve (`sensitivity.byWidth` at every candidate width):
    /// `λ_l(b) = ΔNLL_l(b) / Σ_e cost(e, b)`, so a layer all at width b costs exactly the loss
    /// measured at b and each expert's share of it is its share of the layer's error at b. The
    /// curve is made non-increasing in b and ≥ 1e-6 nats (a wider width never measures worse
    /// except by noise). Without the curve: `λ_l = ΔNLL_l / Σ_e cost(e, reference width)` for all
    /// widths, a layer whose measured increase is ≤ 0 (noise) getting 1% of the largest increase.
    func layerScales(_ profile: Profile) -> [(Int) -> Double]? {
        guard appliesLayerSensitivity(profile) else { return nil }
        func layerCost(_ layer: Profile.Layer, width: Int) -> Double {
            zip(layer.experts, significance(of: layer)).reduce(0.0) { total, entry in
                importance == .output
                    ? total + (entry.0.outputError?[width] ?? 0)
                    : total + cost(significance: entry.1, error: entry.0.error[width] ?? 0)
            }
        }
        // Width 0 (removal) has no whole-layer measurement: it is priced by the lowest width's factor.
        let widths = profile.widths.filter { $0 != Profile.removalWidth }
        if sensitivityCurve,
            profile.layers.allSatisfy({ layer in widths.allSatisfy { layer.sensitivity!.byWidth?[$0] != nil } })
        {
            return profile.layers.map { layer in
                var curve: [Int: Double] = [:]
                var floor = 1e-6
                for width in widths.sorted(by: >) {
                    let measured = layer.sensitivity!.byWidth![width]!
                    floor = monotoneCurve ? max(floor, measured) : max(measured, 1e-6)
                    let predicted = layerCost(layer, width: width)
                    curve[width] = predicted > 0 ? floor / predicted : 0
                }
                curve[Profile.removalWidth] = widths.min().flatMap { curve[$0] }
                return { curve[$0] ?? 0 }
            }
        }
        let largest = profile.layers.map { $0.sensitivity!.deltaNLL }.max()!
        return profile.layers.map { layer in
            let sensitivity = layer.sensitivity!
            let predicted = layerCost(layer, width: sensitivity.width)
            let delta = max(sensitivity.deltaNLL, 0.01 * largest)
            let scale = predicted > 0 ? delta / predicted : 0
            return { _ in scale }
        }
    }
}

extension CostModel.Importance {
    var seed: UInt64? {
        if case let .random(seed) = self { return seed }
        return nil
    }
}

/// `x^p` with `x^0 = 1`, `0^p = 0` for p > 0, and exact shortcuts for the common exponents.
func power(_ x: Double, _ p: Double) -> Double {
    if p == 0 { return 1 }
    if p == 1 { return x }
    if x == 0 { return 0 }
    if p == 2 { return x * x }
    return pow(x, p)
}
