import Foundation
import Lumen
import XCTest

/// Outpainting as masked image-to-image on an extended canvas.
final class OutpaintTests: TemporaryDirectoryTestCase {
    /// The canvas repeats the nearest edge pixel (numpy's pad mode "edge") and the mask is white
    /// exactly on the new area.
    func testCanvasAndMask() throws {
        // A 2×2 image with distinct grey levels a b / c d, padded left 1, top 2, right 0, bottom 1.
        let (a, b, c, d): (Float, Float, Float, Float) = (0.1, 0.2, 0.3, 0.4)
        let image = InitImage(width: 2, height: 2, rgb: [a, b, c, d].flatMap { [$0, $0, $0] })
        let (canvas, mask) = image.outpainted(Outpaint(left: 1, top: 2, bottom: 1))
        XCTAssertEqual([canvas.width, canvas.height], [3, 5])
        let grey = stride(from: 0, to: canvas.rgb.count, by: 3).map { canvas.rgb[$0] }
        XCTAssertEqual(grey, [a, a, b,
                              a, a, b,
                              a, a, b,
                              c, c, d,
                              c, c, d])
        let m = stride(from: 0, to: mask.rgb.count, by: 3).map { mask.rgb[$0] }
        XCTAssertEqual(m, [1, 1, 1,
                           1, 1, 1,
                           1, 0, 0,
                           1, 0, 0,
                           1, 1, 1])
        XCTAssertNil(Outpaint("left=8,up=8"))
        XCTAssertEqual(Outpaint("left=8, right=16"), Outpaint(left: 8, right: 16))
    }

    /// `lumen generate --outpaint` is the library's masked request on the outpainted canvas at
    /// strength 1.
    func testCommandLineIsTheMaskedRequest() throws {
        let out = dir + "/o.png"
        // --prompt-syntax plain: the library's default, so that both sides encode the prompt alike.
        let run = try runLumen(["generate", "a red circle", "--model", Fixtures.tinyFolder, "--steps", "4", "--seed", "9", "--prompt-syntax", "plain",
                                "--backend", "cpu", "--init-image", Fixtures.root + "/images/init64.png",
                                "--outpaint", "right=32,bottom=16", "-o", out])
        XCTAssertEqual(run.status, 0, run.stderr)
        let (image, _) = try RGBImage.readPNG(out)
        XCTAssertEqual([image.width, image.height], [96, 80])
        // The same request spelled out: the outpainted canvas and its mask as PNGs, strength 1, run
        // by the CLI too (a fresh process each, so no state of this test process can differ).
        let (canvas, mask) = try InitImage(pngPath: Fixtures.root + "/images/init64.png").outpainted(Outpaint(right: 32, bottom: 16))
        func png(_ i: InitImage, _ name: String) throws -> String {
            try RGBImage(width: i.width, height: i.height, pixels: i.rgb.map { UInt8(($0 * 255).rounded()) }).writePNG(to: dir + "/" + name)
            return dir + "/" + name
        }
        let spelled = try runLumen(["generate", "a red circle", "--model", Fixtures.tinyFolder, "--steps", "4", "--seed", "9", "--prompt-syntax", "plain",
                                    "--backend", "cpu", "--init-image", try png(canvas, "canvas.png"), "--mask", try png(mask, "mask.png"),
                                    "--strength", "1", "-o", dir + "/s.png"])
        XCTAssertEqual(spelled.status, 0, spelled.stderr)
        XCTAssertEqual(try RGBImage.readPNG(dir + "/s.png").image.pixels, image.pixels)
        let bad = try runLumen(["generate", "x", "--model", Fixtures.tinyFolder, "--outpaint", "right=32", "-o", dir + "/x.png"])
        XCTAssertTrue(bad.stderr.contains("--outpaint needs --init-image"), bad.stderr)
    }
}
