import Foundation
import Lumen
import XCTest

/// `lumen generate --prompt-syntax` and `--embedding` (#20): the flags reach the pipeline, and
/// bad values are refused by name before anything is written.
final class PromptFlagsCLITests: TemporaryDirectoryTestCase {
    var common: [String] { ["--model", Fixtures.tinyFolder, "--backend", "cpu", "--steps", "2", "--seed", "5"] }

    func testPromptSyntaxFlag() throws {
        // A prompt with no brackets and under 75 tokens reads the same either way: the same image.
        let a = dir + "/a.png", b = dir + "/b.png"
        XCTAssertEqual(try runLumen(["generate", "a red circle"] + common + ["-o", a]).status, 0)
        XCTAssertEqual(try runLumen(["generate", "a red circle"] + common + ["--prompt-syntax", "plain", "-o", b]).status, 0)
        XCTAssertEqual(try RGBImage.readPNG(a).image.pixels, try RGBImage.readPNG(b).image.pixels)
        // a1111 is the CLI's default: "(red:1)" is "red" of weight 1, the same prompt as "a red circle";
        // read plain, the brackets are text and the image differs.
        let c = dir + "/c.png", p = dir + "/p.png"
        XCTAssertEqual(try runLumen(["generate", "a (red:1) circle"] + common + ["-o", c]).status, 0)
        XCTAssertEqual(try RGBImage.readPNG(a).image.pixels, try RGBImage.readPNG(c).image.pixels)
        XCTAssertEqual(try runLumen(["generate", "a (red:1) circle"] + common + ["--prompt-syntax", "plain", "-o", p]).status, 0)
        XCTAssertNotEqual(try RGBImage.readPNG(a).image.pixels, try RGBImage.readPNG(p).image.pixels)
        let bad = try runLumen(["generate", "a red circle"] + common + ["--prompt-syntax", "comfy", "-o", dir + "/d.png"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("prompt-syntax") && bad.stderr.contains("a1111"), bad.stderr)
        let weight = try runLumen(["generate", "a (red:1.2.3) circle"] + common + ["-o", dir + "/e.png"])
        XCTAssertNotEqual(weight.status, 0)
        XCTAssertTrue(weight.stderr.contains("1.2.3"), weight.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/e.png"))
    }

    func testEmbeddingFlag() throws {
        let folder = Fixtures.root + "/embeddings"
        let out = dir + "/ti.png"
        let ok = try runLumen(["generate", "a mytoken circle"] + common + ["--embedding", folder + "/learned_embeds.safetensors:mytoken", "-o", out])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out))
        let wrong = try runLumen(["generate", "a xlstyle circle"] + common + ["--embedding", folder + "/xlstyle.safetensors", "-o", dir + "/no.png"])
        XCTAssertNotEqual(wrong.status, 0)
        XCTAssertTrue(wrong.stderr.contains("xlstyle.safetensors"), wrong.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/no.png"))
        let missing = try runLumen(["generate", "a circle"] + common + ["--embedding", dir + "/none.safetensors", "-o", dir + "/no.png"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("none.safetensors"), missing.stderr)
    }
}
