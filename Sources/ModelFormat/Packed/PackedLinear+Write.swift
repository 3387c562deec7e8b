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

    /// The values' bytes, little-endian: one copy on a little-endian host (the generic per-element
    /// loop took 40% of writing a packed checkpoint), a byte swap per value otherwise.
    public static func littleEndianData<T: FixedWidthInteger>(_ values: [T]) -> Data {
        if 1.littleEndian == 1 { return values.withUnsafeBytes { Data($0) } }
        return values.map(\.littleEndian).withUnsafeBytes { Data($0) }
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
