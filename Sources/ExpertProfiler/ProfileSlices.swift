import Foundation
import ModelFormat

/// Joins profile slices (`pmq profile run --layers a..<b`) of one model and calibration into one
/// profile: model, widths, group size and calibration must agree, and no layer may be in two slices.
public enum ProfileSlices {
    public static func merge(paths: [String]) throws -> Profile {
        var merged: Profile? = nil
        var seen = Set<Int>()
        for path in paths {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ModelFormatError(file: path, "cannot read")
            }
            let slice: Profile
            try StrictJSON.validate(data, file: path)
            do { slice = try JSONDecoder().decode(Profile.self, from: data) } catch {
                throw ModelFormatError(file: path, "not a pmq profile")
            }
            if let first = merged {
                guard slice.model.name == first.model.name, slice.model.architecture == first.model.architecture,
                    slice.widths == first.widths, slice.groupSize == first.groupSize,
                    slice.calibration.tokens == first.calibration.tokens,
                    slice.calibration.description == first.calibration.description
                else {
                    throw ModelFormatError(
                        file: path, "model, widths, group size or calibration differ from \(paths[0])")
                }
            }
            for layer in slice.layers {
                guard seen.insert(layer.index).inserted else {
                    throw ModelFormatError(file: path, "layer \(layer.index) is in two slices")
                }
            }
            if var joined = merged {
                joined.layers += slice.layers
                joined.seconds = (joined.seconds ?? 0) + (slice.seconds ?? 0) // total work, not elapsed time
                merged = joined
            } else {
                merged = slice
            }
        }
        guard var result = merged else { throw ModelFormatError(file: "profile merge", "no slices to merge") }
        result.layers.sort { $0.index < $1.index }
        return result
    }
}
