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
        /// of one per object).
        var keys: [String] = []
        var file: String { parser.file }

        mutating func document() throws -> Result {
            var header: [JSONObject.Member] = []
            var raw: [RawLayer]? = nil
            // Keys in any order: the layers are read before the widths are known and checked after.
            try members { reader, key in
                if key == "layers" {
                    raw = try reader.readLayers()
                } else {
                    header.append(.init(key: key, value: try reader.value()))
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
                    switch key {
                    case "index": index = try reader.integer()
                    case "experts":
                        var list: [RawExpert] = []
                        try reader.elements { reader in
                            let expert = try reader.readExpert()
                            guard seenExperts.insert(expert.index).inserted else { throw GiveUp() }
                            list.append(expert)
                        }
                        experts = list
                    case "sensitivity":
                        let value = try reader.value()
                        if case .null = value { sensitivity = nil } else { sensitivity = value }
                    default: _ = try reader.value()
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
                switch key {
                case "index": index = try reader.integer()
                case "params": params = try reader.integer64()
                case "freq": freq = try reader.nonNegative()
                case "mass": mass = try reader.nonNegative()
                case "error": error = try reader.widthMap { try $0.nonNegative() }
                case "bytes": bytes = try reader.widthMap { try $0.integer64() }
                case "outputError":
                    if reader.nextIs(UInt8(ascii: "n")) {
                        guard case .null = try reader.value() else { throw GiveUp() }
                        outputError = nil
                    } else {
                        outputError = try reader.widthMap { try $0.nonNegative() }
                    }
                default: _ = try reader.value()
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
        /// are for the tree reader to judge.
        mutating func widthMap<Value>(_ value: (inout Self) throws -> Value) throws -> [(width: Int, value: Value)] {
            var map: [(width: Int, value: Value)] = []
            try members { reader, key in
                guard let width = Int(key), !map.contains(where: { $0.width == width }) else { throw GiveUp() }
                map.append((width, try value(&reader)))
            }
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

        /// The members of an object, in order; `body` reads each value. Keys must be unique.
        mutating func members(_ body: (inout Self, String) throws -> Void) throws {
            try expect(UInt8(ascii: "{"))
            try parser.enter()
            let base = keys.count
            defer {
                parser.depth -= 1
                keys.removeSubrange(base...)
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
                let key = try parser.parseString()
                guard !keys[base...].contains(key) else { throw GiveUp() }
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
