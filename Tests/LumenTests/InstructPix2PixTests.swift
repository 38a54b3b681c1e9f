import Foundation
import Lumen
import LumenRuntime
import LumenTestSupport
import XCTest

/// InstructPix2Pix (an 8-channel UNet conditioned on the image to edit, guided in three groups)
/// against diffusers' StableDiffusionInstructPix2PixPipeline (tools/make_pix2pix_fixtures.py).
/// Lumen refused the UNet's 8 input channels.
final class InstructPix2PixTests: XCTestCase {
    static var model: String { Fixtures.root + "/tiny-sd-pix2pix" }
    static var reference: SafetensorsFile { get throws { try SafetensorsFile(path: Fixtures.root + "/pix2pix-reference.safetensors") } }

    func request(_ name: String) throws -> GenerationRequest {
        let fields = try DiffusersRequest(try Self.reference, key: name)
        var r = fields.request
        r.negativePrompt = fields.fields["negative_prompt"] as? String
        r.imageGuidanceScale = Float(fields.fields["image_guidance_scale"] as! Double)
        r.initImage = try InitImage(pngPath: Fixtures.root + "/" + (fields.fields["init"] as! String))
        r.count = fields.fields["num_images_per_prompt"] as? Int ?? 1
        return r
    }

    func testEditsMatchDiffusers() throws {
        let ref = try Self.reference
        let dir = NSTemporaryDirectory() + "lumen-pix2pix-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for name in ["default", "image-guidance-1", "unguided"] {
            let fields = try DiffusersRequest(ref, key: name)
            try assertCLIDraws([fields.prompt, "--model", Self.model, "--negative-prompt", fields.fields["negative_prompt"] as! String,
                                "--init-image", Fixtures.root + "/" + (fields.fields["init"] as! String),
                                "--image-guidance", "\(fields.fields["image_guidance_scale"] as! Double)"] + fields.arguments,
                               to: dir + "/\(name).png", like: "image." + name, in: ref)
        }
        // Two images a prompt: the groups hold each image's rows.
        let pipeline = try Pipeline(modelPath: Self.model, backend: .cpu)
        let images = try pipeline.generate(try request("two"))
        let expected = try DiffusersRequest.pixels(ref, "image.two")
        XCTAssertEqual(images.count, 2)
        for (k, image) in images.enumerated() {
            let per = expected.count / 2
            let d = pixelDifference(image.pixels.map(Int.init), Array(expected[(k * per)..<((k + 1) * per)]))
            XCTAssertLessThanOrEqual(d.largest, 1, "image \(k)")
        }
    }

    /// SDXL InstructPix2Pix (StableDiffusionXLInstructPix2PixPipeline): pooled embeddings in three
    /// groups, the prompt's time ids in every group, no negative prompt zeroed, guidance_rescale
    /// toward the prompt's prediction, and `is_cosxl_edit` (from model_index.json) scaling the
    /// image latents.
    func testSDXLEditsMatchDiffusers() throws {
        let ref = try Self.reference
        let dir = NSTemporaryDirectory() + "lumen-pix2pix-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let xl = Fixtures.root + "/tiny-sdxl-pix2pix"
        // The CosXL Edit case's folder: the same parts, model_index.json with is_cosxl_edit true.
        let cosxl = dir + "/cosxl-edit"
        try FileManager.default.createDirectory(atPath: cosxl, withIntermediateDirectories: true)
        for part in ["text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "vae", "scheduler", "unet"] {
            try FileManager.default.createSymbolicLink(atPath: cosxl + "/" + part, withDestinationPath: xl + "/" + part)
        }
        var index = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: xl + "/model_index.json"))) as? [String: Any])
        index["is_cosxl_edit"] = true
        try JSONSerialization.data(withJSONObject: index).write(to: URL(fileURLWithPath: cosxl + "/model_index.json"))
        for name in ["sdxl", "sdxl-rescale", "sdxl-cosxl"] {
            let fields = try DiffusersRequest(ref, key: name)
            var args = [fields.prompt, "--model", fields.fields["is_cosxl_edit"] as? Bool == true ? cosxl : xl,
                        "--init-image", Fixtures.root + "/" + (fields.fields["init"] as! String),
                        "--image-guidance", "\(fields.fields["image_guidance_scale"] as! Double)"] + fields.arguments
            if let negative = fields.fields["negative_prompt"] as? String { args += ["--negative-prompt", negative] }
            if let rescale = fields.fields["guidance_rescale"] as? Double { args += ["--guidance-rescale", "\(rescale)"] }
            try assertCLIDraws(args, to: dir + "/\(name).png", like: "image." + name, in: ref)
        }
    }

    /// The pipeline's defaults (100 steps), and what an InstructPix2Pix model cannot do, refused by name.
    func testDefaultsAndRefusals() throws {
        let pipeline = try Pipeline(modelPath: Self.model, backend: .cpu)
        XCTAssertTrue(pipeline.model.isInstructPix2Pix)
        XCTAssertEqual(PipelineDefaults(model: pipeline.model, masked: false, fromImage: true).steps, 100)
        var r = try request("default")
        r.steps = 1
        r.initImage = nil
        XCTAssertThrowsError(try pipeline.generate(r)) { XCTAssertTrue("\($0)".contains("give an init image"), "\($0)") }
        r = try request("default")
        r.steps = 1
        r.mask = r.initImage
        XCTAssertThrowsError(try pipeline.generate(r)) { XCTAssertTrue("\($0)".contains("cannot be combined with a mask"), "\($0)") }
        r.mask = nil
        r.imageGuidanceScale = .nan
        XCTAssertThrowsError(try pipeline.generate(r)) { XCTAssertTrue("\($0)".contains("image guidance scale"), "\($0)") }
    }
}
