import Foundation
import ModelFormat

/// Finished layers of a profiling run, one JSON file each, so that a killed run continues after
/// the last finished layer. `run.txt` holds the run's fingerprint; a directory made by a
/// different run (other model, widths, tokens…) is refused rather than mixed in.
struct LayerCheckpoint {
    let directory: String

    init(directory: String, fingerprint: String) throws {
        self.directory = directory
        let marker = directory + "/run.txt"
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw FileWriteError(file: directory, reason: (error as NSError).localizedDescription)
        }
        if let existing = try? String(contentsOfFile: marker, encoding: .utf8) {
            guard existing == fingerprint else {
                throw ModelFormatError(
                    file: directory, "holds layers of a different profiling run (\(existing)); delete it to start over")
            }
        } else {
            try AtomicFile.write(fingerprint, to: marker)
        }
    }

    func path(_ layer: Int) -> String { "\(directory)/layer-\(layer).json" }

    func load(layer: Int) throws -> Profile.Layer? {
        guard let data = FileManager.default.contents(atPath: path(layer)) else { return nil }
        do {
            return try JSONDecoder().decode(Profile.Layer.self, from: data)
        } catch {
            throw ModelFormatError(file: path(layer), "unreadable saved layer (delete it to recompute): \(error)")
        }
    }

    func save(_ layer: Profile.Layer) throws {
        try AtomicFile.writeJSON(layer, to: path(layer.index))
    }

    /// The reference width's file, or another width's (`width`, for the loss curve).
    func referencePath(_ layer: Int, width: Int? = nil) -> String {
        "\(directory)/layer-\(layer)-" + (width.map { "\($0)bit" } ?? "reference") + ".safetensors"
    }

    /// The layer's expert linears at the sensitivity reference width (or at `width`), keyed by module name.
    func saveReference(layer: Int, width: Int? = nil, linears: [String: PackedLinear]) throws {
        var writer = SafeTensorsWriter()
        for (module, linear) in linears.sorted(by: { $0.key < $1.key }) {
            for tensor in try linear.storedTensors(module: module) {
                try writer.add(
                    tensor.name, dtype: TensorDType(rawValue: tensor.dtype)!, shape: tensor.shape, data: tensor.data)
            }
            writer.metadata[module] = "\(linear.bits) \(linear.groupSize) \(linear.outFeatures) \(linear.inFeatures)"
        }
        try writer.write(to: referencePath(layer, width: width))
    }

    func loadReference(layer: Int, width: Int? = nil) throws -> [String: PackedLinear]? {
        let path = referencePath(layer, width: width)
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let file = try SafeTensorsFile(path: path)
        var linears: [String: PackedLinear] = [:]
        for (module, shape) in file.metadata {
            let numbers = shape.split(separator: " ").compactMap { Int($0) }
            guard numbers.count == 4 else {
                throw ModelFormatError(file: path, "metadata for \(module) is not 'bits group out in'")
            }
            linears[module] = try PackedLinear.read(
                from: file, prefix: module, bits: numbers[0], groupSize: numbers[1],
                outFeatures: numbers[2], inFeatures: numbers[3])
        }
        return linears
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }
}
