import Foundation

/// Writes a safetensors file: tensors in the order added, header keys sorted, the header padded
/// with spaces to a multiple of 8 bytes (as the reference writer does), written atomically.
public struct SafeTensorsWriter {
    private var entries: [(name: String, dtype: TensorDType, shape: [Int], data: Data)] = []
    public var metadata: [String: String] = [:]

    public init() {}

    public mutating func add(_ name: String, dtype: TensorDType, shape: [Int], data: Data) throws {
        let elements = shape.reduce(1, *)
        guard elements * dtype.byteSize == data.count else {
            throw ModelFormatError(
                file: name,
                "tensor data is \(data.count) bytes, shape \(shape) × \(dtype.rawValue) needs "
                    + "\(elements * dtype.byteSize)"
            )
        }
        guard name != "__metadata__", !entries.contains(where: { $0.name == name }) else {
            throw ModelFormatError(file: name, "tensor name used twice")
        }
        entries.append((name, dtype, shape, data))
    }

    public mutating func add(_ name: String, shape: [Int], floats: [Float]) throws {
        var data = Data(capacity: floats.count * 4)
        for value in floats { withUnsafeBytes(of: value.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
        try add(name, dtype: .f32, shape: shape, data: data)
    }

    public func serialized() throws -> Data {
        var header: [String: Any] = [:]
        var offset = 0
        for entry in entries {
            header[entry.name] =
                [
                    "dtype": entry.dtype.rawValue, "shape": entry.shape,
                    "data_offsets": [offset, offset + entry.data.count],
                ] as [String: Any]
            offset += entry.data.count
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(UInt8(ascii: " ")) }
        var file = Data(capacity: 8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(json)
        for entry in entries { file.append(entry.data) }
        return file
    }

    public func write(to path: String) throws {
        try AtomicFile.write(try serialized(), to: path)
    }
}
