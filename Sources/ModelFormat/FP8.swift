import Foundation

/// Block-scaled FP8 checkpoints, as DeepSeek-V3, R1 and Kimi-K2 are published
/// (`quantization_config = {"quant_method": "fp8", "weight_block_size": [128, 128], …}`): a
/// linear's `weight` is `F8_E4M3` (or `F8_E5M2`) and `weight_scale_inv` holds one scale per
/// block of `weight_block_size` rows × columns, edge blocks partial. The value is
/// `fp8 · weight_scale_inv[row / blockRows, column / blockColumns]` (docs/FORMATS.md §10).
public struct FP8Config: Sendable, Equatable {
    public var blockRows: Int
    public var blockColumns: Int
    public let file: String

    /// nil when `config.json`'s `quantization_config` is absent or not `fp8`.
    public static func read(directory: String) throws -> FP8Config? {
        guard let (path, section) = try QuantizationConfig.section(directory: directory),
            section["quant_method"] as? String == "fp8"
        else { return nil }
        let sizes = (section["weight_block_size"] as? [Any] ?? []).compactMap(SafeTensorsHeader.exactInt)
        guard sizes.count == 2, (section["weight_block_size"] as? [Any])?.count == 2,
            sizes.allSatisfy({ $0 > 0 && $0 <= 1 << 20 })
        else {
            throw ModelFormatError(
                file: path, "quantization_config.weight_block_size: expected two positive integers [rows, columns]")
        }
        if let format = section["fmt"], !(format is NSNull) {
            guard let name = format as? String, ["e4m3", "e5m2"].contains(name) else {
                throw ModelFormatError(file: path, "quantization_config.fmt: expected \"e4m3\" or \"e5m2\"")
            }
        }
        return FP8Config(blockRows: sizes[0], blockColumns: sizes[1], file: path)
    }

    /// The scale tensor's shape for a `[rows, columns]` weight.
    public func scaleShape(rows: Int, columns: Int) -> [Int] {
        [(rows + blockRows - 1) / blockRows, (columns + blockColumns - 1) / blockColumns]
    }

    /// `….weight` → `….weight_scale_inv`.
    public static func scaleName(of weight: String) -> String { weight + "_scale_inv" }

    /// The FP8 weight `name` (`[rows, columns]`) as stored: its codes (valid while `files` is), its
    /// format and its block scales, the scale tensor checked against the block grid.
    public func weight(_ name: String, in files: CheckpointFiles) throws -> (
        codes: UnsafeRawBufferPointer, format: TensorDType, rows: Int, columns: Int, scales: [Float]
    ) {
        guard let file = files.file(containing: name), let info = try? file.info(name), FP8.table(info.dtype) != nil,
            info.shape.count == 2
        else {
            throw ModelFormatError(file: files.description, "\(name) is not a 2-D FP8 tensor")
        }
        let scaleName = Self.scaleName(of: name)
        guard let scaleFile = files.file(containing: scaleName) else {
            throw ModelFormatError(file: files.description, "missing tensor \(scaleName) (the scales of FP8 \(name))")
        }
        let scales = try scaleFile.floats(scaleName, shape: scaleShape(rows: info.shape[0], columns: info.shape[1]))
        return (try file.bytes(name), info.dtype, info.shape[0], info.shape[1], scales)
    }
}

/// FP8 → f32 decoding (OCP 8-bit floating point, as torch's `float8_e4m3fn` and `float8_e5m2`).
public enum FP8 {
    /// E4M3 ("fn": no infinities): bias 7, 0x7F/0xFF are NaN, largest finite 448.
    public static let e4m3: [Float] = (0..<256).map { decode(UInt8($0), exponentBits: 4, bias: 7, ieeeSpecials: false) }
    /// E5M2: IEEE-like, bias 15, exponent 31 is ±∞ or NaN, largest finite 57344.
    public static let e5m2: [Float] = (0..<256).map { decode(UInt8($0), exponentBits: 5, bias: 15, ieeeSpecials: true) }

    /// The table of `dtype` (F8_E4M3 or F8_E5M2).
    public static func table(_ dtype: TensorDType) -> [Float]? {
        switch dtype {
        case .f8e4m3: return e4m3
        case .f8e5m2: return e5m2
        default: return nil
        }
    }

    /// The value of one code, from its sign, exponent and mantissa fields.
    static func decode(_ code: UInt8, exponentBits: Int, bias: Int, ieeeSpecials: Bool) -> Float {
        let mantissaBits = 7 - exponentBits
        let sign: Float = code & 0x80 != 0 ? -1 : 1
        let exponent = Int(code >> UInt8(mantissaBits)) & ((1 << exponentBits) - 1)
        let mantissa = Int(code) & ((1 << mantissaBits) - 1)
        let top = (1 << exponentBits) - 1
        if ieeeSpecials, exponent == top { return mantissa == 0 ? sign * .infinity : .nan }
        if !ieeeSpecials, exponent == top, mantissa == (1 << mantissaBits) - 1 { return .nan }
        let fraction = Float(mantissa) / Float(1 << mantissaBits)
        if exponent == 0 { return sign * fraction * Float(sign: .plus, exponent: 1 - bias, significand: 1) }
        return sign * (1 + fraction) * Float(sign: .plus, exponent: exponent - bias, significand: 1)
    }

    /// `[rows, columns]` FP8 codes times their block's scale, as f32 (row-major). `scales` is
    /// `[⌈rows / blockRows⌉, ⌈columns / blockColumns⌉]`.
    public static func dequantize(
        codes: UnsafeRawBufferPointer, dtype: TensorDType, rows: Int, columns: Int, scales: [Float],
        blockRows: Int, blockColumns: Int
    ) -> [Float] {
        let table = table(dtype)!
        let scaleColumns = (columns + blockColumns - 1) / blockColumns
        precondition(
            codes.count == rows * columns && scales.count == ((rows + blockRows - 1) / blockRows) * scaleColumns)
        return [Float](unsafeUninitializedCapacity: rows * columns) { output, count in
            table.withUnsafeBufferPointer { table in
                for r in 0..<rows {
                    let scaleRow = (r / blockRows) * scaleColumns
                    var c = 0
                    while c < columns {
                        let end = min(c + blockColumns, columns)
                        let scale = scales[scaleRow + c / blockColumns]
                        for i in c..<end { output[r * columns + i] = table[Int(codes[r * columns + i])] * scale }
                        c = end
                    }
                }
            }
            count = rows * columns
        }
    }
}
