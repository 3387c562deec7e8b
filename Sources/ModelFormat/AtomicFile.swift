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
    public static func write(_ data: Data, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let temporary = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).\(ProcessInfo.processInfo.processIdentifier).tmp")
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

    public static func write(_ text: String, to path: String) throws {
        try write(Data(text.utf8), to: path)
    }

    /// Pretty-printed JSON (keys sorted, `/` not escaped) with a trailing newline.
    public static func writeJSON<T: Encodable>(_ value: T, to path: String) throws {
        var data: Data
        do {
            data = try PrettyJSONEncoder.encode(value)
        } catch is PrettyJSONEncoder.Unsupported {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            data = try encoder.encode(value)
        }
        data.append(0x0A)
        try write(data, to: path)
    }
}
