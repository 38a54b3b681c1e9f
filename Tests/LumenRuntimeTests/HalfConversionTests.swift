import LumenRuntime
import XCTest
import LumenTestSupport

final class HalfConversionTests: XCTestCase {
    /// Every binary16 value widens exactly and narrows back to itself.
    func testEveryHalfRoundTrips() {
        for bits in 0...UInt16.max {
            let f = HalfConversion.halfToFloat(bits)
            if f.isNaN {
                XCTAssertTrue(HalfConversion.halfToFloat(HalfConversion.floatToHalf(f)).isNaN)
                continue
            }
            XCTAssertEqual(HalfConversion.floatToHalf(f), bits, "half bits \(bits) -> \(f)")
        }
    }

    /// Narrowing agrees with the platform's IEEE conversion (round to nearest even), including
    /// ties, subnormals and overflow, on values spread over the whole f32 range.
    func testNarrowingMatchesPlatformFloat16() {
        #if arch(x86_64) || arch(arm64)
        var rng = SplitMix64(seed: 7)
        var samples: [Float] = [0, -0, 65504, 65520, 65519.99, 1e-8, 5.96e-8, 2.98e-8, 2.99e-8, 6.1e-5, -3.0e-5, .infinity, -.infinity]
        for _ in 0..<200_000 {
            samples.append(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())))
        }
        // Exact ties between two halves: midpoints of consecutive binary16 values.
        for bits in stride(from: UInt16(0), to: 0x7BFF, by: 97) {
            let lo = Double(HalfConversion.halfToFloat(bits)), hi = Double(HalfConversion.halfToFloat(bits + 1))
            samples.append(Float((lo + hi) / 2))
        }
        for f in samples where !f.isNaN {
            let expected = Float16(f).bitPattern
            XCTAssertEqual(HalfConversion.floatToHalf(f), expected, "f32 \(f) (bits \(f.bitPattern))")
        }
        #endif
    }

    /// bfloat16 narrowing rounds to nearest even: checked against a float64 computation of the two
    /// neighbouring bfloat16 values.
    func testBfloatRoundsToNearestEven() {
        var rng = SplitMix64(seed: 11)
        for _ in 0..<100_000 {
            let f = Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))
            if !f.isFinite { continue }
            let b = HalfConversion.floatToBfloat(f)
            let down = UInt16(f.bitPattern >> 16)
            let lo = Double(HalfConversion.bfloatToFloat(down))
            // Past the largest finite bfloat16 the next value up is 2^128 (which rounds to infinity).
            var hi = Double(HalfConversion.bfloatToFloat(down &+ 1))
            if hi.isInfinite { hi = f < 0 ? -0x1p128 : 0x1p128 }
            let x = Double(f)
            let expected: UInt16
            if abs(x - lo) < abs(hi - x) { expected = down }
            else if abs(x - lo) > abs(hi - x) { expected = down &+ 1 }
            else { expected = down & 1 == 0 ? down : down &+ 1 }
            XCTAssertEqual(b, expected, "f32 \(f)")
        }
        XCTAssertTrue(HalfConversion.bfloatToFloat(HalfConversion.floatToBfloat(.nan)).isNaN)
        XCTAssertEqual(HalfConversion.bfloatToFloat(HalfConversion.floatToBfloat(.greatestFiniteMagnitude)), .infinity)
    }
}

