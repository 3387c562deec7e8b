import Foundation

/// Token files (docs/FORMATS.md §6): raw little-endian `u32` token ids, no header (`.u32`). The byte count must be a
/// multiple of 4; ids are checked against the model's vocabulary by `validate(vocabSize:)`.
public struct TokenFile: Sendable {
    public let path: String
    public let tokens: [Int]

    public init(path: String) throws {
        self.path = path
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
            throw ModelFormatError(file: path, "cannot read: \((error as NSError).localizedDescription)")
        }
        guard data.count % 4 == 0 else {
            throw ModelFormatError(file: path, "\(data.count) bytes is not a whole number of u32 tokens")
        }
        guard !data.isEmpty else { throw ModelFormatError(file: path, "no tokens") }
        tokens = data.withUnsafeBytes { raw in
            (0..<(raw.count / 4)).map {
                Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)))
            }
        }
    }

    public func validate(vocabSize: Int) throws {
        if let index = tokens.firstIndex(where: { $0 >= vocabSize }) {
            throw ModelFormatError(
                file: path, "token \(index) is id \(tokens[index]), outside the model's vocabulary of \(vocabSize)")
        }
    }

    public static func write(_ tokens: [Int], to path: String) throws {
        var data = Data(capacity: tokens.count * 4)
        for token in tokens {
            precondition(token >= 0 && token <= Int(UInt32.max))
            withUnsafeBytes(of: UInt32(token).littleEndian) { data.append(contentsOf: $0) }
        }
        try AtomicFile.write(data, to: path)
    }
}
