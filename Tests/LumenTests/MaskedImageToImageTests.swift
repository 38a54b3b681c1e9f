import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// Masked image-to-image with an ordinary UNet against diffusers' StableDiffusionInpaintPipeline
/// (tools/make_inpaint_fixtures.py): the `MaskBlend` hook on the denoising loop, on tiny-sd.
final class MaskedImageToImageTests: XCTestCase {
    static var reference: SafetensorsFile { get throws { try SafetensorsFile(path: Fixtures.root + "/inpaint-reference.safetensors") } }

    static func request(_ ref: SafetensorsFile, _ name: String) throws -> GenerationRequest {
        var (r, fields) = try fixtureRequest(ref, name)
        r.initImage = try InitImage(pngPath: Fixtures.root + "/" + (fields["init"] as! String))
        r.mask = try InitImage(pngPath: Fixtures.root + "/" + (fields["mask"] as! String))
        return r
    }

    static var inpaintingFolder: String { Fixtures.root + "/tiny-sd-inpaint" }

    func check(_ pipeline: Pipeline, latentBound: Float, maxPixelError: Int,
               cases: [String] = ["pndm", "euler-a-full", "ddim-two"]) throws {
        let ref = try Self.reference
        for name in cases {
            try assertMatchesFixture(pipeline, try Self.request(ref, name), name, in: ref, latentBound: latentBound, maxPixelError: maxPixelError)
        }
    }

    func testMaskedImageToImageMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            // The latents are ~10 in size; the f32 networks agree with diffusers to ~1e-6 relative.
            try check(try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu), latentBound: 1e-3, maxPixelError: 1)
        }
    }

    func testMaskedImageToImageOnVulkan() throws {
        let vulkan = try testVulkanExecutor()
        // f16 weights and activations on lavapipe: the bound of the other Vulkan pipeline tests.
        try check(try Pipeline(modelPath: Fixtures.tinyFolder, executor: vulkan), latentBound: 0.25, maxPixelError: 12)
        XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")
    }

    /// A 9-channel inpainting UNet (tiny-sd-inpaint) as StableDiffusionInpaintPipeline runs it:
    /// latents, mask and the masked image's latents in, at strength 0.8 and at 1 (pure noise).
    func testInpaintingModelMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            let pipeline = try Pipeline(modelPath: Self.inpaintingFolder, backend: .cpu)
            XCTAssertTrue(pipeline.model.isInpainting)
            try check(pipeline, latentBound: 1e-3, maxPixelError: 1, cases: ["inpaint9-pndm", "inpaint9-euler-a-full"])
        }
    }

    /// The same model as one single file with the original names (its UNet's conv_in takes 9
    /// channels), as StableDiffusionInpaintPipeline.from_single_file(config=folder) draws it.
    func testInpaintingSingleFileMatchesDiffusers() throws {
        let pipeline = try Pipeline(modelPath: Fixtures.root + "/tiny-sd-inpaint.safetensors", backend: .cpu,
                                    configFolder: Self.inpaintingFolder)
        XCTAssertTrue(pipeline.model.isInpainting)
        let ref = try Self.reference
        try assertMatchesFixture(pipeline, try Self.request(ref, "single-inpaint9"), "single-inpaint9", in: ref, latentBound: 1e-3, maxPixelError: 1)
    }

    func testInpaintingModelOnVulkan() throws {
        let vulkan = try testVulkanExecutor()
        try check(try Pipeline(modelPath: Self.inpaintingFolder, executor: vulkan), latentBound: 0.25, maxPixelError: 12,
                  cases: ["inpaint9-pndm", "inpaint9-euler-a-full"])
        XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")
    }

    /// SDXL as StableDiffusionXLInpaintPipeline runs it: tiny-sdxl's ordinary UNet (the mask blend)
    /// and a 9-channel SDXL inpainting UNet (tiny-sdxl-inpaint), both with SDXL's conditioning.
    func testSDXLInpaintingMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            try check(try Pipeline(modelPath: SDXLFixtureTests.folder, backend: .cpu), latentBound: 1e-3, maxPixelError: 1,
                      cases: ["sdxl-masked"])
            try check(try Pipeline(modelPath: Fixtures.root + "/tiny-sdxl-inpaint", backend: .cpu), latentBound: 1e-3,
                      maxPixelError: 1, cases: ["sdxl-inpaint9"])
        }
    }

    /// An inpainting model without a mask is refused by name (diffusers' text-to-image pipeline
    /// fails on it with a shape error).
    func testInpaintingModelNeedsAMask() throws {
        let pipeline = try Pipeline(modelPath: Self.inpaintingFolder, backend: .cpu)
        XCTAssertThrowsError(try pipeline.generate(GenerationRequest(prompt: "x"))) {
            XCTAssertTrue("\($0)".contains("is an inpainting model"), "\($0)")
        }
    }

    /// A black mask keeps the whole init image: the prompt no longer matters, to the bit. A white
    /// mask repaints everything: with a deterministic scheduler that is plain image-to-image.
    func testBlackAndWhiteMasks() throws {
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
        var r = try Self.request(try Self.reference, "pndm")
        let (w, h) = (r.initImage!.width, r.initImage!.height)
        r.mask = InitImage(width: w, height: h, rgb: [Float](repeating: 0, count: w * h * 3))
        var other = r
        other.prompt = "something else entirely"
        XCTAssertEqual(try pipeline.latents(for: r).toFloats(), try pipeline.latents(for: other).toFloats())

        r.mask = InitImage(width: w, height: h, rgb: [Float](repeating: 1, count: w * h * 3))
        var plain = r
        plain.mask = nil
        XCTAssertEqual(try pipeline.latents(for: r).toFloats(), try pipeline.latents(for: plain).toFloats())
        XCTAssertNotEqual(try pipeline.latents(for: r).toFloats(), try pipeline.latents(for: other).toFloats())
    }

    func testBadMasksAreRefused() throws {
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
        var r = try Self.request(try Self.reference, "pndm")
        r.mask = InitImage(width: 32, height: 32, rgb: [Float](repeating: 1, count: 32 * 32 * 3))
        XCTAssertThrowsError(try pipeline.generate(r)) { XCTAssertTrue("\($0)".contains("the mask is 32x32 but the init image is 64x64"), "\($0)") }
        r.initImage = nil
        XCTAssertThrowsError(try pipeline.generate(r)) { XCTAssertTrue("\($0)".contains("a mask needs an init image"), "\($0)") }
    }
}
