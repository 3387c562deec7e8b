import Foundation

extension PackedLinear {
    /// Reads `<prefix>.qweight`, `.qzeros` (absent at width 1), `.scales` and `.g_idx` of one
    /// linear, checking dtypes (I32 words, F16 scales) and shapes against the declared width,
    /// group size and features. Errors name the file and the tensor; nothing in a malformed file
    /// makes it crash.
    public static func read(
        from file: SafeTensorsFile, prefix: String, bits: Int, groupSize: Int,
        outFeatures: Int, inFeatures: Int
    ) throws -> PackedLinear {
        func fail(_ problem: String) -> ModelFormatError { ModelFormatError(file: file.path, problem) }
        guard [1, 2, 3, 4, 8].contains(bits) else {
            throw fail("\(prefix): unsupported width \(bits) (expected 1, 2, 3, 4 or 8)")
        }
        guard outFeatures > 0, inFeatures > 0, (1...PackedLayout.maximumGroupSize).contains(groupSize) else {
            throw fail("\(prefix): bad shape [\(outFeatures), \(inFeatures)] or group size \(groupSize)")
        }
        let layout = PackedLayout(outFeatures: outFeatures, inFeatures: inFeatures, bits: bits, groupSize: groupSize)
        let wordRows = (inFeatures * bits + 31) / 32
        let zeroWords = bits == 1 ? 0 : (outFeatures * bits + 31) / 32

        func tensor<T: FixedWidthInteger>(_ suffix: String, _ dtypes: [TensorDType], _ shape: [Int], as: T.Type) throws
            -> [T]
        {
            let name = "\(prefix).\(suffix)"
            guard let info = file.tensors[name] else { throw fail("tensor \(name) is missing") }
            guard dtypes.contains(info.dtype) else {
                throw fail(
                    "tensor \(name) is \(info.dtype.rawValue), expected "
                        + "\(dtypes.map(\.rawValue).joined(separator: " or "))"
                )
            }
            guard info.shape == shape else {
                throw fail(
                    "tensor \(name) has shape \(info.shape), expected \(shape) for \(bits)-bit [\(outFeatures), "
                        + "\(inFeatures)] with groups of \(groupSize)"
                )
            }
            let raw = try file.bytes(name)
            let count = shape.reduce(1, *)
            guard raw.count == count * MemoryLayout<T>.size else {
                throw fail("tensor \(name) has \(raw.count) bytes, expected \(count * MemoryLayout<T>.size)")
            }
            var values: [T] = HugePages.array(count: count) { UnsafeMutableRawBufferPointer($0).copyMemory(from: raw) }
            for index in values.indices { values[index] = T(littleEndian: values[index]) }
            return values
        }
        let qweight = try tensor("qweight", [.i32, .u32], [wordRows, outFeatures], as: UInt32.self)
        let qzeros: [UInt32]
        if bits == 1 {
            if file.tensors["\(prefix).qzeros"] != nil {
                throw fail("tensor \(prefix).qzeros is present, but width 1 stores none (zero ½)")
            }
            qzeros = []
        } else {
            qzeros = try tensor("qzeros", [.i32, .u32], [layout.groups, zeroWords], as: UInt32.self)
        }
        let scales = try tensor("scales", [.f16], [layout.groups, outFeatures], as: UInt16.self)
        let gIdx = try tensor("g_idx", [.i32], [inFeatures], as: Int32.self)
        let linear = PackedLinear(
            outFeatures: outFeatures, inFeatures: inFeatures, bits: bits, groupSize: groupSize,
            qweight: qweight, qzeros: qzeros, scales: scales, gIdx: gIdx)
        do { try linear.validate() } catch let error as PackedFormatError {
            throw fail("tensor \(prefix).\(error.tensor ?? "qweight"): \(error.problem)")
        }
        return linear
    }
}
