import ArgumentParser
import ExpertProfiler
import Foundation
import MoERuntime
import ModelFormat

extension PMQ {
    struct Profile: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Measure every expert (profile run, the default) or join slices (profile merge).",
            subcommands: [ProfileRun.self, ProfileMerge.self],
            defaultSubcommand: ProfileRun.self
        )
    }

    struct ProfileRun: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "run",
            abstract:
                "Measure every expert: routing frequency and mass, and GPTQ output error at each candidate width.",
            discussion: """
                Writes a pmq-profile v1 file that `pmq solve` reads unchanged. Layer by layer; each finished \
                layer is saved in OUT.partial/, and a rerun with the same inputs continues after the last \
                finished layer. --layers 4..<8 profiles a slice, sensitivity included (join slices with `pmq profile \
                merge`: the result is the profile one run writes).
                """
        )

        @Option(help: ArgumentHelp("Hugging Face model directory.", valueName: "dir"))
        var model: String

        @OptionGroup var calibration: CalibrationOptions

        @Option(help: ArgumentHelp("Candidate widths.", valueName: "w,w,…"), transform: parseWidths)
        var widths: [Int] = [1, 2, 3]

        @Option(name: .customLong("group-size"), help: "Quantization group size (input columns).")
        var groupSize: Int = 128

        @Option(help: ArgumentHelp("Output profile JSON.", valueName: "file"))
        var out: String

        @Option(
            help: ArgumentHelp("Profile only these decoder layers, e.g. 4..<8 (default: all).", valueName: "a..<b"),
            transform: parseLayerRange)
        var layers: Range<Int>?

        @Option(
            help: ArgumentHelp(
                "Profile slice I of N (0-based): the MoE layers split into N contiguous, even runs (for a Slurm "
                    + "array: --slice $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT).", valueName: "I/N"),
            transform: parseSlice)
        var slice: ProfileSlices.Slice?

        @Option(
            name: .customLong("sensitivity-windows"),
            help: "Calibration windows for the layer-sensitivity stage (0: skip it; a slice measures its own layers).")
        var sensitivityWindows: Int = 32

        @Option(
            name: .customLong("sensitivity-width"),
            help: ArgumentHelp(
                "Width each layer is quantized at to measure its sensitivity (default: the smallest candidate "
                    + "≥ 2)."))
        var sensitivityWidth: Int?

        @Option(
            name: .customLong("output-samples"),
            help: "Routed tokens sampled per expert to measure its routing-weighted output error (0: skip it).")
        var outputSamples: Int = 512

        @Flag(
            name: .customLong("no-sensitivity-curve"),
            help: "Measure each layer's sensitivity at the reference width only, not at every width.")
        var noSensitivityCurve = false

        @Option(
            help: ArgumentHelp(
                "Keep every expert's GPTQ result at every width in this folder (for `pmq assemble` and "
                    + "`pmq sweep --evaluate`).", valueName: "dir"))
        var cache: String?

        @Flag(help: "No progress on stderr.")
        var quiet = false

        func validate() throws {
            guard layers == nil || slice == nil else { throw ValidationError("give --layers or --slice, not both") }
            guard sensitivityWindows >= 0 else { throw ValidationError("--sensitivity-windows must be ≥ 0") }
            guard outputSamples >= 0 else { throw ValidationError("--output-samples must be ≥ 0") }
            if let sensitivityWidth, !widths.contains(sensitivityWidth) {
                throw ValidationError("--sensitivity-width must be one of --widths")
            }
            guard (1...PackedLayout.maximumGroupSize).contains(groupSize) else {
                throw ValidationError("--group-size must be 1 to \(PackedLayout.maximumGroupSize)")
            }
            for width in widths where ![0, 1, 2, 3, 4, 8].contains(width) {
                throw ValidationError("--widths: \(width) is not one of 0 (removal), 1, 2, 3, 4, 8")
            }
            guard widths.contains(where: { $0 != 0 }) else {
                throw ValidationError("--widths must name a width other than 0")
            }
        }

        func run() throws {
            // The output is checked and locked before any work: two runs never share OUT.partial/.
            let lock = try OutputPaths.claim(out, folder: false)
            defer { lock.release() }
            // Lazy: one layer's weights in memory at a time.
            let loaded = try MoEModel(directory: model, lazy: true)
            let file = try TokenFile(path: calibration.calib)
            try file.validate(vocabSize: loaded.config.vocabSize)
            let profiler = Profiler(
                model: loaded,
                options: .init(
                    widths: widths, groupSize: groupSize, sequenceLength: calibration.seqLen,
                    samples: calibration.samples, dampening: calibration.dampening,
                    actOrder: calibration.actOrder, clipSearch: calibration.clip,
                    sensitivityWindows: sensitivityWindows, sensitivityWidth: sensitivityWidth,
                    outputSamples: outputSamples, sensitivityCurve: !noSensitivityCurve))
            let progress = StagedProgress("profile", quiet: quiet)
            let partial = out + ".partial"
            let layers = try slice.map { try $0.layers(of: loaded.config) } ?? self.layers
            let document = try profiler.run(
                tokens: file.tokens,
                description: "\(calibration.calib): \(calibration.samples) windows of \(calibration.seqLen) tokens",
                layers: layers, checkpointDirectory: partial, cacheDirectory: cache, progress: progress.update)
            progress.finish()
            try document.write(to: out)
            try? FileManager.default.removeItem(atPath: partial)
            let experts = document.layers.reduce(0) { $0 + $1.experts.count }
            let unreached = document.layers.flatMap(\.experts).filter { $0.tokens == 0 }.count
            print(
                "\(out): \(document.layers.count) MoE layers, \(experts) experts, widths "
                    + "\(widths.map(String.init).joined(separator: ",")), \(document.calibration.tokens) calibration "
                    + "tokens\(unreached > 0 ? ", \(unreached) experts never routed to" : "")"
            )
            if let cache {
                let bytes = (try? QuantizationCache.open(directory: cache))?.byteCount ?? 0
                print(String(format: "%@: quantization cache, %.2f MB", cache, Double(bytes) / 1e6))
            }
        }
    }
}

func parseSlice(_ text: String) throws -> ProfileSlices.Slice {
    let (index, count) = try parsePartOfCount(text, option: "--slice")
    return ProfileSlices.Slice(index: index, count: count)
}

/// `I/N` (0 ≤ I < N ≤ 65536): one task of an array, for `--slice` and `--shard`.
func parsePartOfCount(_ text: String, option: String) throws -> (index: Int, count: Int) {
    let parts = text.split(separator: "/", omittingEmptySubsequences: false)
    guard parts.count == 2, let index = Int(parts[0]), let count = Int(parts[1]), (1...65_536).contains(count),
        (0..<count).contains(index)
    else {
        throw ValidationError("\(option): '\(text)' is not I/N with 0 ≤ I < N ≤ 65536")
    }
    return (index, count)
}

func parseLayerRange(_ text: String) throws -> Range<Int> {
    let parts = text.components(separatedBy: "..<")
    guard parts.count == 2, let low = Int(parts[0]), let high = Int(parts[1]), low >= 0, low < high else {
        throw ValidationError("--layers: '\(text)' is not a range like 4..<8")
    }
    return low..<high
}

extension PMQ {
    struct ProfileMerge: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "merge",
            abstract: "Join profile slices (from `profile run --slice/--layers`) into the profile one run writes.",
            discussion: """
                The slices must come from one checkpoint, calibration set and settings, and their layer ranges \
                must tile the model (no overlap, no gap); a refusal names the slice files. With --cache, the \
                quantization cache is checked to hold every layer at every width: slices that wrote into one \
                shared cache folder need nothing more; caches written to separate folders are joined into \
                --cache first (--slice-cache, repeated).
                """
        )

        @Argument(help: "Slice profiles.")
        var slices: [String]

        @Option(help: ArgumentHelp("Output profile JSON.", valueName: "file"))
        var out: String

        @Option(
            help: ArgumentHelp(
                "The merged quantization cache (checked, or joined from --slice-cache).", valueName: "dir"))
        var cache: String?

        @Option(
            name: .customLong("slice-cache"),
            help: ArgumentHelp("A slice's own quantization cache, joined into --cache.", valueName: "dir"))
        var sliceCaches: [String] = []

        func validate() throws {
            guard !slices.isEmpty else { throw ValidationError("name at least one slice") }
            guard sliceCaches.isEmpty || cache != nil else { throw ValidationError("--slice-cache needs --cache") }
        }

        func run() throws {
            let lock = try OutputPaths.claim(out, folder: false)
            defer { lock.release() }
            let merged = try ProfileSlices.merge(paths: slices)
            if let cache {
                let (joined, added) = try QuantizationCache.merge(sources: sliceCaches, into: cache)
                try joined.check(covers: merged)
                if !sliceCaches.isEmpty {
                    print("\(cache): \(added) entries joined from \(sliceCaches.count) slice caches")
                }
            }
            try merged.write(to: out)
            print("\(out): \(merged.layers.count) layers from \(slices.count) slices")
        }
    }
}
