import Foundation
import ModelFormat

/// The allocation report (format `pmq-allocation`, version 1): the contract between the
/// allocator and the packer. Specified in docs/FORMATS.md §2.
public struct AllocationReport: Codable, Sendable {
    public struct Parameters: Codable, Sendable {
        public var profile: String
        public var model: String
        public var architecture: String
        public var groupSize: Int
        /// "bits" (nominal average bits) or "bytes" (real packed size).
        public var budgetKind: String
        /// Average bits, or bytes.
        public var budget: Double
        public var scope: String
        public var widths: [Int]
        public var alpha: Double
        public var beta: Double
        public var diversity: Bool
        /// "measured" (PMQ), or a baseline that ignores the profile's errors: "frequency", "random(seed N)".
        public var importance: String?
        /// Whether layer costs were rescaled by the profile's measured layer sensitivities.
        public var layerSensitivity: Bool?
        /// One width per layer (`--uniform-layers`).
        public var uniformLayers: Bool?
        public var timeLimit: Double?
        public var gapTolerance: Double
        /// The profile's calibration fingerprint: which quantization cache the widths may be
        /// assembled from (absent when the profile has none).
        public var calibration: String? = nil
    }

    public struct Expert: Codable, Sendable {
        public var index: Int
        public var bits: Int
        public var bytes: Int64
        public var cost: Double
    }

    public struct Layer: Codable, Sendable {
        public var index: Int
        public var averageBits: Double
        public var bytes: Int64
        public var experts: [Expert]
    }

    public static let formatName = "pmq-allocation"
    public static let currentVersion = 1

    public var format = AllocationReport.formatName
    public var version = AllocationReport.currentVersion
    public var status: Allocation.Status
    public var objective: Double
    public var bound: Double
    public var gap: Double
    /// Nominal average bits per expert parameter: Σ params·bits / Σ params.
    public var averageBits: Double
    /// Real bits per expert parameter, scales and zeros included: 8 · Σ bytes / Σ params.
    public var effectiveBits: Double
    public var bytes: Int64
    public var params: Int64
    public var seconds: Double
    public var nodes: Int
    public var start: String
    public var incumbent: String
    /// Experts whose width reduced-cost fixing settled before CBC ran.
    public var fixedExperts: Int
    /// Binary columns in the program CBC solved.
    public var cbcColumns: Int
    public var solver: String
    /// Number of experts at each width.
    public var widthCounts: [String: Int]
    public var parameters: Parameters
    public var layers: [Layer]

    public init(
        profile: Profile, profilePath: String, problem: AllocationProblem, allocation: Allocation,
        budget: Budget, model costModel: CostModel, options: SolveOptions
    ) {
        var layers = profile.layers.map { Layer(index: $0.index, averageBits: 0, bytes: 0, experts: []) }
        var layerBitParams = [Int64](repeating: 0, count: layers.count)
        var layerParams = [Int64](repeating: 0, count: layers.count)
        var totalBitParams: Int64 = 0, totalBytes: Int64 = 0, totalParams: Int64 = 0
        var counts: [String: Int] = [:]
        let expanded = zip(problem.items, allocation.choice).flatMap { item, option in
            item.members.isEmpty ? [(item, option)] : item.members.map { ($0, option) }
        }
        for (item, option) in expanded {
            let chosen = item.options[option]
            layers[item.layer].experts.append(
                Expert(index: item.expert, bits: chosen.width, bytes: chosen.bytes, cost: chosen.cost))
            layers[item.layer].bytes += chosen.bytes
            layerBitParams[item.layer] += item.params * Int64(chosen.width)
            layerParams[item.layer] += item.params
            totalBitParams += item.params * Int64(chosen.width)
            totalBytes += chosen.bytes
            totalParams += item.params
            counts[String(chosen.width), default: 0] += 1
        }
        for index in layers.indices where layerParams[index] > 0 {
            layers[index].averageBits = Double(layerBitParams[index]) / Double(layerParams[index])
        }
        self.status = allocation.status
        self.objective = allocation.objective
        self.bound = allocation.bound
        self.gap = allocation.gap
        self.averageBits = Double(totalBitParams) / Double(max(totalParams, 1))
        self.effectiveBits = 8 * Double(totalBytes) / Double(max(totalParams, 1))
        self.bytes = totalBytes
        self.params = totalParams
        self.seconds = allocation.seconds
        self.nodes = allocation.nodes
        self.start = allocation.start
        self.incumbent = allocation.incumbent
        self.fixedExperts = allocation.fixedExperts
        self.cbcColumns = allocation.cbcColumns
        self.solver = "CBC \(Allocator.cbcVersion)"
        self.widthCounts = counts
        self.parameters = Parameters(
            profile: profilePath, model: profile.model.name, architecture: profile.model.architecture,
            groupSize: profile.groupSize, budgetKind: budget.kind, budget: budget.value,
            scope: costModel.scope.rawValue, widths: problem.items.first?.options.map(\.width) ?? [],
            alpha: costModel.alpha, beta: costModel.beta, diversity: costModel.diversity,
            importance: costModel.resolved(for: profile).importance.description,
            layerSensitivity: costModel.appliesLayerSensitivity(profile),
            uniformLayers: costModel.uniformLayers, timeLimit: options.timeLimit, gapTolerance: options.relativeGap,
            calibration: profile.calibration.fingerprint)
        self.layers = layers
    }

    /// A readable per-layer summary for the terminal.
    public func summary() -> String {
        let widths = parameters.widths
        var lines: [String] = []
        let header = ["layer", "avg bits"] + widths.map { $0 == 0 ? "removed" : "\($0)-bit" } + ["size"]
        let columnWidths = header.map { $0 == "size" ? 12 : max($0.count, 8) }
        lines.append(
            zip(header, columnWidths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(
                separator: " "))
        for layer in layers {
            var cells = [String(layer.index), String(format: "%.3f", layer.averageBits)]
            for width in widths { cells.append(String(layer.experts.filter { $0.bits == width }.count)) }
            cells.append(formatGB(layer.bytes))
            lines.append(
                zip(cells, columnWidths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(
                    separator: " "))
        }
        let counts = widths.map { width in
            let count = widthCounts[String(width)] ?? 0
            return width == 0 ? "\(count) removed" : "\(count)×\(width)-bit"
        }.joined(separator: ", ")
        lines.append("")
        lines.append(
            "status \(status.rawValue)  objective \(String(format: "%.6g", objective))  bound "
                + "\(String(format: "%.6g", bound))  gap \(String(format: "%.2e", gap))  "
                + "\(String(format: "%.2f", seconds)) s  (CBC: \(cbcColumns) columns, \(fixedExperts) experts fixed by "
                + "reduced costs, \(nodes) nodes)"
        )
        lines.append(
            "average \(String(format: "%.4f", averageBits)) bits (effective "
                + "\(String(format: "%.4f", effectiveBits)))  \(formatGB(bytes))  experts: \(counts)"
        )
        return lines.joined(separator: "\n")
    }
}

/// The report written member by member (`AtomicFile.writeJSON` uses this): the same bytes as through
/// `Encodable`, which `AllocationReportJSONTests` checks, without a tree of 75,000 values first.
extension AllocationReport: PrettyJSONWritable {
    public func write(to json: inout PrettyJSONWriter) throws {
        try json.object { json in
            try json.member("averageBits", averageBits)
            try json.member("bound", bound)
            json.member("bytes", bytes)
            json.member("cbcColumns", cbcColumns)
            try json.member("effectiveBits", effectiveBits)
            json.member("fixedExperts", fixedExperts)
            json.member("format", format)
            try json.member("gap", gap)
            json.member("incumbent", incumbent)
            json.key("layers")
            try json.array(layers) { json, layer in try layer.write(to: &json) }
            json.member("nodes", nodes)
            try json.member("objective", objective)
            json.key("parameters")
            try parameters.write(to: &json)
            json.member("params", params)
            try json.member("seconds", seconds)
            json.member("solver", solver)
            json.member("start", start)
            json.member("status", status.rawValue)
            json.member("version", version)
            json.key("widthCounts")
            json.object { json in
                for (width, count) in widthCounts.sorted(by: { $0.key < $1.key }) { json.member(width, count) }
            }
        }
    }
}

extension AllocationReport.Layer {
    func write(to json: inout PrettyJSONWriter) throws {
        try json.object { json in
            try json.member("averageBits", averageBits)
            json.member("bytes", bytes)
            json.key("experts")
            try json.array(experts) { json, expert in
                try json.object { json in
                    json.member("bits", expert.bits)
                    json.member("bytes", expert.bytes)
                    try json.member("cost", expert.cost)
                    json.member("index", expert.index)
                }
            }
            json.member("index", index)
        }
    }
}

extension AllocationReport.Parameters {
    func write(to json: inout PrettyJSONWriter) throws {
        try json.object { json in
            try json.member("alpha", alpha)
            json.member("architecture", architecture)
            try json.member("beta", beta)
            try json.member("budget", budget)
            json.member("budgetKind", budgetKind)
            json.member("calibration", calibration)
            json.member("diversity", diversity)
            try json.member("gapTolerance", gapTolerance)
            json.member("groupSize", groupSize)
            json.member("importance", importance)
            json.member("layerSensitivity", layerSensitivity)
            json.member("model", model)
            json.member("profile", profile)
            json.member("scope", scope)
            try json.member("timeLimit", timeLimit)
            json.member("uniformLayers", uniformLayers)
            json.key("widths")
            json.array(widths) { json, width in json.value(width) }
        }
    }
}
