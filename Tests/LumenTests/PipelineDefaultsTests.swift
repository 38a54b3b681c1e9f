import Foundation
import Lumen
import LumenRuntime
import XCTest

/// `lumen generate` with only a prompt, a model and a seed (and an init image and mask) draws what
/// diffusers' pipeline draws with every other argument at its default (tools/make_default_fixtures.py):
/// 50 steps, guidance 7.5 (SDXL 5.0, SDXL inpainting 7.5), strength 0.8 (inpainting 1.0; SDXL 0.3,
/// SDXL inpainting 0.9999), a ControlNet scale of 1 (image-to-image 0.8, SD inpainting 0.5). Lumen's
/// CLI used 25 steps, guidance 7.5, strength 0.8 and ControlNet scale 1 for all.
final class PipelineDefaultsTests: XCTestCase {
    func testUnsetFlagsTakeDiffusersPipelineDefaults() throws {
        let ref = try SafetensorsFile(path: Fixtures.root + "/defaults/reference.safetensors")
        let dir = NSTemporaryDirectory() + "lumen-defaults-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for name in ["sd", "sd-img2img", "sd-inpaint", "sdxl", "sdxl-img2img", "sdxl-inpaint", "sd-controlnet-img2img", "sd-controlnet-inpaint"] {
            let fields = try DiffusersRequest(ref, key: name).fields
            var args = ["generate", fields["prompt"] as! String, "--model", Fixtures.root + "/" + (fields["model"] as! String),
                        "--seed", "\(fields["seed"] as! Int)", "-o", dir + "/\(name).png"]
            if let init_ = fields["init"] as? String { args += ["--init-image", Fixtures.root + "/" + init_] }
            if let mask = fields["mask"] as? String { args += ["--mask", Fixtures.root + "/" + mask] }
            if let control = fields["control"] as? String {  // no scale: the pipeline's default
                let parts = control.split(separator: ":").map { Fixtures.root + "/" + $0 }
                args += ["--control", parts[0] + ":" + parts[1]]
            }
            let r = try runLumen(args)
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertTrue(r.stderr.contains("50 steps"), "\(name): \(r.stderr)")
            let got = try RGBImage.readPNG(dir + "/\(name).png").image.pixels.map(Int.init)
            let d = pixelDifference(got, try DiffusersRequest.pixels(ref, "image." + name))
            XCTAssertLessThanOrEqual(d.largest, 1, name)
            XCTAssertLessThan(d.mean, 1, name)
        }
    }

    func testDefaultsPerPipeline() throws {
        let sd = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
        let xl = try Pipeline(modelPath: Fixtures.root + "/tiny-sdxl", backend: .cpu)
        XCTAssertEqual(PipelineDefaults(model: sd.model, masked: false), PipelineDefaults(steps: 50, guidanceScale: 7.5, strength: 0.8))
        XCTAssertEqual(PipelineDefaults(model: sd.model, masked: true), PipelineDefaults(steps: 50, guidanceScale: 7.5, strength: 1, controlNetScale: 0.5))
        XCTAssertEqual(PipelineDefaults(model: xl.model, masked: false), PipelineDefaults(steps: 50, guidanceScale: 5, strength: 0.3))
        XCTAssertEqual(PipelineDefaults(model: xl.model, masked: true), PipelineDefaults(steps: 50, guidanceScale: 7.5, strength: 0.9999))
        XCTAssertEqual(PipelineDefaults(model: sd.model, masked: false, fromImage: true).controlNetScale, 0.8)
        XCTAssertEqual(PipelineDefaults(model: sd.model, masked: true, fromImage: true).controlNetScale, 0.5)
        XCTAssertEqual(PipelineDefaults(model: xl.model, masked: false, fromImage: true).controlNetScale, 0.8)
        XCTAssertEqual(PipelineDefaults(model: xl.model, masked: true, fromImage: true).controlNetScale, 1)
    }
}
