import Foundation

/// One tensor as it goes into a safetensors file: its name, dtype name, shape and little-endian bytes.
public struct StoredTensor: Sendable {
    public var name: String
    public var dtype: String
    public var shape: [Int]
    public var data: Data

    public init(name: String, dtype: String, shape: [Int], data: Data) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.data = data
    }

    public static func littleEndianData<T: FixedWidthInteger>(_ values: [T]) -> Data {
        var data = Data(count: values.count * MemoryLayout<T>.size)
        data.withUnsafeMutableBytes { raw in
            for (index, value) in values.enumerated() {
                raw.storeBytes(of: value.littleEndian, toByteOffset: index * MemoryLayout<T>.size, as: T.self)
            }
        }
        return data
    }
}

extension PackedLinear {
    /// The four GPTQ tensors of one linear (three at width 1).
    public func storedTensors(module: String) throws -> [StoredTensor] {
        do { try validate() } catch let error as PackedFormatError {
            throw PackedFormatError(tensor: "\(module).\(error.tensor ?? "")", error.problem)
        }
        var tensors = [
            StoredTensor(
                name: "\(module).qweight", dtype: "I32", shape: [wordRows, outFeatures],
                data: StoredTensor.littleEndianData(qweight))
        ]
        if bits != 1 {
            tensors.append(
                StoredTensor(
                    name: "\(module).qzeros", dtype: "I32", shape: [groups, zeroWordsPerGroup],
                    data: StoredTensor.littleEndianData(qzeros)))
        }
        tensors.append(
            StoredTensor(
                name: "\(module).scales", dtype: "F16", shape: [groups, outFeatures],
                data: StoredTensor.littleEndianData(scales)))
        tensors.append(
            StoredTensor(
                name: "\(module).g_idx", dtype: "I32", shape: [inFeatures],
                data: StoredTensor.littleEndianData(gIdx.map { UInt32(bitPattern: $0) })))
        return tensors
    }
}
