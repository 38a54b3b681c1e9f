import Foundation
import LumenRuntime
import XCTest

/// Every float8 code against the formats' definitions evaluated in double (OCP FP8: E4M3 "fn"
/// with bias 7 and no infinities, E5M2 with bias 15 and IEEE's specials).
final class Float8Tests: XCTestCase {
    func decode(_ code: Int, exponentBits: Int, mantissaBits: Int, bias: Int, ieeeSpecials: Bool) -> Double {
        let sign = code >> (exponentBits + mantissaBits) == 1 ? -1.0 : 1.0
        let e = (code >> mantissaBits) & ((1 << exponentBits) - 1), m = code & ((1 << mantissaBits) - 1)
        let top = (1 << exponentBits) - 1
        if ieeeSpecials && e == top { return m == 0 ? sign * .infinity : .nan }
        if !ieeeSpecials && e == top && m == (1 << mantissaBits) - 1 { return .nan }
        let fraction = Double(m) / Double(1 << mantissaBits)
        return sign * (e == 0 ? fraction * pow(2, Double(1 - bias)) : (1 + fraction) * pow(2, Double(e - bias)))
    }

    func testEveryCodeDecodesExactly() {
        for (table, e, m, bias, ieee) in [(Float8.e4m3ToHalf, 4, 3, 7, false), (Float8.e5m2ToHalf, 5, 2, 15, true)] {
            for code in 0..<256 {
                let want = decode(code, exponentBits: e, mantissaBits: m, bias: bias, ieeeSpecials: ieee)
                let got = Double(HalfConversion.halfToFloat(table[code]))
                if want.isNaN { XCTAssertTrue(got.isNaN, "code \(code)"); continue }
                XCTAssertEqual(got, want, "E\(e)M\(m) code \(code)")
                XCTAssertEqual(got.sign, want.sign, "E\(e)M\(m) code \(code): the sign of zero")
            }
        }
        XCTAssertEqual(HalfConversion.halfToFloat(Float8.e4m3ToHalf[0x7E]), 448)  // E4M3's largest
        XCTAssertEqual(HalfConversion.halfToFloat(Float8.e4m3ToHalf[0x01]), 0x1p-9)  // its smallest subnormal
        XCTAssertEqual(HalfConversion.halfToFloat(Float8.e5m2ToHalf[0x7B]), 57344)  // E5M2's largest
    }
}
