import Foundation
import Lumen
import XCTest

/// Lanczos resizing against Pillow's Image.resize(…, LANCZOS) (tools/make_resize_fixtures.py),
/// pixel for pixel, up, down and along one axis.
final class LanczosResizeTests: XCTestCase {
    func testResizeEqualsPillow() throws {
        let ref = try SafetensorsFile(path: Fixtures.root + "/resize-reference.safetensors")
        for (name, source, w, h) in [("noisy-up", "canny-noisy", 144, 120), ("noisy-down", "canny-noisy", 40, 33),
                                     ("init-up", "init64", 96, 96), ("init-x2", "init64", 128, 128), ("init-wide", "init64", 100, 64)] {
            let (image, _) = try RGBImage.readPNG(Fixtures.root + "/images/\(source).png")
            let resized = try image.resizedLanczos(width: w, height: h)
            let want = try ref.rawBytes(name)
            XCTAssertEqual(resized.pixels.count, want.count, name)
            let differing = zip(resized.pixels, want).filter { $0 != $1 }.count
            XCTAssertEqual(differing, 0, "\(name): \(differing) of \(want.count) values differ from Pillow")
        }
    }
}
