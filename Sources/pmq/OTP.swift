import ArgumentParser
import Foundation
import MoERuntime
import ModelFormat
import OTPTraining

extension PruningCalibration.Target: ExpressibleByArgument {}
extension PruningCalibration.Budget: ExpressibleByArgument {}

extension PMQ {
    struct OTP: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "otp",
            abstract:
                "Online Top-any Pruning: learned per-layer gates that choose which of the router's top-k experts run.",
            subcommands: [OTPTrain.self, OTPProbe.self]
        )
    }

    struct OTPTrain: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "train",
            abstract:
                "Train the OTP gates of a (packed) model on calibration tokens and store them in the model directory.",
            discussion: """
                Default (--target nll): the calibration windows run through the whole model once; for every \
                token, MoE layer and top-k slot after the first, the drop of that one expert is replayed \
                through the later layers (each token alone, in one batched pass) and its effect on the \
                log-likelihood of the real next token recorded. Each layer's gate (Gumbel-Softmax, \
                straight-through, annealed temperature, seeded) learns to drop where that damage is small; \
                with --budget global the fraction --keep holds over the whole model, and layers where drops \
                cost less give up more experts. --target output|logits instead train layer by layer against \
                the full top-k MoE output (or its first-order effect on the logits), each layer keeping \
                --keep. The ODP baseline's threshold is calibrated per layer to --keep. Everything goes to \
                DIR/pruning.safetensors; `pmq eval --prune otp|odp` uses it.
                """
        )

        @Option(
            help: ArgumentHelp("Model directory (packed or float); the gates are written into it.", valueName: "dir"))
        var model: String

        @Option(help: ArgumentHelp("Calibration token file (little-endian u32).", valueName: "file"))
        var calib: String

        @Option(help: "Fraction of the router's top-k slots to run (top-2 with 0.8: 1.6 experts per token).")
        var keep: Double = 0.8

        @Option(help: "Calibration windows (at most what the file holds).")
        var samples: Int = 128

        @Option(name: .customLong("seq-len"), help: "Tokens per window.")
        var seqLen: Int = 512

        @Option(
            name: .customLong("held-out"),
            help: ArgumentHelp(
                "nll/kl/expected: fraction of the calibration windows (the last ones) kept out of training, on "
                    + "which each gate is checked against ODP and the model-wide budget is spread.",
                valueName: "fraction"))
        var heldOut: Double = 0

        @Option(help: "Training epochs over each layer's calibration tokens.")
        var epochs: Int = 20

        @Option(
            help: ArgumentHelp(
                "What the gate learns to spare: each drop's measured effect on the real next token's log-likelihood "
                    + "through every later layer (nll), or on the next-token distribution (kl); expected: gates "
                    + "from kl, the layers' budget from nll; the MoE output "
                    + "(output); its first-order effect on the logits (logits).",
                valueName: "nll|kl|expected|output|logits"))
        var target: PruningCalibration.Target = .nll

        @Option(
            help: ArgumentHelp(
                "Where --keep holds: over the whole model, spread by measured damage (global; nll/kl only, their "
                    + "default), or in every layer (layer; the default for output/logits).",
                valueName: "global|layer"))
        var budget: PruningCalibration.Budget?

        @Option(help: "Seed of the Gumbel noise and minibatch order.")
        var seed: UInt64 = 0

        @Flag(help: "No progress on stderr.")
        var quiet = false

        func validate() throws {
            guard keep > 0, keep <= 1 else { throw ValidationError("--keep must be in (0, 1]") }
            guard heldOut >= 0, heldOut < 1 else { throw ValidationError("--held-out must be in [0, 1)") }
            guard samples >= 1, seqLen >= 2, epochs >= 1 else {
                throw ValidationError("--samples, --epochs must be ≥ 1 and --seq-len ≥ 2")
            }
            if budget == .global, !target.isEndToEnd {
                throw ValidationError(
                    "--budget global needs --target nll, kl or expected (output and logits losses are not comparable "
                        + "across layers)"
                )
            }
        }

        var effectiveBudget: PruningCalibration.Budget { budget ?? (target.isEndToEnd ? .global : .layer) }

        func run() throws {
            let loaded = try MoEModel(directory: model, lazy: true)
            let file = try TokenFile(path: calib)
            try file.validate(vocabSize: loaded.config.vocabSize)
            let training = OTPTrainingOptions(keep: keep, epochs: epochs, seed: seed)
            var options = PruningCalibration.Options(
                sequenceLength: seqLen, samples: samples, training: training, target: target, budget: effectiveBudget)
            options.heldOut = heldOut
            let calibration = PruningCalibration(model: loaded, options: options)
            let progress = StagedProgress("otp", quiet: quiet)
            let output = try calibration.run(tokens: file.tokens, progress: progress.update)
            progress.finish()
            let metadata = [
                "keep": String(keep), "seed": String(seed),
                "calibration": "\(calib): \(output.calibrationTokens) tokens", "epochs": String(epochs),
                "target": target.rawValue, "budget": effectiveBudget.rawValue,
            ]
            try PruningFile.write(
                otp: output.otp, odp: output.odp, oracleThresholds: output.oracleThresholds,
                odpMatched: output.odpMatched, config: loaded.config, metadata: metadata, directory: model)
            print(
                "\(model)/\(PruningFile.fileName): OTP gates and ODP thresholds for \(output.reports.count) layers, "
                    + "keep \(keep), \(output.calibrationTokens) calibration tokens, "
                    + "\(String(format: "%.1f", output.seconds)) s"
            )
            // Losses are means over the calibration tokens of the layer, in the target's unit
            // (relative to the mean |damage| of dropping everything for end-to-end targets).
            print("layer  kept (OTP)  loss OTP   loss ODP   ODP β   loss ODP at OTP's fraction")
            for (layer, report) in output.reports.sorted(by: { $0.key < $1.key }) {
                let matched = report.odpMatchedMeanLoss.map { String(format: "%.4f", $0) } ?? "-"
                print(
                    String(
                        format: "%-6d %-11.3f %-10.4f %-10.4f %-7.3f %@", layer, report.keptFraction, report.meanLoss,
                        report.odpMeanLoss,
                        report.odpBeta, matched))
            }
        }
    }

    struct OTPProbe: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "probe",
            abstract:
                "Which layers can spare an expert: drop the extra top-k experts of a random fraction of tokens, one "
                + "layer at a time.",
            discussion: """
                For each MoE layer in turn, the calibration windows run with the experts after the top-1 \
                dropped for a seeded random --rate of the tokens in that layer only, and the effect on every \
                position is measured: the mean KL of the next-token distributions and the mean change in \
                the real next tokens' negative log-likelihood (ΔNLL, positive = worse).
                """
        )

        @Option(help: ArgumentHelp("Model directory (packed or float).", valueName: "dir"))
        var model: String

        @Option(help: ArgumentHelp("Calibration token file (little-endian u32).", valueName: "file"))
        var calib: String

        @Option(help: "Fraction of tokens whose extra experts are dropped.")
        var rate: Double = 0.2

        @Option(help: "Calibration windows.")
        var samples: Int = 16

        @Option(name: .customLong("seq-len"), help: "Tokens per window.")
        var seqLen: Int = 512

        @Option(help: "Seed of the random drops.")
        var seed: UInt64 = 0

        @Flag(help: "No progress on stderr.")
        var quiet = false

        func validate() throws {
            guard rate > 0, rate <= 1 else { throw ValidationError("--rate must be in (0, 1]") }
            guard samples >= 1, seqLen >= 2 else {
                throw ValidationError("--samples must be ≥ 1 and --seq-len ≥ 2")
            }
        }

        func run() throws {
            let loaded = try MoEModel(directory: model, lazy: true)
            let file = try TokenFile(path: calib)
            try file.validate(vocabSize: loaded.config.vocabSize)
            let progress = StagedProgress("otp probe", quiet: quiet)
            let layers = try RandomDropProbe.run(
                model: loaded, tokens: file.tokens, samples: samples, sequenceLength: seqLen, rate: rate,
                seed: seed, progress: progress.update)
            progress.finish()
            print(
                "layer  drops    mean KL (nats)  mean ΔNLL (nats)   over \(layers.first?.positions ?? 0) positions, "
                    + "rate \(rate)"
            )
            for layer in layers {
                print(
                    String(
                        format: "%-6d %-8d %-15.5f %+.5f", layer.layer, layer.drops, layer.meanKL, layer.meanDeltaNLL))
            }
        }
    }
}
