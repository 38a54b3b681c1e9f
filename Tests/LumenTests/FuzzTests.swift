import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// Bounded, deterministic fuzzing of the three parsers that read untrusted bytes: safetensors
/// headers, JSON configs and PNGs. Seeds are the corpus in Tests/Fixtures/fuzz (written by
/// tools/make_fuzz_corpus.py) plus files built here; each mutated input must give a typed error
/// or a successful parse. The oracle is the process itself: a trap kills the test run.
final class FuzzTests: TemporaryDirectoryTestCase {
    private func corpus(_ kind: String) throws -> [Data] {
        let folder = Fixtures.root + "/fuzz/" + kind
        let names = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
        XCTAssertFalse(names.isEmpty, "no seeds in \(folder)")
        return try names.map { try Data(contentsOf: URL(fileURLWithPath: folder + "/" + $0)) }
    }

    func testSafetensorsReader() throws {
        var seeds = try corpus("safetensors")
        let built = dir + "/built.safetensors"
        try SafetensorsWriter.write([("x", try Tensor(zeros: [3, 2], dtype: .f16)), ("y", try Tensor(zeros: [1], dtype: .i64))],
                                    metadata: ["k": "v"], to: built)
        seeds.append(try Data(contentsOf: URL(fileURLWithPath: built)))
        var rng = SplitMix64(seed: 0x5AFE_7E45)
        var opened = 0, refused = 0
        let path = dir + "/mutant.safetensors"
        for _ in 0..<2500 {
            var d = seeds[Int.random(in: 0..<seeds.count, using: &rng)]
            Mutator.mutate(&d, rng: &rng, splice: seeds, json: true)
            try d.write(to: URL(fileURLWithPath: path))
            do {
                let f = try SafetensorsFile(path: path)
                for name in f.names {
                    if f.entries[name]?.dtype != nil { _ = try f.tensor(name).toFloats() } else { _ = try f.rawBytes(name) }
                }
                opened += 1
            } catch is ModelFileError {
                refused += 1
            }
        }
        XCTAssertEqual(opened + refused, 2500)
        XCTAssertGreaterThan(opened, 50, "some mutants should still parse")
        XCTAssertGreaterThan(refused, 500)
    }

    func testConfigDecoders() throws {
        let seeds = try corpus("config")
        var rng = SplitMix64(seed: 0xC0F1_6)
        var decoded = 0, refused = 0
        func attempt<T: Decodable>(_ type: T.Type, _ data: Data) {
            do { _ = try JSONDecoder().decode(type, from: data); decoded += 1 } catch { refused += 1 }
        }
        for _ in 0..<3000 {
            var d = seeds[Int.random(in: 0..<seeds.count, using: &rng)]
            Mutator.mutate(&d, rng: &rng, splice: seeds, json: true)
            attempt(UNet2DConditionConfig.self, d)
            attempt(AutoencoderKLConfig.self, d)
            attempt(CLIPTextConfig.self, d)
            attempt(SchedulerConfig.self, d)
        }
        XCTAssertEqual(decoded + refused, 12000)
        XCTAssertGreaterThan(decoded, 100, "some mutants should still decode")
        // The file readers on top of the decoders: typed errors naming the file.
        let path = dir + "/scheduler_config.json"
        for _ in 0..<200 {
            var d = seeds[Int.random(in: 0..<seeds.count, using: &rng)]
            Mutator.mutate(&d, rng: &rng, splice: seeds, json: true)
            try d.write(to: URL(fileURLWithPath: path))
            do { _ = try SchedulerConfig(path: path) } catch let error as SchedulerError {
                XCTAssertTrue("\(error)".contains(path), "\(error)")
            }
        }
    }

    func testPNGReader() throws {
        var seeds = try corpus("png")
        let built = dir + "/built.png"
        try RGBImage(width: 3, height: 2, pixels: (0..<18).map { UInt8($0 * 14) }).writePNG(to: built, text: [("parameters", "猫 a")])
        seeds.append(try Data(contentsOf: URL(fileURLWithPath: built)))
        var rng = SplitMix64(seed: 0x9E6)
        var opened = 0, refused = 0
        let path = dir + "/mutant.png"
        for i in 0..<2000 {
            var d = seeds[Int.random(in: 0..<seeds.count, using: &rng)]
            Mutator.mutate(&d, rng: &rng, splice: seeds, json: false)
            // Most mutants repair their CRCs, so that libpng looks past the checksums.
            if i % 4 != 0 { Mutator.fixPNGChecksums(&d) }
            try d.write(to: URL(fileURLWithPath: path))
            do {
                let (image, normalized, _) = try RGBImage.readPNGWithText(path, maxPixels: 1 << 12)
                XCTAssertEqual(normalized.count, image.width * image.height * 3)
                opened += 1
            } catch is ImageError {
                refused += 1
            }
        }
        XCTAssertEqual(opened + refused, 2000)
        XCTAssertGreaterThan(opened, 50, "some mutants should still decode")
        XCTAssertGreaterThan(refused, 500)
    }
}

/// Byte-level mutations, with a few that know JSON (numbers swapped for extreme ones, nesting).
enum Mutator {
    static let numbers = ["0", "-1", "1e308", "-1e308", "1e-320", "9223372036854775807", "9223372036854775808",
                          "-9223372036854775809", "18446744073709551616", "4294967296", "65536", "0.5", "-0", "1.0e9999",
                          "99999999999999999999999999999", "\"x\"", "null", "[]", "{}", "true"]

    static func mutate(_ d: inout Data, rng: inout SplitMix64, splice: [Data], json: Bool) {
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            let n = d.count
            switch Int.random(in: 0..<(json ? 10 : 8), using: &rng) {
            case 0 where n > 0:  // flip a bit
                let at = Int.random(in: 0..<n, using: &rng)
                d[d.startIndex + at] ^= UInt8(1) << UInt8.random(in: 0...7, using: &rng)
            case 1 where n > 0:  // an interesting byte
                let at = Int.random(in: 0..<n, using: &rng)
                d[d.startIndex + at] = [0, 0xFF, 0x7F, 0x80, 0x01, 0x20, 0x22, 0x5B][Int.random(in: 0..<8, using: &rng)]
            case 2 where n > 0:  // truncate
                d = d.prefix(Int.random(in: 0..<n, using: &rng))
            case 3 where n > 1:  // delete a range
                let a = Int.random(in: 0..<n, using: &rng), b = min(n, a + Int.random(in: 1...16, using: &rng))
                d.removeSubrange((d.startIndex + a)..<(d.startIndex + b))
            case 4 where n > 1:  // duplicate a range
                let a = Int.random(in: 0..<n, using: &rng), b = min(n, a + Int.random(in: 1...32, using: &rng))
                d.insert(contentsOf: d[(d.startIndex + a)..<(d.startIndex + b)], at: d.startIndex + Int.random(in: 0...n, using: &rng))
            case 5:  // insert random bytes
                let bytes = (0..<Int.random(in: 1...8, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                d.insert(contentsOf: bytes, at: d.startIndex + Int.random(in: 0...n, using: &rng))
            case 6 where n > 0:  // splice the tail of another seed
                let other = splice[Int.random(in: 0..<splice.count, using: &rng)]
                guard !other.isEmpty else { break }
                let at = Int.random(in: 0..<n, using: &rng), from = Int.random(in: 0..<other.count, using: &rng)
                d = d.prefix(at) + other.suffix(from: other.startIndex + from)
            case 7 where n >= 8:  // overwrite 4 bytes with a boundary integer (lengths, sizes)
                let at = Int.random(in: 0...(n - 4), using: &rng)
                let v: UInt32 = [0, 1, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0xFFFF, 0x1_0000][Int.random(in: 0..<7, using: &rng)]
                for k in 0..<4 { d[d.startIndex + at + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(3 - k))) }
            case 8:  // JSON: replace a number with an extreme value
                let digits = d.indices.filter { (48...57).contains(d[$0]) }
                guard let start = digits.randomElement(using: &rng) else { break }
                var end = start
                while end < d.endIndex, (48...57).contains(d[end]) || d[end] == 46 { end += 1 }
                d.replaceSubrange(start..<end, with: Data(numbers[Int.random(in: 0..<numbers.count, using: &rng)].utf8))
            case 9:  // JSON: wrap a value in arrays or objects
                let at = Int.random(in: 0...n, using: &rng), depth = Int.random(in: 1...40, using: &rng)
                d.insert(contentsOf: Data(String(repeating: "[", count: depth).utf8), at: d.startIndex + at)
            default:
                break
            }
        }
    }

    /// Recomputes the CRC of every whole chunk after the signature.
    static func fixPNGChecksums(_ d: inout Data) {
        var bytes = [UInt8](d)
        var at = 8
        while at + 12 <= bytes.count {
            let length = Int(bytes[at]) << 24 | Int(bytes[at + 1]) << 16 | Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
            guard length <= bytes.count - at - 12 else { break }
            let crc = crc32(bytes[(at + 4)..<(at + 8 + length)])
            for k in 0..<4 { bytes[at + 8 + length + k] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(3 - k))) }
            at += 12 + length
        }
        d = Data(bytes)
    }

    static let crcTable: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = crcTable[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }
}
