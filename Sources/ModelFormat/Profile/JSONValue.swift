import Foundation

/// A parsed JSON document, kept generic so that validation can name the exact field that is
/// wrong (`layers[3].experts[5].error.2`) instead of surfacing a decoder's internal path.
/// The literals `NaN` and `Infinity` are read (by `StrictJSON`) so that they can be rejected by name.
enum JSONValue: Decodable {
    case integer(Int64)
    case number(Double)
    case string(String)
    case bool(Bool)
    case array([JSONValue])
    case object(JSONObject)
    case null

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null; return }
        if let value = try? container.decode(Bool.self) { self = .bool(value); return }
        if let value = try? container.decode(Int64.self) { self = .integer(value); return }
        if let value = try? container.decode(Double.self) { self = .number(value); return }
        if let value = try? container.decode(String.self) { self = .string(value); return }
        if let value = try? container.decode([JSONValue].self) { self = .array(value); return }
        let members = try container.decode([String: JSONValue].self)
        self = .object(JSONObject(members: members.keys.sorted().map { .init(key: $0, value: members[$0]!) }))
    }

    /// A strict JSON document (`StrictJSON`): errors name the file, line and column.
    static func parse(_ data: Data, file: String) throws -> JSONValue {
        try StrictJSON.parse(data, file: file)
    }

    var typeName: String {
        switch self {
        case .integer, .number: return "number"
        case .string: return "string"
        case .bool: return "boolean"
        case .array: return "array"
        case .object: return "object"
        case .null: return "null"
        }
    }
}

/// An object's members in document order (keys are unique: `StrictJSON` refuses duplicates).
/// Objects in pmq's files are small; a linear search beats hashing every key.
struct JSONObject {
    struct Member {
        var key: String
        var value: JSONValue
    }
    var members: [Member] = []

    subscript(key: String) -> JSONValue? {
        for member in members where member.key == key { return member.value }
        return nil
    }
}

/// Where a field sits in its document, rendered only when an error names it (immutable).
final class JSONPath: @unchecked Sendable {
    enum Step {
        case root
        case member(JSONPath, String)
        case element(JSONPath, Int)
    }
    let step: Step
    init(_ step: Step) { self.step = step }
    static let root = JSONPath(.root)

    var text: String {
        switch step {
        case .root: return ""
        case let .member(parent, key):
            let prefix = parent.text
            return prefix.isEmpty ? key : "\(prefix).\(key)"
        case let .element(parent, index): return "\(parent.text)[\(index)]"
        }
    }
}

/// A position in a JSON document together with the file it came from, for error messages.
struct JSONField {
    let value: JSONValue
    let location: JSONPath
    let file: String

    var path: String { location.text }

    /// A document's root (an error names its fields from here).
    init(root value: JSONValue, file: String) {
        self.init(value: value, location: .root, file: file)
    }

    init(value: JSONValue, location: JSONPath, file: String) {
        self.value = value
        self.location = location
        self.file = file
    }

    func fail(_ reason: String) -> ModelFormatError {
        ModelFormatError(file: file, "\(path.isEmpty ? "(document)" : path): \(reason)")
    }

    func child(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// A required member of an object.
    func member(_ key: String) throws -> JSONField {
        guard case let .object(members) = value else { throw fail("expected an object, got \(value.typeName)") }
        guard let found = members[key] else {
            throw ModelFormatError(file: file, "\(child(key)): missing")
        }
        return JSONField(value: found, location: JSONPath(.member(location, key)), file: file)
    }

    /// An optional member of an object (absent or null gives nil).
    func optionalMember(_ key: String) throws -> JSONField? {
        guard case let .object(members) = value else { throw fail("expected an object, got \(value.typeName)") }
        guard let found = members[key] else { return nil }
        if case .null = found { return nil }
        return JSONField(value: found, location: JSONPath(.member(location, key)), file: file)
    }

    func objectMembers() throws -> [(key: String, field: JSONField)] {
        guard case let .object(members) = value else { throw fail("expected an object, got \(value.typeName)") }
        return members.members.sorted { $0.key < $1.key }.map {
            ($0.key, JSONField(value: $0.value, location: JSONPath(.member(location, $0.key)), file: file))
        }
    }

    func elements() throws -> [JSONField] {
        guard case let .array(items) = value else { throw fail("expected an array, got \(value.typeName)") }
        return items.enumerated().map {
            JSONField(value: $1, location: JSONPath(.element(location, $0)), file: file)
        }
    }

    func string() throws -> String {
        guard case let .string(text) = value else { throw fail("expected a string, got \(value.typeName)") }
        return text
    }

    func bool() throws -> Bool {
        guard case let .bool(flag) = value else { throw fail("expected true or false, got \(value.typeName)") }
        return flag
    }

    func integer() throws -> Int64 {
        switch value {
        case let .integer(number): return number
        case let .number(number) where number.isFinite && number == number.rounded() && abs(number) < 9.0e15:
            return Int64(number)
        case let .number(number): throw fail("expected an integer, got \(number)")
        default: throw fail("expected an integer, got \(value.typeName)")
        }
    }

    func double() throws -> Double {
        switch value {
        case let .integer(number): return Double(number)
        case let .number(number): return number
        default: throw fail("expected a number, got \(value.typeName)")
        }
    }

    /// A finite number ≥ 0.
    func nonNegative() throws -> Double {
        let number = try double()
        guard number.isFinite, number >= 0 else { throw fail("must be a finite number ≥ 0, got \(number)") }
        return number
    }
}
