import Foundation

/// A type that writes itself with `PrettyJSONWriter`; `AtomicFile.writeJSON` then uses that instead of
/// encoding it through `Encodable`. The bytes must be those `PrettyJSONEncoder` writes for the value
/// (each conforming type's tests compare the two).
public protocol PrettyJSONWritable {
    func write(to json: inout PrettyJSONWriter) throws
}

/// Writes JSON straight into bytes in `PrettyJSONEncoder`'s form (that of `JSONEncoder` with
/// `.prettyPrinted`, `.sortedKeys` and `.withoutEscapingSlashes`), for documents too large to build
/// as a tree of values first: a 14,848-expert allocation report spent 45 ms in `PrettyJSONEncoder`,
/// a node and a string per value. The caller gives each object's members in sorted key order (a
/// debug build traps otherwise); optional members without a value are left out, as `Encodable` does.
public struct PrettyJSONWriter {
    public private(set) var bytes: [UInt8] = []
    /// Nesting depth of the container being written; its members are indented by 2 × (depth).
    var depth = 0
    /// Whether the container being written has no member or element yet.
    var empty = true
    /// The last key written in each open object (debug builds check the order).
    var lastKeys: [String] = []

    public init(capacity: Int = 1 << 16) { bytes.reserveCapacity(capacity) }

    // MARK: Containers

    public mutating func object(_ body: (inout Self) throws -> Void) rethrows {
        try container(open: UInt8(ascii: "{"), close: UInt8(ascii: "}"), isObject: true, body)
    }

    public mutating func array(_ body: (inout Self) throws -> Void) rethrows {
        try container(open: UInt8(ascii: "["), close: UInt8(ascii: "]"), isObject: false, body)
    }

    /// An array of `items`, each written by `write`.
    public mutating func array<Items: Sequence>(_ items: Items, _ write: (inout Self, Items.Element) throws -> Void)
        rethrows
    {
        try array { json in
            for item in items {
                json.element()
                try write(&json, item)
            }
        }
    }

    mutating func container(open: UInt8, close: UInt8, isObject: Bool, _ body: (inout Self) throws -> Void) rethrows {
        bytes.append(open)
        let outer = empty
        empty = true
        depth += 1
        if isObject { lastKeys.append("") }
        try body(&self)
        if isObject { lastKeys.removeLast() }
        depth -= 1
        // `PrettyJSONEncoder` writes an empty container as its brackets around a blank line.
        if empty { bytes.append(0x0A) }
        bytes.append(0x0A)
        PrettyJSONEncoder.indent(2 * depth, to: &bytes)
        bytes.append(close)
        empty = outer
    }

    /// What comes before a member or an element: a comma after the previous one, a new line, the indent.
    mutating func separator() {
        if !empty { bytes.append(UInt8(ascii: ",")) }
        bytes.append(0x0A)
        PrettyJSONEncoder.indent(2 * depth, to: &bytes)
        empty = false
    }

    /// Starts a member of the object being written; its value is written next.
    public mutating func key(_ name: String) {
        assert(lastKeys.last.map { $0 < name || $0.isEmpty } ?? false, "keys out of order or outside an object")
        if !lastKeys.isEmpty { lastKeys[lastKeys.count - 1] = name }
        separator()
        PrettyJSONEncoder.quote(name, to: &bytes)
        bytes.append(contentsOf: [0x20, UInt8(ascii: ":"), 0x20])
    }

    /// Starts an element of the array being written; its value is written next.
    public mutating func element() { separator() }

    // MARK: Values

    public mutating func value(_ number: Double) throws {
        bytes.append(contentsOf: try PrettyJSONEncoder.number(number).utf8)
    }

    public mutating func value(_ number: Int64) { bytes.append(contentsOf: String(number).utf8) }

    public mutating func value(_ number: Int) { value(Int64(number)) }
    public mutating func value(_ text: String) { PrettyJSONEncoder.quote(text, to: &bytes) }
    public mutating func value(_ flag: Bool) { bytes.append(contentsOf: (flag ? "true" : "false").utf8) }

    // MARK: Members

    public mutating func member(_ name: String, _ number: Double) throws {
        key(name)
        try value(number)
    }
    public mutating func member(_ name: String, _ number: Double?) throws {
        if let number { try member(name, number) }
    }
    public mutating func member(_ name: String, _ number: Int64) {
        key(name)
        value(number)
    }
    public mutating func member(_ name: String, _ number: Int) {
        key(name)
        value(number)
    }
    public mutating func member(_ name: String, _ text: String) {
        key(name)
        value(text)
    }
    public mutating func member(_ name: String, _ text: String?) { if let text { member(name, text) } }
    public mutating func member(_ name: String, _ flag: Bool) {
        key(name)
        value(flag)
    }
    public mutating func member(_ name: String, _ flag: Bool?) { if let flag { member(name, flag) } }
}
