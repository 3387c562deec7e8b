import ArgumentParser
import ExpertProfiler
import Foundation
import ModelFormat
import MoERuntime

extension PMQ {
    struct Profile: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Measure every expert: routing frequency and mass, and GPTQ output error at each candidate width.",
            discussion: "Writes a pmq-profile v1 file that `pmq solve` reads unchanged."
        )

        @Option(help: ArgumentHelp("Hugging Face model directory.", valueName: "dir"))
        var model: String

        @Option(help: ArgumentHelp("Calibration token file (little-endian u32).", valueName: "file"))
        var calib: String

        @Option(help: "Calibration windows.")
        var samples: Int = 128

        @Option(name: .customLong("seq-len"), help: "Tokens per window.")
        var seqLen: Int = 512

        @Option(help: ArgumentHelp("Candidate widths.", valueName: "w,w,…"), transform: parseWidths)
        var widths: [Int] = [1, 2, 3]

        @Option(name: .customLong("group-size"), help: "Quantization group size (input columns).")
        var groupSize: Int = 128

        @Option(help: ArgumentHelp("Output profile JSON.", valueName: "file"))
        var out: String

        @Flag(help: "No progress on stderr.")
        var quiet = false

        func validate() throws {
            guard samples >= 1, seqLen >= 2 else { throw ValidationError("--samples must be ≥ 1 and --seq-len ≥ 2") }
            guard groupSize >= 1 else { throw ValidationError("--group-size must be ≥ 1") }
            for width in widths where ![1, 2, 3, 4, 8].contains(width) {
                throw ValidationError("--widths: \(width) is not one of 1, 2, 3, 4, 8")
            }
        }

        func run() throws {
            let loaded = try FloatModel(directory: model)
            let file = try TokenFile(path: calib)
            try file.validate(vocabSize: loaded.config.vocabSize)
            let profiler = Profiler(model: loaded, options: .init(widths: widths, groupSize: groupSize, sequenceLength: seqLen, samples: samples))
            var progress: (stage: String, bar: Progress)? = nil
            let document = try profiler.run(tokens: file.tokens, description: "\(calib): \(samples) windows of \(seqLen) tokens") { stage, done, total in
                if progress?.stage != stage {
                    progress?.bar.finish()
                    progress = (stage, Progress("profile: \(stage)", quiet: quiet))
                }
                progress?.bar.update(done: done, total: total, detail: "")
            }
            progress?.bar.finish()
            try document.write(to: out)
            let experts = document.layers.reduce(0) { $0 + $1.experts.count }
            let unreached = document.layers.flatMap(\.experts).filter { $0.tokens == 0 }.count
            print("\(out): \(document.layers.count) MoE layers, \(experts) experts, widths \(widths.map(String.init).joined(separator: ",")), \(document.calibration.tokens) calibration tokens\(unreached > 0 ? ", \(unreached) experts never routed to" : "")")
        }
    }
}
