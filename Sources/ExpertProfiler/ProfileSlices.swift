import Foundation
import ModelFormat

/// Joins profile slices (`pmq profile run --layers a..<b`) into one profile. Each slice measured
/// its own layers completely, sensitivity included, so the merge of any slicing is the profile a
/// single run writes (timings aside). Slices must come from one checkpoint (model digest), one
/// calibration (fingerprint) and one set of settings, and their layer ranges must tile the model's
/// decoder layers: no overlap, no gap. Every refusal names the slice files concerned.
public enum ProfileSlices {
    /// Slice `index` of `count`: the model's MoE layers cut into `count` contiguous runs whose
    /// sizes differ by at most one; the slices' decoder-layer ranges tile the whole model.
    public struct Slice: Sendable, Equatable {
        public var index: Int
        public var count: Int
        public init(index: Int, count: Int) {
            self.index = index
            self.count = count
        }

        public func layers(of config: MoEModelConfig) throws -> Range<Int> {
            let moe = (0..<config.layerCount).filter { config.moeLayers[$0] }
            guard count <= moe.count else {
                throw ModelFormatError(
                    file: "--slice", "\(count) slices of a model with \(moe.count) MoE layers: at most one per layer")
            }
            // Slice i holds MoE layers [i·M/N, (i+1)·M/N); its range starts at its first MoE layer
            // (0 for the first slice) and ends where the next slice starts (the model's end for the last).
            func start(_ slice: Int) -> Int {
                slice == 0 ? 0 : slice == count ? config.layerCount : moe[slice * moe.count / count]
            }
            return start(index)..<start(index + 1)
        }
    }

    static func read(_ path: String) throws -> Profile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ModelFormatError(file: path, "cannot read")
        }
        try StrictJSON.validate(data, file: path)
        do { return try JSONDecoder().decode(Profile.self, from: data) } catch {
            throw ModelFormatError(file: path, "not a pmq profile")
        }
    }

    public static func merge(paths: [String]) throws -> Profile {
        guard !paths.isEmpty else { throw ModelFormatError(file: "profile merge", "no slices to merge") }
        var slices: [(path: String, profile: Profile, profiling: Profile.Profiling, range: Range<Int>)] = []
        for path in paths {
            let slice = try read(path)
            guard let profiling = slice.profiling, let range = profiling.layerRange else {
                throw ModelFormatError(
                    file: path,
                    "profiling: missing or without a valid layer range (a synthetic profile, or one from an older "
                        + "pmq: profile the slice again)")
            }
            if let first = slices.first {
                let pair = "\(first.path) and \(path)"
                if let difference = first.profiling.difference(from: profiling) {
                    throw ModelFormatError(file: pair, "slices of different runs: \(difference)")
                }
                let fields: [(String, String, String)] = [
                    ("model.architecture", first.profile.model.architecture, slice.model.architecture),
                    ("widths", "\(first.profile.widths)", "\(slice.widths)"),
                    ("groupSize", "\(first.profile.groupSize)", "\(slice.groupSize)"),
                    ("calibration.tokens", "\(first.profile.calibration.tokens)", "\(slice.calibration.tokens)"),
                    (
                        "calibration.fingerprint", first.profile.calibration.fingerprint ?? "none",
                        slice.calibration.fingerprint ?? "none"
                    ),
                ]
                if let field = fields.first(where: { $0.1 != $0.2 }) {
                    throw ModelFormatError(
                        file: pair, "slices of different runs: \(field.0): \(field.1) against \(field.2)")
                }
            }
            for layer in slice.layers where !range.contains(layer.index) {
                throw ModelFormatError(
                    file: path, "layer \(layer.index) is outside the slice's profiling.layers \(profiling.layers)")
            }
            slices.append((path, slice, profiling, range))
        }
        // The ranges must tile 0..<decoderLayers.
        let ordered = slices.sorted { $0.range.lowerBound < $1.range.lowerBound }
        var next = 0
        for (position, slice) in ordered.enumerated() {
            if slice.range.lowerBound < next {
                throw ModelFormatError(
                    file: "\(ordered[position - 1].path) and \(slice.path)",
                    "slices overlap: layers \(ordered[position - 1].range) and \(slice.range)")
            }
            if slice.range.lowerBound > next {
                throw ModelFormatError(
                    file: slice.path, "layers \(next)..<\(slice.range.lowerBound) are in no slice (a slice is missing)")
            }
            next = slice.range.upperBound
        }
        let decoderLayers = ordered[0].profiling.decoderLayers
        if next < decoderLayers {
            throw ModelFormatError(
                file: ordered.last!.path,
                "layers \(next)..<\(decoderLayers) of the model's \(decoderLayers) are in no slice (a slice is missing)"
            )
        }
        var merged = ordered[0].profile
        merged.layers = ordered.flatMap(\.profile.layers).sorted { $0.index < $1.index }
        // Total work, not elapsed time.
        merged.seconds = ordered.reduce(0) { $0 + ($1.profile.seconds ?? 0) }
        merged.profiling?.layers = [0, decoderLayers]
        return merged
    }
}
