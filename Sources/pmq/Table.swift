import ArgumentParser
import Foundation
import ModelFormat

extension PMQ {
    struct Table: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One table from several `pmq eval --json` results, or of a measured front (Markdown).",
            discussion:
                "Each row is LABEL=FILE. Columns: held-out perplexity, expert bytes, average and effective bits of "
                + "the experts, experts run per token, decode tokens/s. With --front FILE (a front.json of "
                + "`pmq sweep --evaluate`): the float model, the uniform-width models and every point, measured."
        )

        @Argument(help: ArgumentHelp("Rows: LABEL=eval.json.", valueName: "label=file"))
        var rows: [String] = []

        @Option(help: ArgumentHelp("A measured front.json (pmq sweep --evaluate) to tabulate.", valueName: "file"))
        var front: String?

        func validate() throws {
            guard rows.isEmpty != (front == nil) else { throw ValidationError("give rows or --front, not both") }
        }

        @Option(help: ArgumentHelp("Also write the table here.", valueName: "file"))
        var out: String?

        struct Row: Decodable {
            var perplexity: Double
            var expertBytes: Int
            var averageBits: Double
            var effectiveBits: Double
            var expertsPerToken: Double
            var decodeTokensPerSecond: Double
            var tokens: Int
        }

        func run() throws {
            if let front {
                let table = try Self.frontTable(path: front)
                print(table)
                if let out { try AtomicFile.write(Data((table + "\n").utf8), to: out) }
                return
            }
            var lines = [
                "| configuration | perplexity | expert bytes | avg bits | effective bits | experts/token | decode "
                    + "tok/s |",
                "|---|---:|---:|---:|---:|---:|---:|",
            ]
            var tokens: Set<Int> = []
            for spec in rows {
                guard let split = spec.firstIndex(of: "=") else {
                    throw ValidationError("row '\(spec)' is not LABEL=FILE")
                }
                let label = String(spec[..<split]), path = String(spec[spec.index(after: split)...])
                guard let data = FileManager.default.contents(atPath: path) else {
                    throw ModelFormatError(file: path, "cannot read")
                }
                let row: Row
                try StrictJSON.validate(data, file: path)
                do { row = try JSONDecoder().decode(Row.self, from: data) } catch {
                    throw ModelFormatError(file: path, "not a `pmq eval --json` result (\(error))")
                }
                tokens.insert(row.tokens)
                lines.append(
                    String(
                        format: "| %@ | %.3f | %@ | %.3f | %.3f | %.3f | %@ |", label, row.perplexity,
                        Self.grouped(row.expertBytes), row.averageBits, row.effectiveBits, row.expertsPerToken,
                        row.decodeTokensPerSecond > 0 ? String(format: "%.1f", row.decodeTokensPerSecond) : "–"))
            }
            if tokens.count > 1 {
                printError("warning: the rows were evaluated on different token counts \(tokens.sorted())")
            }
            let table = lines.joined(separator: "\n")
            print(table)
            if let out { try AtomicFile.write(Data((table + "\n").utf8), to: out) }
        }

        static func grouped(_ value: Int) -> String {
            let digits = String(value)
            var result = ""
            for (position, character) in digits.enumerated() {
                if position > 0 && (digits.count - position) % 3 == 0 { result.append(",") }
                result.append(character)
            }
            return result
        }
    }
}
