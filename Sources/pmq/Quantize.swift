import ArgumentParser
import Foundation
import MoERuntime
import ModelFormat
import QuantEngine

extension PMQ {
    struct Quantize: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "GPTQ-quantize every expert at its allocated width and write a packed mixed-precision model.",
            discussion: """
                Layer by layer: the calibration windows run through the layer, each expert's Hessians are \
                gathered from the tokens routed to it, its gate, up and down projections are GPTQ-quantized at \
                the allocation's width and packed (GPTQ tensor layout, see docs/PACKED_FORMAT.md), and the \
                layer's quantized experts feed the next layer's calibration. Other tensors are kept at 16 bits. \
                The output directory appears whole or not at all.
                """
        )

        @Option(help: ArgumentHelp("Hugging Face model directory (float).", valueName: "dir"))
        var model: String

        @Option(help: ArgumentHelp("Allocation report from `pmq solve` (pmq-allocation v1).", valueName: "file"))
        var allocation: String?

        @Option(help: ArgumentHelp("Instead of an allocation: every expert at this width.", valueName: "bits"))
        var uniform: Int?

        @Option(
            name: .customLong("group-size"), help: "Group size with --uniform (an allocation carries its profile's).")
        var groupSize: Int = 128

        @OptionGroup var calibration: CalibrationOptions

        @Flag(
            name: .customLong("float-propagation"),
            help: "Calibrate every layer on the float model's hidden states instead of the quantized layers' output.")
        var floatPropagation = false

        @Flag(name: .customLong("keep-f32"), help: "Keep f32 non-expert tensors in f32 (default: bf16).")
        var keepF32 = false

        @Option(help: ArgumentHelp("Output directory (must not exist).", valueName: "dir"))
        var out: String

        @Flag(help: "No progress on stderr.")
        var quiet = false

        func validate() throws {
            guard (allocation == nil) != (uniform == nil) else {
                throw ValidationError("give exactly one of --allocation and --uniform")
            }
            if let uniform, ![1, 2, 3, 4, 8].contains(uniform) {
                throw ValidationError("--uniform must be one of 1, 2, 3, 4, 8")
            }
            guard (1...PackedLayout.maximumGroupSize).contains(groupSize) else {
                throw ValidationError("--group-size must be 1 to \(PackedLayout.maximumGroupSize)")
            }
        }

        func run() throws {
            // Checked under the lock: a run killed after its output was in place left only the lock file.
            let lock = try OutputPaths.claim(out, folder: true)
            defer { lock.release() }
            guard !FileManager.default.fileExists(atPath: out) else { throw ValidationError("\(out) already exists") }
            let loaded = try MoEModel(directory: model, lazy: true)
            guard loaded.quantization == nil else {
                throw ModelFormatError(file: model, "is already quantized; quantize the float model")
            }
            let plan: AllocationPlan
            if let allocation {
                plan = try AllocationPlan.read(path: allocation)
                try plan.validate(against: loaded.config, file: allocation)
            } else {
                plan = AllocationPlan.uniform(bits: uniform!, config: loaded.config, groupSize: groupSize)
            }
            let file = try TokenFile(path: calibration.calib)
            try file.validate(vocabSize: loaded.config.vocabSize)
            let quantizer = ModelQuantizer(
                model: loaded,
                options: .init(
                    sequenceLength: calibration.seqLen, samples: calibration.samples,
                    dampening: calibration.dampening, actOrder: calibration.actOrder,
                    clipSearch: calibration.clip,
                    propagateQuantized: !floatPropagation))
            let progress = StagedProgress("quantize", quiet: quiet)
            let output = try quantizer.run(tokens: file.tokens, plan: plan, progress: progress.update)
            progress.finish()
            let written = try PackedModelExport.write(
                sourceDirectory: model, output: output, allocationReport: allocation,
                actOrder: calibration.actOrder, keepF32: keepF32, to: out)
            let counts = Dictionary(grouping: plan.widths.values.flatMap(\.values), by: { $0 }).mapValues(\.count)
            let widths = counts.sorted { $0.key < $1.key }
                .map { $0.key == 0 ? "\($0.value) removed" : "\($0.value)×\($0.key)-bit" }.joined(separator: ", ")
            print(
                "\(out): \(output.linears.count) expert linears packed; experts \(widths), average "
                    + "\(String(format: "%.3f", plan.averageBits)) bits"
            )
            print(
                String(
                    format: "expert bytes %d (effective %.3f bits), model files %.2f MB, %.1f s", written.expertBytes,
                    written.effectiveBits, Double(written.totalBytes) / 1e6, output.seconds))
        }
    }
}
