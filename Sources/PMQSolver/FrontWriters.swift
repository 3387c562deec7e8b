import Foundation
import ModelFormat

/// Writes a sweep as `front.json`, `front.csv` and a standalone `front.svg` (docs/FORMATS.md §3).
public enum FrontWriters {
    public struct Document: Encodable {
        public var format = "pmq-front"
        public var version = 1
        public var model: String
        public var profile: String
        public var scope: String
        public var widths: [Int]
        public var alpha: Double
        public var beta: Double
        public var diversity: Bool
        public var seconds: Double
        public var points: [ParetoSweep.Point]
        /// How the points were measured (`pmq sweep --evaluate`); absent otherwise.
        public var evaluation: FrontEvaluationSummary?
    }

    public static func write(
        _ result: ParetoSweep.Result, profile: Profile, profilePath: String, model: CostModel,
        directory: String, saveAllocations: Bool, evaluation: FrontEvaluationSummary? = nil
    ) throws {
        let fileManager = FileManager.default
        do {
            try fileManager.createDirectory(atPath: directory, withIntermediateDirectories: true)
            if saveAllocations {
                try fileManager.createDirectory(atPath: directory + "/allocations", withIntermediateDirectories: true)
            }
        } catch {
            throw FileWriteError(file: directory, reason: (error as NSError).localizedDescription)
        }
        let widths = try model.candidateWidths(for: profile, file: profilePath)
        let document = Document(
            model: profile.model.name, profile: profilePath, scope: model.scope.rawValue,
            widths: widths, alpha: model.alpha, beta: model.beta, diversity: model.diversity,
            seconds: result.seconds, points: result.points, evaluation: evaluation)
        if saveAllocations {
            for (index, report) in result.reports.enumerated() {
                guard let report else { continue }
                try AtomicFile.writeJSON(
                    report, to: "\(directory)/allocations/point-\(String(format: "%03d", index)).json")
            }
        }
        try AtomicFile.writeJSON(document, to: directory + "/front.json")
        try AtomicFile.write(csv(result.points, measured: evaluation != nil), to: directory + "/front.csv")
        let title =
            "\(profile.model.name) — \(model.scope.rawValue) budget, widths "
            + "\(widths.map(String.init).joined(separator: ","))"
        try AtomicFile.write(
            evaluation.map { measuredSVG(result.points, summary: $0, title: title) }
                ?? svg(result.points, title: title),
            to: directory + "/front.svg")
    }

    /// One row per point; with `measured`, the held-out perplexity, ΔNLL and mean KL as well.
    public static func csv(_ points: [ParetoSweep.Point], measured: Bool = false) -> String {
        var lines = [
            "budget_kind,budget,status,average_bits,effective_bits,bytes,objective,bound,gap,seconds,start,dominated,"
                + "removed" + (measured ? ",perplexity,delta_nll,mean_kl,assembly_seconds,evaluation_seconds" : "")
        ]
        func text(_ value: Double?) -> String { value.map { String($0) } ?? "" }
        for point in points {
            lines.append(
                [
                    point.budgetKind, String(point.budget), point.status, text(point.averageBits),
                    text(point.effectiveBits),
                    point.bytes.map(String.init) ?? "", text(point.objective), text(point.bound), text(point.gap),
                    String(format: "%.4f", point.seconds), point.start ?? "", String(point.dominated),
                    point.removed.map(String.init) ?? "",
                ].joined(separator: ",")
                    + (measured
                        ? ","
                            + [
                                text(point.measured?.perplexity), text(point.measured?.deltaNLL),
                                text(point.measured?.meanKL), text(point.measured?.assemblySeconds),
                                text(point.measured?.evaluationSeconds),
                            ].joined(separator: ",") : ""))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// A standalone SVG: predicted loss against size, the front as a line, dominated points hollow.
    public static func svg(_ points: [ParetoSweep.Point], title: String) -> String {
        let width = 760.0, height = 480.0
        let left = 90.0, right = 30.0, top = 50.0, bottom = 70.0
        let solved = points.filter { $0.objective != nil && ParetoSweep.size($0) != nil }
        let bitsAxis = points.first?.budgetKind != "bytes"
        let xLabel = bitsAxis ? "average bits per expert parameter" : "packed expert size (GB)"
        func xValue(_ point: ParetoSweep.Point) -> Double { bitsAxis ? point.averageBits! : Double(point.bytes!) / 1e9 }
        var svg = svgHeader(width: width, height: height, title: title)
        guard !solved.isEmpty else {
            svg +=
                "<text x=\"\(width / 2)\" y=\"\(height / 2)\" text-anchor=\"middle\">no feasible point</text>\n</svg>\n"
            return svg
        }
        let xs = solved.map(xValue), ys = solved.map { $0.objective! }
        var xMin = xs.min()!, xMax = xs.max()!
        if xMax - xMin < 1e-12 { xMin -= 0.5; xMax += 0.5 }
        let positive = ys.filter { $0 > 0 }
        let logScale = positive.count == ys.count && (positive.max()! / positive.min()!) > 20
        func yTransform(_ value: Double) -> Double { logScale ? log10(value) : value }
        var yMin = ys.map(yTransform).min()!, yMax = ys.map(yTransform).max()!
        if yMax - yMin < 1e-12 { yMin -= 0.5; yMax += 0.5 }
        let xPad = (xMax - xMin) * 0.04, yPad = (yMax - yMin) * 0.06
        xMin -= xPad; xMax += xPad; yMin -= yPad; yMax += yPad
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        func px(_ x: Double) -> Double { left + (x - xMin) / (xMax - xMin) * plotWidth }
        func py(_ y: Double) -> Double { top + (1 - (yTransform(y) - yMin) / (yMax - yMin)) * plotHeight }

        svg +=
            "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(plotWidth)\" height=\"\(plotHeight)\" fill=\"none\" "
            + "stroke=\"#444\"/>\n"
        for tick in niceTicks(xMin, xMax) {
            let x = px(tick)
            svg +=
                "<line x1=\"\(x)\" y1=\"\(top + plotHeight)\" x2=\"\(x)\" y2=\"\(top + plotHeight + 5)\" "
                + "stroke=\"#444\"/>"
            svg += "<line x1=\"\(x)\" y1=\"\(top)\" x2=\"\(x)\" y2=\"\(top + plotHeight)\" stroke=\"#eee\"/>"
            svg += "<text x=\"\(x)\" y=\"\(top + plotHeight + 20)\" text-anchor=\"middle\">\(format(tick))</text>\n"
        }
        for tick in niceTicks(yMin, yMax) {
            let y = top + (1 - (tick - yMin) / (yMax - yMin)) * plotHeight
            let label = logScale ? "1e\(format(tick))" : format(tick)
            svg += "<line x1=\"\(left - 5)\" y1=\"\(y)\" x2=\"\(left)\" y2=\"\(y)\" stroke=\"#444\"/>"
            svg += "<line x1=\"\(left)\" y1=\"\(y)\" x2=\"\(left + plotWidth)\" y2=\"\(y)\" stroke=\"#eee\"/>"
            svg += "<text x=\"\(left - 8)\" y=\"\(y + 4)\" text-anchor=\"end\">\(label)</text>\n"
        }
        svg += "<text x=\"\(left + plotWidth / 2)\" y=\"\(height - 25)\" text-anchor=\"middle\">\(xLabel)</text>\n"
        let yLabel = "predicted loss (the allocation objective)" + (logScale ? " (log scale)" : "")
        svg +=
            "<text transform=\"translate(22 \(top + plotHeight / 2)) rotate(-90)\" "
            + "text-anchor=\"middle\">\(escape(yLabel))</text>\n"

        let front = solved.filter { !$0.dominated }.sorted { xValue($0) < xValue($1) }
        let path = front.map { "\(px(xValue($0))),\(py($0.objective!))" }.joined(separator: " ")
        svg += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\n"
        for point in solved {
            let x = px(xValue(point)), y = py(point.objective!)
            let tip =
                "budget \(format(point.budget)) \(point.budgetKind): \(point.status), "
                + "\(String(format: "%.4f", point.averageBits!)) bits, \(point.bytes!) bytes, loss "
                + "\(String(format: "%.6g", point.objective!))"
            if point.dominated {
                svg +=
                    "<circle cx=\"\(x)\" cy=\"\(y)\" r=\"4.5\" fill=\"white\" stroke=\"#d62728\" "
                    + "stroke-width=\"1.5\"><title>dominated — \(escape(tip))</title></circle>\n"
            } else {
                svg +=
                    "<circle cx=\"\(x)\" cy=\"\(y)\" r=\"4\" fill=\"#1f77b4\"><title>\(escape(tip))</title></circle>\n"
            }
        }
        let legendX = left + plotWidth - 200, legendY = top + 14
        svg +=
            "<rect x=\"\(legendX - 10)\" y=\"\(legendY - 12)\" width=\"205\" height=\"44\" fill=\"white\" "
            + "stroke=\"#ccc\"/>"
        svg +=
            "<circle cx=\"\(legendX)\" cy=\"\(legendY)\" r=\"4\" fill=\"#1f77b4\"/><text x=\"\(legendX + 10)\" "
            + "y=\"\(legendY + 4)\">Pareto front (solved points)</text>"
        svg +=
            "<circle cx=\"\(legendX)\" cy=\"\(legendY + 18)\" r=\"4.5\" fill=\"white\" stroke=\"#d62728\" "
            + "stroke-width=\"1.5\"/><text x=\"\(legendX + 10)\" y=\"\(legendY + 22)\">dominated point</text>\n"
        let infeasible = points.filter { $0.status == "infeasible" }.count
        if infeasible > 0 {
            svg +=
                "<text x=\"\(left)\" y=\"\(height - 8)\" fill=\"#666\">\(infeasible) budget(s) below the smallest "
                + "possible size not shown</text>\n"
        }
        svg += "</svg>\n"
        return svg
    }

    /// The opening of a standalone SVG: size, font, white background, the title centred on top.
    static func svgHeader(width: Double, height: Double, title: String) -> String {
        """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" \
        viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(width / 2)" y="24" text-anchor="middle" font-size="14">\(escape(title))</text>

        """
    }

    static func niceTicks(_ low: Double, _ high: Double) -> [Double] {
        let span = high - low
        let raw = span / 6
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 2.5, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? raw
        var ticks: [Double] = []
        var tick = ceil(low / step) * step
        while tick <= high + step * 1e-9 {
            ticks.append(tick)
            tick += step
        }
        return ticks
    }

    static func format(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 1e9 { return String(Int(value)) }
        return String(format: "%.4g", value)
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
