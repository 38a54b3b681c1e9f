import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// PNG reading against PIL's convert("RGB") (tools/make_image_fixtures.py) and writing round trips.
final class ImageTests: XCTestCase {
    struct Expected: Decodable {
        let width: Int
        let height: Int
        let rgb: [Int]?
        let samples16: [Int]?
    }

    func testReadsEveryColourTypeAsPILDoes() throws {
        let dir = Fixtures.root + "/images"
        let expected = try JSONDecoder().decode([String: Expected].self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/expected.json")))
        XCTAssertEqual(expected.count, 7)
        for (name, e) in expected {
            let (image, normalized) = try RGBImage.readPNG(dir + "/\(name).png")
            XCTAssertEqual(image.width, e.width, name)
            XCTAssertEqual(image.height, e.height, name)
            if let rgb = e.rgb {
                XCTAssertEqual(image.pixels.map(Int.init), rgb, name)
                XCTAssertEqual(normalized, rgb.map { Float($0) / 255 }, name)
            }
            if let s = e.samples16 {
                XCTAssertEqual(normalized, s.map { Float($0) / 65535 }, name)
            }
        }
    }

    /// `readPNGWithAlpha` gives the alpha PIL's convert("RGBA") gives (nil without alpha) and the
    /// same colours as convert("RGB"), for RGBA, grey + alpha and a palette with a tRNS chunk.
    func testReadsAlphaApartAsPILDoes() throws {
        struct Case: Decodable {
            let rgb: [Int]
            let alpha: [Int]?
        }
        let dir = Fixtures.root + "/images"
        let cases = try JSONDecoder().decode([String: Case].self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/alpha.json")))
        XCTAssertEqual(cases.count, 4)
        for (name, c) in cases {
            let r = try RGBImage.readPNGWithAlpha(dir + "/\(name).png")
            XCTAssertEqual(r.image.pixels.map(Int.init), c.rgb, name)
            XCTAssertEqual(r.alpha, c.alpha.map { $0.map { Float($0) / 255 } }, name)
        }
    }

    func testWriteRoundTripWithParametersChunk() throws {
        let path = NSTemporaryDirectory() + "lumen-\(UUID().uuidString).png"
        defer { try? FileManager.default.removeItem(atPath: path) }
        var rng = SplitMix64(seed: 3)
        let pixels = (0..<(7 * 4 * 3)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let image = try RGBImage(width: 7, height: 4, pixels: pixels)
        let parameters = "a red circle\nNegative prompt: blurry\nSteps: 4, Sampler: Euler, CFG scale: 7.5, Seed: 42, Size: 7x4"
        try image.writePNG(to: path, text: [("parameters", parameters)])
        let (back, _) = try RGBImage.readPNG(path)
        XCTAssertEqual(back, image)
        // The tEXt chunk is in the file, byte for byte.
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertNotNil(data.range(of: Data("tEXtparameters\0".utf8) + Data(parameters.utf8)))
    }

    func testBadInputsAreTypedErrors() throws {
        let dir = NSTemporaryDirectory() + "lumen-img-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertThrowsError(try RGBImage.readPNG(dir + "/absent.png")) { error in
            guard case ImageError.unreadable(let p, _) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(p.hasSuffix("absent.png"))
        }
        try Data("GIF89a not a png".utf8).write(to: URL(fileURLWithPath: dir + "/fake.png"))
        XCTAssertThrowsError(try RGBImage.readPNG(dir + "/fake.png")) { error in
            guard case ImageError.unreadable(_, let reason) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(reason.contains("signature"), reason)
        }
        // A truncated PNG fails inside libpng and comes back as an error, not a longjmp crash.
        let good = try Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/images/rgb8.png"))
        try good.prefix(good.count - 20).write(to: URL(fileURLWithPath: dir + "/cut.png"))
        XCTAssertThrowsError(try RGBImage.readPNG(dir + "/cut.png"))
        XCTAssertThrowsError(try RGBImage.readPNG(Fixtures.root + "/images/rgb8.png", maxPixels: 10)) { error in
            guard case ImageError.unreadable(_, let reason) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(reason.contains("larger"), reason)
        }
        // Writing into a folder that does not exist leaves nothing behind and says why.
        let image = try RGBImage(width: 1, height: 1, pixels: [1, 2, 3])
        XCTAssertThrowsError(try image.writePNG(to: dir + "/missing/out.png")) { error in
            guard case ImageError.unwritable = error else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try RGBImage(width: 2, height: 2, pixels: [0, 0, 0]))
    }

    func testDecodedTensorToPixelsRoundsLikeDiffusers() throws {
        // x = -1 → 0, 1 → 255, values outside are clamped, 0 → 127.5 → 128 (half to even).
        let t = try Tensor(shape: [1, 3, 1, 2], values: [-1, 1, 0, 3, -7, 0.5])
        let img = try RGBImage(decoded: t)
        XCTAssertEqual(img.pixels, [0, 128, 0, 255, 255, 191])  // planes R, G, B → interleaved pixels
    }
}
