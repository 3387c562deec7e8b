import Foundation
import ModelFormat
import PMQSolver

extension PMQ.Table {
    struct FrontDocument: Decodable {
        var model: String
        var points: [ParetoSweep.Point]
        var evaluation: FrontEvaluationSummary?
    }

    /// The measured front of a `pmq sweep --evaluate` run as a Markdown table.
    static func frontTable(path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ModelFormatError(file: path, "cannot read")
        }
        let document: FrontDocument
        try StrictJSON.validate(data, file: path)
        do { document = try JSONDecoder().decode(FrontDocument.self, from: data) } catch {
            throw ModelFormatError(file: path, "not a pmq-front document (\(error))")
        }
        guard let evaluation = document.evaluation else {
            throw ModelFormatError(file: path, "evaluation: missing (sweep with --evaluate to measure the points)")
        }
        var lines = [
            "| \(document.model) | avg bits | effective bits | perplexity | ΔNLL | mean KL | predicted loss |",
            "|---|---:|---:|---:|---:|---:|---:|",
            String(format: "| float | 32 | 32 | %.3f | 0 | 0 | |", evaluation.floatPerplexity),
        ]
        func cells(_ m: FrontMeasurement) -> String {
            String(format: "%.3f | %.4f | %.4f", m.perplexity, m.deltaNLL, m.meanKL)
        }
        for reference in evaluation.references {
            lines.append(
                String(format: "| %@ | %.3f | %.3f | ", reference.name, reference.averageBits, reference.effectiveBits)
                    + cells(reference.measured) + " | |")
        }
        for (index, point) in document.points.enumerated() {
            guard let measured = point.measured, let bits = point.averageBits, let effective = point.effectiveBits
            else { continue }
            lines.append(
                String(
                    format: "| point %d%@ | %.3f | %.3f | ", index + 1, point.dominated ? " (dominated)" : "", bits,
                    effective) + cells(measured) + String(format: " | %.5g |", point.objective ?? .nan))
        }
        lines.append("")
        lines.append(
            "\(evaluation.predicted) held-out tokens of \(evaluation.tokensFile); Spearman ρ(predicted loss, ΔNLL) = "
                + (evaluation.spearman.map { String(format: "%.3f", $0) } ?? "undefined")
                + " over \(document.points.filter { $0.measured != nil }.count) points.")
        return lines.joined(separator: "\n")
    }
}
