import ArgumentParser
import ExpertProfiler
import Foundation
import ModelFormat
import MoERuntime

extension PruningCalibration.Target: ExpressibleByArgument {}

extension PMQ {
    struct OTP: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "otp",
            abstract: "Online Top-any Pruning: learned per-layer gates that choose which of the router's top-k experts run.",
            subcommands: [OTPTrain.self]
        )
    }

    struct OTPTrain: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "train",
            abstract: "Train the OTP gates of a (packed) model on calibration tokens and store them in the model directory.",
            discussion: """
            Layer by layer: the calibration windows run through the layer with every top-k expert; each \
            token's MoE input, routing and expert outputs train the layer's gate (Gumbel-Softmax, \
            straight-through, annealed temperature, seeded) to match the full top-k output while keeping \
            --keep of the top-k slots; the layer then runs again with its gate. The ODP baseline's \
            threshold is calibrated per layer to the same fraction. Both go to DIR/pruning.safetensors; \
            `pmq eval --prune otp|odp` uses them.
            """
        )

        @Option(help: ArgumentHelp("Model directory (packed or float); the gates are written into it.", valueName: "dir"))
        var model: String

        @Option(help: ArgumentHelp("Calibration token file (little-endian u32).", valueName: "file"))
        var calib: String

        @Option(help: "Fraction of the router's top-k slots to run (top-2 with 0.8: 1.6 experts per token).")
        var keep: Double = 0.8

        @Option(help: "Calibration windows.")
        var samples: Int = 32

        @Option(name: .customLong("seq-len"), help: "Tokens per window.")
        var seqLen: Int = 512

        @Option(help: "Training epochs over each layer's calibration tokens.")
        var epochs: Int = 20

        @Option(help: ArgumentHelp("What the gate's loss compares: the MoE output (output) or its first-order effect on the next-token distribution through the residual stream's path to the head (logits).", valueName: "output|logits"))
        var target: PruningCalibration.Target = .output

        @Option(help: "Seed of the Gumbel noise and minibatch order.")
        var seed: UInt64 = 0

        @Flag(help: "No progress on stderr.")
        var quiet = false

        func validate() throws {
            guard keep > 0, keep <= 1 else { throw ValidationError("--keep must be in (0, 1]") }
            guard samples >= 1, seqLen >= 2, epochs >= 1 else { throw ValidationError("--samples, --epochs must be ≥ 1 and --seq-len ≥ 2") }
        }

        func run() throws {
            let loaded = try FloatModel(directory: model, lazy: true)
            let file = try TokenFile(path: calib)
            try file.validate(vocabSize: loaded.config.vocabSize)
            let training = OTPTrainingOptions(keep: keep, epochs: epochs, seed: seed)
            let calibration = PruningCalibration(model: loaded, options: .init(sequenceLength: seqLen, samples: samples, training: training,
                                                                                         target: target))
            let progress = StagedProgress("otp", quiet: quiet)
            let output = try calibration.run(tokens: file.tokens, progress: progress.update)
            progress.finish()
            let metadata = ["format": "pmq-pruning", "version": "1", "keep": String(keep), "seed": String(seed),
                            "calibration": "\(calib): \(output.calibrationTokens) tokens", "epochs": String(epochs),
                            "target": target.rawValue]
            try PruningFile.write(otp: output.otp, odp: output.odp, oracleThresholds: output.oracleThresholds, config: loaded.config, metadata: metadata, directory: model)
            print("\(model)/\(PruningFile.fileName): OTP gates and ODP thresholds for \(output.reports.count) layers, keep \(keep), \(output.calibrationTokens) calibration tokens, \(String(format: "%.1f", output.seconds)) s")
            print("layer  kept (OTP)  loss OTP   loss ODP   ODP β")
            for (layer, report) in output.reports.sorted(by: { $0.key < $1.key }) {
                print(String(format: "%-6d %-11.3f %-10.4f %-10.4f %.3f", layer, report.keptFraction, report.meanLoss, report.odpMeanLoss, report.odpBeta))
            }
        }
    }
}
