import Foundation

/// The streaming reader of valid profiles. A DeepSeek-V3-shaped profile (14,848 experts, 7 MB) spent
/// most of `pmq solve` building and walking a document tree; this reads the experts straight from the
/// bytes with the strict parser's own scanners (the same UTF-8, number, duplicate-key and depth rules).
/// It has no error messages: on anything unusual it gives up (nil) and `ProfileReader.parse` runs
/// the tree reader, whose checks name the file and field. What it accepts it reads exactly as the
/// tree reader does (`ProfileStreamingTests` and the fuzzer compare the two).
extension ProfileReader {
    /// The profile, or nil when the tree reader must decide.
    static func fastParse(_ data: Data, file: String) -> Result? {
        data.withUnsafeBytes { raw -> Result? in
            let bytes = raw.bindMemory(to: UInt8.self)
            // Byte-order marks and UTF-16/32 are for the tree reader to refuse.
            guard bytes.count >= 2, bytes[0] != 0, bytes[1] != 0, bytes[0] < 0x80 else { return nil }
            var reader = FastReader(parser: StrictJSON.Parser(bytes: bytes, file: file))
            return try? reader.document()
        }
    }

    /// False when the streaming reader accepts `data` but the tree reader refuses it or reads it
    /// differently (for the fuzzer, which treats that as a failure like a trap).
    public static func streamingAgreesWithTree(_ data: Data) -> Bool {
        guard let fast = fastParse(data, file: "p.json") else { return true }
        guard let tree = try? treeParse(data, file: "p.json") else { return false }
        return fast.profile == tree.profile && fast.warnings == tree.warnings
    }

    /// Thrown to give up; never shown.
    struct GiveUp: Error {}

    struct FastReader {
        var parser: StrictJSON.Parser
        /// The keys of the objects being read, innermost last (one array for the whole document instead
        /// of one per object), as places in the text.
        var keys: [Key] = []
        /// The most widths a width map has had so far (each new map reserves that many).
        var widthCapacity = 0
        var file: String { parser.file }

        mutating func document() throws -> Result {
            var header: [JSONObject.Member] = []
            var raw: [RawLayer]? = nil
            // Keys in any order: the layers are read before the widths are known and checked after.
            try members { reader, key in
                if reader.matches(key, "layers") {
                    raw = try reader.readLayers()
                } else {
                    header.append(.init(key: reader.string(key), value: try reader.value()))
                }
            }
            parser.skipWhitespace()
            guard parser.index == parser.bytes.count, let raw else { throw GiveUp() }
            let root = JSONField(root: .object(JSONObject(members: header)), file: file)
            let head = try readHeader(root, file: file)
            var layers: [Profile.Layer] = []
            var warnings: [String] = []
            for layer in raw {
                let experts = try layer.experts.map { try $0.expert(widths: head.widths) }
                for expert in experts {
                    warnings += growthWarnings(expert, layer: layer.index, widths: head.widths, file: file)
                }
                let sensitivity = try layer.sensitivity.map {
                    try readSensitivity(JSONField(root: $0, file: file), widths: head.widths)
                }
                layers.append(Profile.Layer(index: layer.index, experts: experts, sensitivity: sensitivity))
            }
            let profile = Profile(
                model: head.model, calibration: head.calibration, widths: head.widths, groupSize: head.groupSize,
                layers: layers)
            return Result(profile: profile, warnings: warnings)
        }

        /// One layer as read, before the widths are known.
        struct RawLayer {
            var index: Int
            var experts: [RawExpert]
            var sensitivity: JSONValue?
        }

        /// One expert as read; its width maps are checked against the widths by `expert(widths:)`.
        struct RawExpert {
            var index: Int, params: Int64, freq: Double, mass: Double
            var error: [(width: Int, value: Double)], bytes: [(width: Int, value: Int64)]
            var outputError: [(width: Int, value: Double)]?

            /// The tree reader's checks that need the widths: every map has exactly the profile's widths,
            /// and sizes are 0 for width 0 and 1 to the maximum otherwise.
            func expert(widths: [Int]) throws -> Profile.Expert {
                func exact<Value>(_ map: [(width: Int, value: Value)]) -> Bool {
                    map.count == widths.count && map.allSatisfy { widths.contains($0.width) }
                }
                guard exact(error), exact(bytes), outputError.map(exact) ?? true else { throw GiveUp() }
                for (width, size) in bytes {
                    let valid =
                        width == Profile.removalWidth ? size == 0 : size > 0 && size <= Profile.maximumExpertBytes
                    guard valid else { throw GiveUp() }
                }
                return Profile.Expert(
                    index: index, params: params, freq: freq, mass: mass, error: WidthMap(error),
                    bytes: WidthMap(bytes), outputError: outputError.map { WidthMap($0) })
            }
        }

        mutating func readLayers() throws -> [RawLayer] {
            var layers: [RawLayer] = []
            var seen = Set<Int>()
            try elements { reader in
                var index: Int?, experts: [RawExpert]?, sensitivity: JSONValue?
                var seenExperts = Set<Int>()
                try reader.members { reader, key in
                    if reader.matches(key, "index") {
                        index = try reader.integer()
                    } else if reader.matches(key, "experts") {
                        var list: [RawExpert] = []
                        try reader.elements { reader in
                            let expert = try reader.readExpert()
                            guard seenExperts.insert(expert.index).inserted else { throw GiveUp() }
                            list.append(expert)
                        }
                        experts = list
                    } else if reader.matches(key, "sensitivity") {
                        let value = try reader.value()
                        if case .null = value { sensitivity = nil } else { sensitivity = value }
                    } else {
                        _ = try reader.value()
                    }
                }
                guard let index, index >= 0, let experts, !experts.isEmpty, seen.insert(index).inserted else {
                    throw GiveUp()
                }
                layers.append(RawLayer(index: index, experts: experts, sensitivity: sensitivity))
            }
            guard !layers.isEmpty else { throw GiveUp() }
            return layers
        }

        mutating func readExpert() throws -> RawExpert {
            var index: Int?, params: Int64?, freq: Double?, mass: Double?
            var error: [(width: Int, value: Double)]?, bytes: [(width: Int, value: Int64)]?
            var outputError: [(width: Int, value: Double)]?
            try members { reader, key in
                if reader.matches(key, "index") {
                    index = try reader.integer()
                } else if reader.matches(key, "params") {
                    params = try reader.integer64()
                } else if reader.matches(key, "freq") {
                    freq = try reader.nonNegative()
                } else if reader.matches(key, "mass") {
                    mass = try reader.nonNegative()
                } else if reader.matches(key, "error") {
                    error = try reader.widthMap { try $0.nonNegative() }
                } else if reader.matches(key, "bytes") {
                    bytes = try reader.widthMap { try $0.integer64() }
                } else if reader.matches(key, "outputError") {
                    if reader.nextIs(UInt8(ascii: "n")) {
                        guard case .null = try reader.value() else { throw GiveUp() }
                        outputError = nil
                    } else {
                        outputError = try reader.widthMap { try $0.nonNegative() }
                    }
                } else {
                    _ = try reader.value()
                }
            }
            guard let index, index >= 0, let params, params > 0, params <= Profile.maximumExpertParameters,
                let freq, let mass, let error, let bytes
            else { throw GiveUp() }
            return RawExpert(
                index: index, params: params, freq: freq, mass: mass, error: error, bytes: bytes,
                outputError: outputError)
        }

        // MARK: Values, as `JSONField` reads them

        /// Any value, read strictly into a tree.
        mutating func value() throws -> JSONValue {
            parser.skipWhitespace()
            return try parser.parseValue()
        }

        mutating func scalar() throws -> JSONValue {
            parser.skipWhitespace()
            guard parser.index < parser.bytes.count,
                parser.bytes[parser.index] != UInt8(ascii: "{"), parser.bytes[parser.index] != UInt8(ascii: "[")
            else { throw GiveUp() }
            return try parser.parseValue()
        }

        /// `JSONField.integer`.
        mutating func integer64() throws -> Int64 {
            switch try scalar() {
            case let .integer(number): return number
            case let .number(number) where number.isFinite && number == number.rounded() && abs(number) < 9.0e15:
                return Int64(number)
            default: throw GiveUp()
            }
        }

        mutating func integer() throws -> Int { Int(try integer64()) }

        /// `JSONField.nonNegative`.
        mutating func nonNegative() throws -> Double {
            let number: Double
            switch try scalar() {
            case let .integer(value): number = Double(value)
            case let .number(value): number = value
            default: throw GiveUp()
            }
            guard number.isFinite, number >= 0 else { throw GiveUp() }
            return number
        }

        /// An object of width keys (`Int(key)`), in document order. Two spellings of one width ("3", "03")
        /// are for the tree reader to judge. Each map is allocated for as many widths as the largest so far.
        mutating func widthMap<Value>(_ value: (inout Self) throws -> Value) throws -> [(width: Int, value: Value)] {
            var map: [(width: Int, value: Value)] = []
            map.reserveCapacity(widthCapacity)
            try members { reader, key in
                guard let width = reader.width(key), !map.contains(where: { $0.width == width }) else {
                    throw GiveUp()
                }
                map.append((width, try value(&reader)))
            }
            widthCapacity = max(widthCapacity, map.count)
            return map
        }

        // MARK: Structure

        func nextIs(_ byte: UInt8) -> Bool {
            var probe = parser
            probe.skipWhitespace()
            return probe.index < probe.bytes.count && probe.bytes[probe.index] == byte
        }

        mutating func expect(_ byte: UInt8) throws {
            parser.skipWhitespace()
            guard parser.index < parser.bytes.count, parser.bytes[parser.index] == byte else { throw GiveUp() }
            parser.index += 1
        }

        /// A key as it stands in the text, between its quotes: plain printable ASCII, so its bytes are its
        /// characters. Keys with escapes or other characters are for the tree reader.
        struct Key {
            var start: Int
            var count: Int
        }

        /// The key at the parser (its opening quote), read without making a string.
        mutating func key() throws -> Key {
            guard let end = parser.plainStringEnd() else { throw GiveUp() }
            let key = Key(start: parser.index + 1, count: end - parser.index - 1)
            parser.index = end + 1
            return key
        }

        @inline(__always)
        func matches(_ key: Key, _ name: StaticString) -> Bool {
            key.count == name.utf8CodeUnitCount
                && memcmp(parser.bytes.baseAddress! + key.start, name.utf8Start, key.count) == 0
        }

        func same(_ a: Key, _ b: Key) -> Bool {
            a.count == b.count
                && memcmp(parser.bytes.baseAddress! + a.start, parser.bytes.baseAddress! + b.start, a.count) == 0
        }

        func string(_ key: Key) -> String {
            String(
                decoding: UnsafeBufferPointer(rebasing: parser.bytes[key.start..<(key.start + key.count)]),
                as: UTF8.self)
        }

        /// A width key: one to four decimal digits (what `Int` reads them as); nil for any other key.
        func width(_ key: Key) -> Int? {
            guard (1...4).contains(key.count) else { return nil }
            var value = 0
            for position in key.start..<(key.start + key.count) {
                let digit = parser.bytes[position] &- UInt8(ascii: "0")
                guard digit < 10 else { return nil }
                value = value * 10 + Int(digit)
            }
            return value
        }

        /// The members of an object, in order; `body` reads each value. Keys must be unique.
        mutating func members(_ body: (inout Self, Key) throws -> Void) throws {
            try expect(UInt8(ascii: "{"))
            try parser.enter()
            let base = keys.count
            defer {
                parser.depth -= 1
                keys.removeLast(keys.count - base)
            }
            parser.skipWhitespace()
            if parser.index < parser.bytes.count, parser.bytes[parser.index] == UInt8(ascii: "}") {
                parser.index += 1
                return
            }
            while true {
                parser.skipWhitespace()
                guard parser.index < parser.bytes.count, parser.bytes[parser.index] == UInt8(ascii: "\"") else {
                    throw GiveUp()
                }
                let key = try key()
                for earlier in keys[base...] where same(earlier, key) { throw GiveUp() }
                keys.append(key)
                try expect(UInt8(ascii: ":"))
                try body(&self, key)
                parser.skipWhitespace()
                guard parser.index < parser.bytes.count else { throw GiveUp() }
                let byte = parser.bytes[parser.index]
                parser.index += 1
                if byte == UInt8(ascii: ",") { continue }
                guard byte == UInt8(ascii: "}") else { throw GiveUp() }
                return
            }
        }

        /// The elements of an array, in order; `body` reads each.
        mutating func elements(_ body: (inout Self) throws -> Void) throws {
            try expect(UInt8(ascii: "["))
            try parser.enter()
            defer { parser.depth -= 1 }
            parser.skipWhitespace()
            if parser.index < parser.bytes.count, parser.bytes[parser.index] == UInt8(ascii: "]") {
                parser.index += 1
                return
            }
            while true {
                try body(&self)
                parser.skipWhitespace()
                guard parser.index < parser.bytes.count else { throw GiveUp() }
                let byte = parser.bytes[parser.index]
                parser.index += 1
                if byte == UInt8(ascii: ",") { continue }
                guard byte == UInt8(ascii: "]") else { throw GiveUp() }
                return
            }
        }
    }
}
