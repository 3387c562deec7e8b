import ArgumentParser
import Foundation
import ModelFormat
import QuantEngine

extension PMQ {
    struct Assemble: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Build a packed model from a quantization cache (pmq profile --cache) without running GPTQ.",
            discussion: """
                Reads each expert at its allocated width from the cache and writes the packed checkpoint that \
                `pmq quantize --float-propagation` writes for the same allocation and calibration, byte for \
                byte. The cache must have been made from this model with the allocation's profile's calibration \
                and group size. The output directory appears whole or not at all.
                """
        )

        @Option(help: ArgumentHelp("Hugging Face model directory (float).", valueName: "dir"))
        var model: String

        @Option(help: ArgumentHelp("Allocation report from `pmq solve` (pmq-allocation v1).", valueName: "file"))
        var allocation: String

        @Option(help: ArgumentHelp("Quantization cache folder from `pmq profile --cache`.", valueName: "dir"))
        var cache: String

        @Flag(name: .customLong("keep-f32"), help: "Keep f32 non-expert tensors in f32 (default: bf16).")
        var keepF32 = false

        @Option(help: ArgumentHelp("Output directory (must not exist).", valueName: "dir"))
        var out: String

        func run() throws {
            let start = ContinuousClock.now
            // Checked under the lock: a run killed after its output was in place left only the lock file.
            let lock = try OutputPaths.claim(out, folder: true)
            defer { lock.release() }
            guard !FileManager.default.fileExists(atPath: out) else { throw ValidationError("\(out) already exists") }
            let config = try MoEModelConfig.read(directory: model)
            if let quantization = try QuantizationConfig.read(directory: model) {
                throw ModelFormatError(file: quantization.file, "the model is already quantized; name the float model")
            }
            let plan = try AllocationPlan.read(path: allocation)
            try plan.validate(against: config, file: allocation)
            let opened = try QuantizationCache.open(directory: cache)
            try CacheAssembly.check(
                opened, modelDirectory: model, config: config, groupSize: plan.groupSize, calibration: plan.calibration,
                source: allocation)
            let output = try CacheAssembly.output(plan: plan, config: config, cache: opened)
            let written = try PackedModelExport.write(
                sourceDirectory: model, output: output, allocationReport: allocation,
                actOrder: opened.fingerprint.actOrder, keepF32: keepF32, to: out)
            print(
                "\(out): \(output.linears.count) expert linears from \(cache), average "
                    + "\(String(format: "%.3f", plan.averageBits)) bits"
                    + (plan.removedExperts.isEmpty
                        ? "" : ", \(plan.removedExperts.values.reduce(0) { $0 + $1.count }) experts removed"))
            print(
                String(
                    format: "expert bytes %d (effective %.3f bits), model files %.2f MB, %.2f s", written.expertBytes,
                    written.effectiveBits, Double(written.totalBytes) / 1e6, seconds(since: start)))
        }
    }
}
