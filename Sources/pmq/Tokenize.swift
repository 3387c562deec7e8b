import ArgumentParser
import Foundation
import ModelFormat

extension PMQ {
    struct Tokenize: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Turn a text file into a token file (little-endian u32 ids) with the model's tokenizer.json."
        )

        @Option(help: ArgumentHelp("Model directory holding tokenizer.json.", valueName: "dir"))
        var model: String

        @Option(help: ArgumentHelp("UTF-8 text file.", valueName: "file"))
        var text: String

        @Option(help: ArgumentHelp("Output token file.", valueName: "file"))
        var out: String

        func run() throws {
            let tokenizer = try BPETokenizer(path: (model as NSString).appendingPathComponent("tokenizer.json"))
            let data: Data
            do { data = try Data(contentsOf: URL(fileURLWithPath: text)) } catch {
                throw ModelFormatError(file: text, "cannot read: \((error as NSError).localizedDescription)")
            }
            guard let content = String(data: data, encoding: .utf8) else {
                throw ModelFormatError(file: text, "not UTF-8 text")
            }
            let ids = tokenizer.encode(content)
            // Ids the model cannot embed would only fail later, in whatever reads the token file.
            let configPath = (model as NSString).appendingPathComponent("config.json")
            if FileManager.default.fileExists(atPath: configPath) {
                let vocab = try MoEModelConfig.read(directory: model).vocabSize
                if let bad = ids.first(where: { $0 >= vocab }) {
                    throw ModelFormatError(
                        file: (model as NSString).appendingPathComponent("tokenizer.json"),
                        "gives id \(bad), outside config.json's vocab_size \(vocab)")
                }
            }
            try TokenFile.write(ids, to: out)
            print(
                "\(out): \(ids.count) tokens from \(data.count) bytes "
                    + "(\(String(format: "%.2f", Double(data.count) / Double(max(ids.count, 1)))) bytes/token)"
            )
        }
    }
}
