import Foundation
import Lumen
import LumenRuntime
import LumenTestSupport
import XCTest

/// SDXL's size conditioning (original size, crop, target size, their negative forms) against
/// diffusers' SDXL text-to-image, image-to-image and refiner pipelines
/// (tools/make_micro_conditioning_fixtures.py), through `lumen generate`. Lumen always conditioned
/// on the output's size and no crop.
final class MicroConditioningTests: XCTestCase {
    func testSizeConditioningMatchesDiffusers() throws {
        let ref = try SafetensorsFile(path: Fixtures.root + "/micro-conditioning-reference.safetensors")
        let dir = NSTemporaryDirectory() + "lumen-micro-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // diffusers' [height, width] as WIDTHxHEIGHT, [top, left] as TOP,LEFT.
        let flags = ["original_size": "--original-size", "target_size": "--target-size", "negative_original_size": "--negative-original-size",
                     "negative_target_size": "--negative-target-size", "crops_coords_top_left": "--crop-top-left",
                     "negative_crops_coords_top_left": "--negative-crop-top-left"]
        for name in ["txt2img", "txt2img-one-negative", "img2img", "refiner"] {
            let fields = try DiffusersRequest(ref, key: name)
            var args = [fields.prompt, "--model", Fixtures.root + "/" + (fields.fields["model"] as! String),
                        "--negative-prompt", fields.fields["negative_prompt"] as! String] + fields.arguments
            for (key, flag) in flags.sorted(by: { $0.key < $1.key }) {
                guard let pair = fields.fields[key] as? [Int] else { continue }
                args += [flag, key.contains("crops") ? "\(pair[0]),\(pair[1])" : "\(pair[1])x\(pair[0])"]
            }
            if let w = fields.fields["width"] as? Int, let h = fields.fields["height"] as? Int { args += ["--width", "\(w)", "--height", "\(h)"] }
            if let init_ = fields.fields["init"] as? String {
                args += ["--init-image", Fixtures.root + "/" + init_, "--strength", "\(fields.fields["strength"] as! Double)"]
            }
            try assertCLIDraws(args, to: dir + "/\(name).png", like: "image." + name, in: ref)
        }
    }

    /// Sizes and crops outside their ranges are refused naming them, by the library and the CLI.
    func testBadSizesAreRefused() throws {
        let pipeline = try Pipeline(modelPath: Fixtures.root + "/tiny-sdxl", backend: .cpu)
        var r = GenerationRequest(prompt: "x")
        (r.width, r.height, r.steps) = (64, 64, 1)
        r.microConditioning.originalSize = .init(width: 0, height: 64)
        XCTAssertThrowsError(try pipeline.generate(r)) { XCTAssertTrue("\($0)".contains("SDXL original size 0x64"), "\($0)") }
        r.microConditioning = SDXLMicroConditioning()
        r.microConditioning.cropTopLeft = .init(top: -1, left: 0)
        XCTAssertThrowsError(try pipeline.generate(r)) { XCTAssertTrue("\($0)".contains("SDXL crop top-left -1,0"), "\($0)") }
        let (status, _, stderr) = try runLumen(["generate", "x", "--model", Fixtures.root + "/tiny-sdxl", "--original-size", "512",
                                                "-o", NSTemporaryDirectory() + "lumen-micro-\(UUID().uuidString).png"])
        XCTAssertNotEqual(status, 0)
        XCTAssertTrue(stderr.contains("original-size"), stderr)
    }
}
