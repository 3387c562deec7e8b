/// bf16/f16/f32 → f32 conversion of raw little-endian tensor bytes. bf16 is the top half of an
/// f32; f16 goes through Swift's Float16 (hardware conversion where the CPU has it).
public enum FloatConversion {
    public static func toFloat32(
        _ raw: UnsafeRawBufferPointer, dtype: TensorDType, into output: UnsafeMutableBufferPointer<Float>
    ) {
        switch dtype {
        case .f32:
            let count = min(raw.count / 4, output.count)
            for index in 0..<count {
                output[index] = Float(
                    bitPattern: raw.loadUnaligned(fromByteOffset: 4 * index, as: UInt32.self).littleEndian)
            }
        case .bf16:
            let count = min(raw.count / 2, output.count)
            for index in 0..<count {
                let bits = raw.loadUnaligned(fromByteOffset: 2 * index, as: UInt16.self).littleEndian
                output[index] = Float(bitPattern: UInt32(bits) << 16)
            }
        case .f16:
            let count = min(raw.count / 2, output.count)
            for index in 0..<count {
                output[index] = Float(
                    float16Bits: raw.loadUnaligned(fromByteOffset: 2 * index, as: UInt16.self).littleEndian)
            }
        default:
            preconditionFailure("not a floating-point dtype: \(dtype)")
        }
    }
}

extension Float {
    /// f32 → bf16 bits with nearest-even rounding; NaN stays a (quiet) NaN. How a packed checkpoint
    /// stores f32 tensors, and how the measured sweep rounds them in memory to run as it would.
    public var bfloat16Bits: UInt16 {
        let bits = bitPattern
        if isNaN { return UInt16(bits >> 16) | 0x40 }
        let rounding = 0x7FFF + ((bits >> 16) & 1)
        return UInt16((bits &+ rounding) >> 16)
    }

    /// IEEE half → single, written out so it needs no Float16 support from the platform.
    public init(float16Bits bits: UInt16) {
        let sign = UInt32(bits & 0x8000) << 16
        let exponent = Int((bits >> 10) & 0x1F)
        var mantissa = UInt32(bits & 0x3FF)
        if exponent == 0x1F {
            self = Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13)) // inf / nan
        } else if exponent == 0 {
            if mantissa == 0 { self = Float(bitPattern: sign); return } // ±0
            var shift: UInt32 = 0 // subnormal: normalise
            while mantissa & 0x400 == 0 { mantissa <<= 1; shift += 1 }
            mantissa &= 0x3FF
            self = Float(bitPattern: sign | ((113 - shift) << 23) | (mantissa << 13))
        } else {
            self = Float(bitPattern: sign | (UInt32(exponent + 112) << 23) | (mantissa << 13))
        }
    }

    /// Single → IEEE half bits, nearest even; overflow gives ±infinity, NaN stays NaN.
    public var float16Bits: UInt16 {
        let x = bitPattern
        let sign = UInt16((x >> 16) & 0x8000)
        let exponent = Int((x >> 23) & 0xFF)
        let mantissa = x & 0x7F_FFFF
        if exponent == 0xFF { return sign | 0x7C00 | (mantissa != 0 ? 0x200 : 0) }
        let e = exponent - 127 + 15
        if e >= 0x1F { return sign | 0x7C00 }
        if e <= 0 {
            if e < -10 { return sign } // below half the smallest subnormal: ±0
            let full = mantissa | 0x80_0000
            let shift = UInt32(14 - e)
            var half = full >> shift
            let remainder = full & ((1 << shift) - 1), halfway = UInt32(1) << (shift - 1)
            if remainder > halfway || (remainder == halfway && half & 1 == 1) { half += 1 }
            return sign | UInt16(half)
        }
        var half = UInt32(e) << 10 | (mantissa >> 13)
        let remainder = mantissa & 0x1FFF
        // Round to nearest even; a carry into the exponent is correct.
        if remainder > 0x1000 || (remainder == 0x1000 && half & 1 == 1) { half += 1 }
        return sign | UInt16(half)
    }
}
