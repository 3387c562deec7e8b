import Foundation

extension QuantizationCache {
    /// Joins the caches that profile slices wrote into separate folders (`pmq profile merge
    /// --cache OUT --slice-cache A --slice-cache B …`): every source must have the same
    /// fingerprint, and an entry present in two sources must be byte-identical. Entries are
    /// hard-linked when the file system allows it, copied otherwise; each lands atomically.
    /// Returns the target cache (opened as it is when there are no sources) and the entries added.
    public static func merge(sources: [String], into target: String) throws -> (cache: QuantizationCache, added: Int) {
        let caches = try sources.map { try open(directory: $0) }
        guard let first = caches.first else { return (try open(directory: target), 0) }
        for cache in caches.dropFirst() {
            if let difference = first.fingerprint.difference(from: cache.fingerprint) {
                throw ModelFormatError(
                    file: "\(first.directory) and \(cache.directory)", "slice caches of different runs: \(difference)")
            }
        }
        let merged = try openOrCreate(
            directory: target, fingerprint: first.fingerprint, modelDirectory: first.modelDirectory)
        var added = 0
        for cache in caches
        where URL(fileURLWithPath: cache.directory).standardizedFileURL
            != URL(fileURLWithPath: target).standardizedFileURL
        {
            for (layer, width) in try cache.entries() {
                let source = cache.entryPath(layer: layer, width: width)
                let destination = merged.entryPath(layer: layer, width: width)
                if FileManager.default.fileExists(atPath: destination) {
                    guard FileManager.default.contentsEqual(atPath: source, andPath: destination) else {
                        throw ModelFormatError(
                            file: source, "differs from \(destination): two slices quantized layer \(layer) apart")
                    }
                    continue
                }
                let folder = (destination as NSString).deletingLastPathComponent
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
                let staging = AtomicFile.temporaryURL(for: destination).path
                try? FileManager.default.removeItem(atPath: staging)
                if link(source, staging) != 0 {
                    do { try FileManager.default.copyItem(atPath: source, toPath: staging) } catch {
                        throw FileWriteError(file: destination, reason: (error as NSError).localizedDescription)
                    }
                }
                guard rename(staging, destination) == 0 else {
                    let reason = String(cString: strerror(errno))
                    try? FileManager.default.removeItem(atPath: staging)
                    throw FileWriteError(file: destination, reason: reason)
                }
                added += 1
            }
        }
        return (merged, added)
    }

    /// The (layer, width) entries present, from the folder names `layer-L/W-bit.safetensors`.
    public func entries() throws -> [(layer: Int, width: Int)] {
        var found: [(layer: Int, width: Int)] = []
        for folder in try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        where folder.hasPrefix("layer-") {
            guard let layer = Int(folder.dropFirst("layer-".count)) else { continue }
            let names = try FileManager.default.contentsOfDirectory(atPath: directory + "/" + folder).sorted()
            for name in names where !name.hasPrefix(".") && name.hasSuffix("-bit.safetensors") {
                if let width = Int(name.dropLast("-bit.safetensors".count)) { found.append((layer, width)) }
            }
        }
        return found
    }

    /// Refuses the cache for a profile it was not made with, or when it lacks one of the
    /// profile's layers at one of its widths (naming the first missing entry).
    public func check(covers profile: Profile) throws {
        if let calibration = profile.calibration.fingerprint, calibration != fingerprint.calibration {
            throw ModelFormatError(
                file: manifestPath, "made for another calibration set (\(fingerprint.calibration), not \(calibration))")
        }
        if let digest = profile.profiling?.modelDigest, digest != fingerprint.model {
            throw ModelFormatError(file: manifestPath, "made for another model (\(fingerprint.model), not \(digest))")
        }
        guard profile.groupSize == fingerprint.groupSize else {
            throw ModelFormatError(
                file: manifestPath, "made for group size \(fingerprint.groupSize), not \(profile.groupSize)")
        }
        for layer in profile.layers {
            for width in profile.widths where width != Profile.removalWidth {
                guard contains(layer: layer.index, width: width) else {
                    throw ModelFormatError(
                        file: manifestPath,
                        "has no entry for layer \(layer.index) at \(width) bits (a slice's cache "
                            + "is missing: name it with --slice-cache)")
                }
            }
        }
    }
}
