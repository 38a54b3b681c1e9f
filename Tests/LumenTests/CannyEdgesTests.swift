import Foundation
import Lumen
import XCTest

/// The canny preprocessor against OpenCV's cv2.Canny (tools/make_canny_fixtures.py), pixel for pixel.
final class CannyEdgesTests: XCTestCase {
    func testEdgesEqualOpenCV() throws {
        let ref = try SafetensorsFile(path: Fixtures.root + "/canny-reference.safetensors")
        for (name, input, low, high) in [("shapes", "shapes", 100.0, 200.0), ("noisy", "noisy", 100, 200), ("init", "init", 100, 200),
                                         ("noisy-50-120", "noisy", 50, 120)] {
            let (image, _) = try RGBImage.readPNG(Fixtures.root + "/images/canny-\(input).png")
            let edges = try image.cannyEdges(low: low, high: high)
            let want = try ref.rawBytes(name)
            let got = stride(from: 0, to: edges.pixels.count, by: 3).map { edges.pixels[$0] }
            XCTAssertEqual(got.count, want.count, name)
            let differing = zip(got, want).filter { $0 != $1 }.count
            XCTAssertEqual(differing, 0, "\(name): \(differing) of \(want.count) pixels differ from OpenCV")
            XCTAssertGreaterThan(want.filter { $0 == 255 }.count, 50, "\(name): the reference has edges")
        }
    }

    /// `--control CONTROLNET:canny=PHOTO.png` guides with the photo's edges: the same image as
    /// giving the edge map itself.
    func testCommandLineComputesTheEdges() throws {
        let dir = NSTemporaryDirectory() + "lumen-canny-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (photo, _) = try RGBImage.readPNG(Fixtures.root + "/images/init64.png")
        try photo.cannyEdges().writePNG(to: dir + "/edges.png")
        let net = Fixtures.root + "/tiny-controlnet-a"
        func draw(_ image: String, _ out: String) throws -> [UInt8] {
            let run = try runLumen(["generate", "x", "--model", Fixtures.tinyFolder, "--steps", "3", "--seed", "5", "--backend", "cpu",
                                    "--control", "\(net):\(image)", "-o", dir + "/" + out])
            XCTAssertEqual(run.status, 0, run.stderr)
            return try RGBImage.readPNG(dir + "/" + out).image.pixels
        }
        XCTAssertEqual(try draw("canny=" + Fixtures.root + "/images/init64.png", "a.png"), try draw(dir + "/edges.png", "b.png"))
    }
}
