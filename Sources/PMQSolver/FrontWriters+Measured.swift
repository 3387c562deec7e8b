import Foundation

/// A front point's model as measured on held-out tokens (`pmq sweep --evaluate`).
public struct FrontMeasurement: Codable, Sendable, Equatable {
    public var perplexity: Double
    public var negativeLogLikelihood: Double
    /// NLL minus the float model's, nats per token.
    public var deltaNLL: Double
    /// Mean KL(float ‖ model) of the next-token distributions, nats.
    public var meanKL: Double
    public var assemblySeconds: Double
    public var evaluationSeconds: Double
    public init(
        perplexity: Double, negativeLogLikelihood: Double, deltaNLL: Double, meanKL: Double,
        assemblySeconds: Double, evaluationSeconds: Double
    ) {
        self.perplexity = perplexity
        self.negativeLogLikelihood = negativeLogLikelihood
        self.deltaNLL = deltaNLL
        self.meanKL = meanKL
        self.assemblySeconds = assemblySeconds
        self.evaluationSeconds = evaluationSeconds
    }
}

/// A model measured beside the front for reference (every expert at one width).
public struct FrontReference: Codable, Sendable, Equatable {
    public var name: String
    public var width: Int
    public var averageBits: Double
    public var effectiveBits: Double
    public var bytes: Int64
    public var measured: FrontMeasurement
    public init(
        name: String, width: Int, averageBits: Double, effectiveBits: Double, bytes: Int64, measured: FrontMeasurement
    ) {
        self.name = name
        self.width = width
        self.averageBits = averageBits
        self.effectiveBits = effectiveBits
        self.bytes = bytes
        self.measured = measured
    }
}

/// How a front was measured, written in `front.json` as `evaluation`.
public struct FrontEvaluationSummary: Codable, Sendable {
    public var tokensFile: String
    public var tokens: Int
    public var predicted: Int
    public var floatNegativeLogLikelihood: Double
    public var floatPerplexity: Double
    public var references: [FrontReference]
    /// Spearman ρ between the predicted loss (objective) and the measured ΔNLL over the solved points.
    public var spearman: Double?
    public var seconds: Double
    public init(
        tokensFile: String, tokens: Int, predicted: Int, floatNegativeLogLikelihood: Double, floatPerplexity: Double,
        references: [FrontReference], spearman: Double?, seconds: Double
    ) {
        self.tokensFile = tokensFile
        self.tokens = tokens
        self.predicted = predicted
        self.floatNegativeLogLikelihood = floatNegativeLogLikelihood
        self.floatPerplexity = floatPerplexity
        self.references = references
        self.spearman = spearman
        self.seconds = seconds
    }
}

public enum RankCorrelation {
    /// Spearman's ρ: Pearson correlation of the ranks (ties get their mean rank); nan when either
    /// side is constant or there are fewer than two pairs.
    public static func spearman(_ x: [Double], _ y: [Double]) -> Double {
        func ranks(_ values: [Double]) -> [Double] {
            let order = values.indices.sorted { values[$0] < values[$1] }
            var result = [Double](repeating: 0, count: values.count)
            var start = 0
            while start < order.count {
                var end = start
                while end + 1 < order.count, values[order[end + 1]] == values[order[start]] { end += 1 }
                for position in start...end { result[order[position]] = Double(start + end) / 2 }
                start = end + 1
            }
            return result
        }
        let rx = ranks(x), ry = ranks(y)
        let n = Double(x.count)
        guard n > 1 else { return .nan }
        let mx = rx.reduce(0, +) / n, my = ry.reduce(0, +) / n
        var sxy = 0.0, sxx = 0.0, syy = 0.0
        for (a, b) in zip(rx, ry) {
            sxy += (a - mx) * (b - my)
            sxx += (a - mx) * (a - mx)
            syy += (b - my) * (b - my)
        }
        return sxx > 0 && syy > 0 ? sxy / (sxx * syy).squareRoot() : .nan
    }
}

extension FrontWriters {
    /// A standalone SVG of a measured front: held-out perplexity against size (left axis), the
    /// predicted loss on a second axis (right), the uniform-width models as reference squares and
    /// the float model's perplexity as a dashed line.
    public static func measuredSVG(_ points: [ParetoSweep.Point], summary: FrontEvaluationSummary, title: String)
        -> String
    {
        let width = 820.0, height = 500.0
        let left = 80.0, right = 90.0, top = 50.0, bottom = 70.0
        let bitsAxis = points.first?.budgetKind != "bytes"
        func x(_ point: ParetoSweep.Point) -> Double? {
            bitsAxis ? point.averageBits : point.bytes.map { Double($0) / 1e9 }
        }
        let measured = points.filter { $0.measured != nil && x($0) != nil }
        var svg = svgHeader(width: width, height: height, title: title)
        guard !measured.isEmpty else {
            svg += "<text x=\"\(width / 2)\" y=\"\(height / 2)\" text-anchor=\"middle\">no measured point</text>\n"
            return svg + "</svg>\n"
        }
        let references = summary.references.map { (bitsAxis ? $0.averageBits : Double($0.bytes) / 1e9, $0) }
        let xs = measured.compactMap(x) + references.map(\.0)
        let perplexities =
            measured.map { $0.measured!.perplexity } + references.map(\.1.measured.perplexity)
            + [summary.floatPerplexity]
        let losses = measured.compactMap(\.objective)
        func padded(_ low: Double, _ high: Double, _ fraction: Double) -> (Double, Double) {
            let span = max(high - low, 1e-9)
            return (low - span * fraction, high + span * fraction)
        }
        let (xMin, xMax) = padded(xs.min()!, xs.max()!, 0.04)
        let (pMin, pMax) = padded(perplexities.min()!, perplexities.max()!, 0.06)
        let (lMin, lMax) = padded(losses.min() ?? 0, losses.max() ?? 1, 0.06)
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        func px(_ value: Double) -> Double { left + (value - xMin) / (xMax - xMin) * plotWidth }
        func py(_ value: Double) -> Double { top + (1 - (value - pMin) / (pMax - pMin)) * plotHeight }
        func ly(_ value: Double) -> Double { top + (1 - (value - lMin) / (lMax - lMin)) * plotHeight }
        svg +=
            "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(plotWidth)\" height=\"\(plotHeight)\" fill=\"none\" "
            + "stroke=\"#444\"/>\n"
        for tick in niceTicks(xMin, xMax) {
            svg +=
                "<line x1=\"\(px(tick))\" y1=\"\(top)\" x2=\"\(px(tick))\" y2=\"\(top + plotHeight)\" stroke=\"#eee\"/>"
            svg +=
                "<text x=\"\(px(tick))\" y=\"\(top + plotHeight + 20)\" text-anchor=\"middle\">\(format(tick))</text>\n"
        }
        for tick in niceTicks(pMin, pMax) {
            let y = py(tick)
            svg += "<line x1=\"\(left)\" y1=\"\(y)\" x2=\"\(left + plotWidth)\" y2=\"\(y)\" stroke=\"#eee\"/>"
            svg += "<text x=\"\(left - 8)\" y=\"\(py(tick) + 4)\" text-anchor=\"end\">\(format(tick))</text>\n"
        }
        for tick in niceTicks(lMin, lMax) {
            svg +=
                "<text x=\"\(left + plotWidth + 8)\" y=\"\(ly(tick) + 4)\" fill=\"#ff7f0e\">\(format(tick))</text>\n"
        }
        let xLabel = bitsAxis ? "average bits per expert parameter" : "packed expert size (GB)"
        svg += "<text x=\"\(left + plotWidth / 2)\" y=\"\(height - 25)\" text-anchor=\"middle\">\(xLabel)</text>\n"
        svg +=
            "<text transform=\"translate(20 \(top + plotHeight / 2)) rotate(-90)\" text-anchor=\"middle\">"
            + "held-out perplexity (measured)</text>\n"
        svg +=
            "<text transform=\"translate(\(width - 18) \(top + plotHeight / 2)) rotate(90)\" text-anchor=\"middle\" "
            + "fill=\"#ff7f0e\">predicted loss (the allocation objective)</text>\n"
        // The float model's perplexity.
        let floatY = py(summary.floatPerplexity)
        svg +=
            "<line x1=\"\(left)\" y1=\"\(floatY)\" x2=\"\(left + plotWidth)\" y2=\"\(floatY)\" stroke=\"#2ca02c\" "
            + "stroke-dasharray=\"6 4\"/><text x=\"\(left + 6)\" y=\"\(floatY - 5)\" fill=\"#2ca02c\">float "
            + "\(String(format: "%.3f", summary.floatPerplexity))</text>\n"
        let ordered = measured.sorted { x($0)! < x($1)! }
        let predicted = ordered.filter { $0.objective != nil }.map { "\(px(x($0)!)),\(ly($0.objective!))" }
        svg +=
            "<polyline points=\"\(predicted.joined(separator: " "))\" fill=\"none\" stroke=\"#ff7f0e\" "
            + "stroke-width=\"1.5\" stroke-dasharray=\"4 3\"/>\n"
        let path = ordered.map { "\(px(x($0)!)),\(py($0.measured!.perplexity))" }.joined(separator: " ")
        svg += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\n"
        for point in ordered {
            let m = point.measured!
            let tip = String(
                format: "%.4f bits: perplexity %.3f, ΔNLL %.5f, KL %.5f, predicted %.6g", point.averageBits ?? 0,
                m.perplexity, m.deltaNLL, m.meanKL, point.objective ?? .nan)
            svg +=
                "<circle cx=\"\(px(x(point)!))\" cy=\"\(py(m.perplexity))\" r=\"4\" fill=\"#1f77b4\">"
                + "<title>\(escape(tip))</title></circle>\n"
        }
        for (position, reference) in references {
            let cx = px(position), cy = py(reference.measured.perplexity)
            svg +=
                "<rect x=\"\(cx - 5)\" y=\"\(cy - 5)\" width=\"10\" height=\"10\" fill=\"#d62728\"><title>"
                + "\(escape(reference.name)): perplexity \(String(format: "%.3f", reference.measured.perplexity))"
                + "</title></rect><text x=\"\(cx + 8)\" y=\"\(cy - 6)\" fill=\"#d62728\">\(escape(reference.name))"
                + "</text>\n"
        }
        let legendX = left + plotWidth - 230, legendY = top + 14
        svg +=
            "<rect x=\"\(legendX - 10)\" y=\"\(legendY - 12)\" width=\"235\" height=\"62\" fill=\"white\" "
            + "stroke=\"#ccc\"/>"
        svg +=
            "<circle cx=\"\(legendX)\" cy=\"\(legendY)\" r=\"4\" fill=\"#1f77b4\"/><text x=\"\(legendX + 10)\" "
            + "y=\"\(legendY + 4)\">measured front (perplexity)</text>"
        svg +=
            "<line x1=\"\(legendX - 6)\" y1=\"\(legendY + 18)\" x2=\"\(legendX + 6)\" y2=\"\(legendY + 18)\" "
            + "stroke=\"#ff7f0e\" stroke-dasharray=\"4 3\"/><text x=\"\(legendX + 10)\" y=\"\(legendY + 22)\">"
            + "predicted loss (right axis)</text>"
        svg +=
            "<rect x=\"\(legendX - 5)\" y=\"\(legendY + 31)\" width=\"10\" height=\"10\" fill=\"#d62728\"/>"
            + "<text x=\"\(legendX + 10)\" y=\"\(legendY + 40)\">uniform-width models</text>\n"
        if let rho = summary.spearman, rho.isFinite {
            svg +=
                "<text x=\"\(left)\" y=\"\(height - 8)\" fill=\"#666\">Spearman ρ(predicted loss, measured ΔNLL) = "
                + "\(String(format: "%.3f", rho)) over \(measured.count) points, \(summary.predicted) held-out "
                + "tokens</text>\n"
        }
        return svg + "</svg>\n"
    }
}
