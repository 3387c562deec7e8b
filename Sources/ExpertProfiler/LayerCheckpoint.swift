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
        try PackedLinear.writeLayer(linears, to: referencePath(layer, width: width))
    }

    func loadReference(layer: Int, width: Int? = nil) throws -> [String: PackedLinear]? {
        let path = referencePath(layer, width: width)
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        return try PackedLinear.readLayer(from: path)
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }
}
