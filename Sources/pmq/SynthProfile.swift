import ArgumentParser
import ModelFormat
import ExpertProfiler

extension PMQ {
    struct SynthProfile: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "synth-profile",
            abstract: "Write a seeded synthetic profile of a real MoE shape (for solver tests and benchmarks).",
            discussion:
                "Shapes: \(SyntheticProfile.shapes.keys.sorted().joined(separator: ", ")). Statistics are drawn, not "
                + "measured; the model name says so."
        )

        @Option(help: "Model shape.")
        var shape: String = "mixtral-8x7b"

        @Option(help: "Random seed.")
        var seed: UInt64 = 1

        @Option(name: .customLong("group-size"), help: "Quantization group size used for the packed sizes.")
        var groupSize: Int = 128

        @Option(help: ArgumentHelp("Output profile JSON.", valueName: "file"))
        var out: String

        func validate() throws {
            guard SyntheticProfile.shapes[shape] != nil else {
                throw ValidationError(
                    "unknown shape '\(shape)' (known: \(SyntheticProfile.shapes.keys.sorted().joined(separator: ", ")))"
                )
            }
            guard (1...PackedLayout.maximumGroupSize).contains(groupSize) else {
                throw ValidationError("--group-size must be 1 to \(PackedLayout.maximumGroupSize)")
            }
        }

        func run() throws {
            let synthetic = SyntheticProfile(shape: SyntheticProfile.shapes[shape]!, seed: seed, groupSize: groupSize)
            try synthetic.document().write(to: out)
            let shape = synthetic.shape
            print(
                "wrote \(out): \(shape.layers) layers × \(shape.experts) experts, widths "
                    + "\(shape.widths.map(String.init).joined(separator: ","))"
            )
        }
    }
}
