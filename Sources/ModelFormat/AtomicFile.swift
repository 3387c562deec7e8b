import Foundation

/// An output file could not be written. No partial file is left behind.
public struct FileWriteError: Error, LocalizedError, Equatable {
    public var file: String
    public var reason: String
    public init(file: String, reason: String) {
        self.file = file
        self.reason = reason
    }
    public var errorDescription: String? { "\(file): cannot write: \(reason)" }
}

/// Writes a file whole or not at all: a temporary file beside the target, then a rename.
public enum AtomicFile {
    /// The temporary a writer of `path` uses beside it: `.NAME.PID@HOST.tmp` (docs/FORMATS.md, "Outputs").
    public static func temporaryURL(for path: String) -> URL {
        let url = URL(fileURLWithPath: path)
        return url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).\(OutputPaths.ownerTag).tmp")
    }

    public static func write(_ data: Data, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let temporary = temporaryURL(for: path)
        do {
            try data.write(to: temporary, options: [])
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            throw FileWriteError(file: path, reason: (error as NSError).localizedDescription)
        }
        if rename(temporary.path, url.path) != 0 {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: temporary)
            throw FileWriteError(file: path, reason: reason)
        }
    }

    /// Writes `data` at `path` whole unless a file is there already, even one another process
    /// publishes at the same moment: the temporary is hard-linked to `path` (link(2) refuses an
    /// existing name), so the first writer's file stays. Returns false when another was first.
    /// Where the file system has no hard links, falls back to `write` (last writer wins). Threads of
    /// one process take turns, as they share the temporary's name.
    @discardableResult
    public static func create(_ data: Data, at path: String) throws -> Bool {
        try creating.withLock { try createAlone(data, at: path) }
    }

    private static let creating = NSLock()

    private static func createAlone(_ data: Data, at path: String) throws -> Bool {
        let url = URL(fileURLWithPath: path)
        let temporary = temporaryURL(for: path)
        defer { unlink(temporary.path) }
        do {
            try data.write(to: temporary, options: [])
        } catch {
            throw FileWriteError(file: path, reason: (error as NSError).localizedDescription)
        }
        if link(temporary.path, url.path) == 0 { return true }
        switch errno {
        case EEXIST: return false
        case EPERM, EOPNOTSUPP, EXDEV, EMLINK:
            if FileManager.default.fileExists(atPath: url.path) { return false }
            guard rename(temporary.path, url.path) == 0 else {
                throw FileWriteError(file: path, reason: String(cString: strerror(errno)))
            }
            return true
        default: throw FileWriteError(file: path, reason: String(cString: strerror(errno)))
        }
    }

    public static func write(_ text: String, to path: String) throws {
        try write(Data(text.utf8), to: path)
    }

    /// Pretty-printed JSON (keys sorted, `/` not escaped) with a trailing newline.
    public static func writeJSON<T: Encodable>(_ value: T, to path: String) throws {
        try write(try jsonData(value), to: path)
    }

    /// The bytes `writeJSON` writes: through the value's own `PrettyJSONWritable` writer where it has
    /// one, else through `PrettyJSONEncoder`, else (for what that does not handle) `JSONEncoder`.
    public static func jsonData<T: Encodable>(_ value: T) throws -> Data {
        var data: Data
        do {
            if let writable = value as? any PrettyJSONWritable {
                var writer = PrettyJSONWriter()
                try writable.write(to: &writer)
                data = Data(writer.bytes)
            } else {
                data = try PrettyJSONEncoder.encode(value)
            }
        } catch is PrettyJSONEncoder.Unsupported {
            data = try foundationEncoder().encode(value)
        }
        data.append(0x0A)
        return data
    }

    /// Foundation's encoder set up as `writeJSON` writes (what `PrettyJSONEncoder` matches).
    public static func foundationEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}
