import Foundation
import Lumen
import XCTest

/// `TorchGenerator` against torch 2.15's `torch.randn(n, generator=torch.Generator("cpu").manual_seed(s))`:
/// every value must be bit-identical (the fixture stores the float32 bits).
final class TorchGeneratorTests: XCTestCase {
    /// FNV-1a 64 over float32 little-endian bytes, as the fixture script computes it.
    private func fnv1a64(_ values: [Float]) -> String {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for v in values {
            var bits = v.bitPattern.littleEndian
            withUnsafeBytes(of: &bits) { for byte in $0 { h ^= UInt64(byte); h = h &* 0x100_0000_01B3 } }
        }
        return String(h, radix: 16).leftPadded(to: 16)
    }

    private func assertBitEqual(_ a: [Float], _ b: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        guard a.count == b.count else { return }
        let mismatches = zip(a, b).enumerated().filter { $0.element.0.bitPattern != $0.element.1.bitPattern }
        if let first = mismatches.first {
            XCTFail("\(what): \(mismatches.count) of \(a.count) differ; first at \(first.offset): \(first.element.0) vs \(first.element.1)",
                    file: file, line: line)
        }
    }

    private func check(kernel: TorchGenerator.NormalKernel, records: [String: Any]) throws {
        let randn = try XCTUnwrap(records["randn"] as? [[String: Any]])
        XCTAssertGreaterThan(randn.count, 50)
        for record in randn {
            let seed = try XCTUnwrap(UInt64(try XCTUnwrap(record["seed"] as? String)))
            let count = try XCTUnwrap(record["count"] as? Int)
            var g = TorchGenerator(seed: seed, kernel: kernel)
            let values = g.randn(count: count)
            let what = "\(kernel) seed \(seed) count \(count)"
            XCTAssertEqual(fnv1a64(values), record["fnv1a64"] as? String, what)
            if let all = record["values"] {
                assertBitEqual(values, try GenerationFixtures.floats(all), what)
            } else {
                assertBitEqual(Array(values.prefix(16)), try GenerationFixtures.floats(record["head"]), what + " head")
                assertBitEqual(Array(values.suffix(16)), try GenerationFixtures.floats(record["tail"]), what + " tail")
            }
        }
        // Successive draws from one generator, mixing the small path (which caches a normal between calls)
        // and the vectorised one.
        for sequence in try XCTUnwrap(records["sequences"] as? [[String: Any]]) {
            let seed = try XCTUnwrap(UInt64(try XCTUnwrap(sequence["seed"] as? String)))
            let counts = try XCTUnwrap(sequence["counts"] as? [Int])
            let expected = try XCTUnwrap(sequence["values"] as? [Any])
            var g = TorchGenerator(seed: seed, kernel: kernel)
            for (i, count) in counts.enumerated() {
                assertBitEqual(g.randn(count: count), try GenerationFixtures.floats(expected[i]),
                               "\(kernel) seed \(seed) draw \(i) of \(count)")
            }
        }
    }

    func testRandnMatchesTorchAVX2Kernel() throws {
        let fixture = try GenerationFixtures.json("torch_randn")
        try check(kernel: .avx2, records: try XCTUnwrap(fixture["avx2"] as? [String: Any]))
    }

    func testRandnMatchesTorchPortableKernel() throws {
        let fixture = try GenerationFixtures.json("torch_randn")
        try check(kernel: .scalar, records: try XCTUnwrap(fixture["scalar"] as? [String: Any]))
    }

    func testRandMatchesTorch() throws {
        let fixture = try GenerationFixtures.json("torch_randn")
        let rand = try XCTUnwrap(fixture["rand"] as? [String: Any])
        var g = TorchGenerator(seed: 7)
        assertBitEqual(g.rand(count: 40), try GenerationFixtures.floats(rand["values"]), "rand seed 7")
    }

    func testDefaultKernelIsAVX2AndEmptyDraw() {
        var g = TorchGenerator(seed: 0)
        XCTAssertEqual(g.kernel, .avx2)
        XCTAssertEqual(g.randn(count: 0), [])
        XCTAssertEqual(g.seed, 0)
    }
}

private extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
