/// The two float8 formats of safetensors files (OCP FP8): E4M3 "fn" (4 exponent bits, bias 7, 3
/// mantissa bits, no infinities, S.1111.111 NaN, largest 448) and E5M2 (IEEE-like: bias 15, 2
/// mantissa bits, the top byte of an f16). Every value of both is an f16 value, so each code is read
/// through a 256-entry table of f16 bit patterns.
public enum Float8 {
    /// The f16 bits of each E4M3 code.
    public static let e4m3ToHalf: [UInt16] = (0..<256).map { code in
        let sign: UInt16 = code & 0x80 != 0 ? 0x8000 : 0
        let exponent = (code >> 3) & 0xF, mantissa = code & 0x7
        if exponent == 0xF && mantissa == 0x7 { return sign | 0x7E00 }  // NaN
        // Subnormals are m/8 · 2^-6; normals (1 + m/8) · 2^(e − 7): both exact in f16.
        let magnitude = exponent == 0 ? Float(mantissa) / 8 * 0x1p-6 : (1 + Float(mantissa) / 8) * Float(sign: .plus, exponent: exponent - 7, significand: 1)
        return sign | HalfConversion.floatToHalf(magnitude)
    }

    /// The f16 bits of each E5M2 code: the code is the f16's high byte.
    public static let e5m2ToHalf: [UInt16] = (0..<256).map { UInt16($0) << 8 }

    /// The table of a safetensors float8 dtype name, nil for other dtypes.
    static func halfTable(_ fileDType: String) -> [UInt16]? {
        switch fileDType {
        case "F8_E4M3": return e4m3ToHalf
        case "F8_E5M2": return e5m2ToHalf
        default: return nil
        }
    }
}
