import Foundation
import Lumen
import LumenRuntime
import LumenTestSupport
import XCTest

/// The mask's blur (diffusers' `mask_processor.blur`, Pillow's GaussianBlur) and crop
/// (`padding_mask_crop`) against diffusers and Pillow (tools/make_mask_fixtures.py), for SD 1.x
/// and SDXL (`StableDiffusionXLInpaintPipeline`).
final class MaskBlurAndCropTests: TemporaryDirectoryTestCase {
    static var reference: SafetensorsFile { get throws { try SafetensorsFile(path: Fixtures.root + "/mask-reference.safetensors") } }
    static var referenceXL: SafetensorsFile { get throws { try SafetensorsFile(path: Fixtures.root + "/mask-sdxl-reference.safetensors") } }

    static func request(_ ref: SafetensorsFile, _ name: String) throws -> GenerationRequest {
        var (r, fields) = try fixtureRequest(ref, name)
        r.initImage = try InitImage(pngPath: Fixtures.root + "/" + (fields["init"] as! String))
        r.mask = try InitImage(pngPath: Fixtures.root + "/" + (fields["mask"] as! String))
        r.maskBlur = Float(fields["mask_blur"] as? Double ?? 0)
        r.maskCrop = fields["mask_crop"] as? Int
        return r
    }

    static func model(_ ref: SafetensorsFile, _ name: String) throws -> String {
        let (_, fields) = try fixtureRequest(ref, name)
        return Fixtures.root + "/" + (fields["model"] as? String ?? "tiny-sd")
    }

    static let cropCases = ["crop-blur", "crop-fill9"]
    /// tiny-sdxl (4-channel UNet) with a blurred mask, tiny-sdxl-inpaint (9-channel) at 64×32.
    static let cropCasesXL = ["xl-crop-blur", "xl-crop-fill9"]

    /// Pillow's GaussianBlur level for level: grey masks at radii from 1 to past the image's size,
    /// noise of odd sizes at fractional radii, and an RGB image (each channel on its own).
    func testGaussianBlurEqualsPillow() throws {
        let ref = try Self.reference
        let cases = ref.metadata.keys.filter { $0.hasPrefix("blur.") }.sorted()
        XCTAssertEqual(cases.count, 8)
        for name in cases {
            let fields = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(ref.metadata[name]!.utf8)) as? [String: Any])
            let radius = Float(try XCTUnwrap(fields["radius"] as? Double))
            let input = try XCTUnwrap(ref.entries["\(name).input"]).shape  // uint8
            let (h, w) = (input[0], input[1]), grey = input.rank == 2
            var levels = try ref.rawBytes("\(name).input")
            if grey { levels = levels.flatMap { [$0, $0, $0] } }
            let blurred = try RGBImage(width: w, height: h, pixels: levels).gaussianBlurred(radius: radius)
            var want = try ref.rawBytes(name)
            if grey { want = want.flatMap { [$0, $0, $0] } }
            let differing = zip(blurred.pixels, want).filter { $0 != $1 }.count
            XCTAssertEqual(differing, 0, "\(name): \(differing) of \(want.count) levels differ from Pillow's")
            XCTAssertNotEqual(blurred.pixels, levels, "\(name) is blurred")
            // The InitImage spelling (what the pipeline uses) is the same blur.
            let initImage = InitImage(width: w, height: h, rgb: levels.map { Float($0) / 255 }).gaussianBlurred(radius: radius)
            XCTAssertEqual(initImage.rgb.map { UInt8(($0 * 255).rounded()) }, want, name)
        }
    }

    /// A masked request whose mask diffusers blurred first (`mask_processor.blur(mask, 3)`): the
    /// blurred mask's 0.5 threshold moves the repainted edge.
    func testBlurredMaskMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            let ref = try Self.reference
            let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
            let request = try Self.request(ref, "blur3-pndm")
            XCTAssertEqual(request.maskBlur, 3)
            // The f32 networks agree with diffusers to ~1e-6 relative, as in MaskedImageToImageTests.
            try assertMatchesFixture(pipeline, request, "blur3-pndm", in: ref, latentBound: 1e-3, maxPixelError: 1)
            var unblurred = request
            unblurred.maskBlur = 0
            XCTAssertNotEqual(try pipeline.latents(for: unblurred).toFloats(), try pipeline.latents(for: request).toFloats(),
                              "the blur changes which latents are repainted")
        }
    }

    /// The crop's pieces, each from diffusers' own intermediate: the region (`get_crop_region`),
    /// the cropped image and mask resized to the output size (`resize_mode="fill"`, margins
    /// filled in crop-fill9), and the overlay of diffusers' generated images onto the original.
    func testCropRegionResizeAndOverlayEqualDiffusers() throws {
        for (ref, name) in try Self.cropCases.map({ (try Self.reference, $0) }) + Self.cropCasesXL.map({ (try Self.referenceXL, $0) }) {
            let r = try Self.request(ref, name)
            let (w, h) = (r.width!, r.height!)
            let image = try XCTUnwrap(r.initImage), mask = r.maskBlur > 0 ? r.mask!.gaussianBlurred(radius: r.maskBlur) : r.mask!
            let original = try RGBImage(width: image.width, height: image.height, pixels: image.rgb.map { UInt8(($0 * 255).rounded()) })
            let grey = mask.greyLevels
            let crop = try XCTUnwrap(MaskCrop(maskGrey: grey, width: image.width, height: image.height, outWidth: w, outHeight: h,
                                              padding: r.maskCrop!))
            let want = try ref.tensor("\(name).crop").toFloats().map { Int($0) }
            XCTAssertEqual([crop.x0, crop.y0, crop.x1, crop.y1], want, name)
            XCTAssertEqual(try crop.cropAndFill(original, width: w, height: h).pixels, try ref.rawBytes("\(name).init"), "\(name): init")
            let maskRGB = try RGBImage(width: mask.width, height: mask.height, pixels: mask.rgb.map { UInt8(($0 * 255).rounded()) })
            let filled = try crop.cropAndFill(maskRGB, width: w, height: h)
            XCTAssertEqual(stride(from: 0, to: filled.pixels.count, by: 3).map { filled.pixels[$0] }, try ref.rawBytes("\(name).mask"), "\(name): mask")
            let raw = try ref.rawBytes("\(name).raw"), final = try ref.rawBytes("\(name).image")
            for k in 0..<r.count {
                let per = w * h * 3, out = image.width * image.height * 3
                let generated = try RGBImage(width: w, height: h, pixels: Array(raw[(k * per)..<((k + 1) * per)]))
                let laid = try crop.overlay(generated, onto: original, maskGrey: grey)
                XCTAssertEqual(laid.pixels, Array(final[(k * out)..<((k + 1) * out)]), "\(name): overlay \(k)")
            }
        }
    }

    /// The whole `padding_mask_crop` request on the CPU: the crop's generation (before the overlay)
    /// and the final images against diffusers', a 4-channel UNet with a blurred mask and a
    /// 9-channel inpainting UNet at a 2:1 output size.
    func testMaskCropMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            try check(backend: { try Pipeline(modelPath: $0, backend: .cpu) }, maxPixelError: 1)
        }
    }

    /// SDXL's `padding_mask_crop` (time ids with the output size as original and target size):
    /// tiny-sdxl with a blurred mask and tiny-sdxl-inpaint's 9-channel UNet at 64×32, two images.
    func testSDXLMaskCropMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            try check(backend: { try Pipeline(modelPath: $0, backend: .cpu) }, maxPixelError: 1, ref: Self.referenceXL, cases: Self.cropCasesXL)
        }
    }

    func testMaskCropOnVulkan() throws {
        let vulkan = try testVulkanExecutor()
        // f16 weights and activations on lavapipe: the bound of the other Vulkan pipeline tests.
        try check(backend: { try Pipeline(modelPath: $0, executor: vulkan) }, maxPixelError: 12)
        try check(backend: { try Pipeline(modelPath: $0, executor: vulkan) }, maxPixelError: 12, ref: Self.referenceXL, cases: Self.cropCasesXL)
        XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")
    }

    private func check(backend: (String) throws -> Pipeline, maxPixelError: Int, ref given: SafetensorsFile? = nil,
                       cases: [String] = MaskBlurAndCropTests.cropCases) throws {
        let ref = try given ?? Self.reference
        for name in cases {
            let pipeline = try backend(try Self.model(ref, name))
            let r = try Self.request(ref, name)
            let what = "\(name) on \(pipeline.executor.backendName)"
            // The crop's own generation: its latents decoded, before the overlay.
            let raw = try pipeline.decode(try pipeline.latents(for: r))
            let rawWant = try ref.rawBytes("\(name).raw").map(Int.init)
            let images = try pipeline.generate(r)
            let want = try ref.rawBytes("\(name).image").map(Int.init)
            XCTAssertEqual(images.count, r.count, what)
            for (k, image) in images.enumerated() {
                XCTAssertEqual([image.width, image.height], [r.initImage!.width, r.initImage!.height], what)
                for (label, got, all) in [("raw", raw[k].pixels, rawWant), ("image", image.pixels, want)] {
                    let per = all.count / r.count
                    let d = pixelDifference(got.map(Int.init), Array(all[(k * per)..<((k + 1) * per)]))
                    XCTAssertLessThanOrEqual(d.largest, maxPixelError, "\(what), \(label) \(k)")
                    XCTAssertLessThan(d.mean, 1, "\(what), \(label) \(k)")
                    print("\(what), \(label) \(k): largest \(d.largest), mean \(d.mean)")
                }
            }
        }
    }

    /// Outside the crop region the init image is untouched, to the bit.
    func testOutsideTheCropTheImageIsKept() throws {
        let ref = try Self.reference
        let r = try Self.request(ref, "crop-blur")
        let image = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu).generate(r)[0]
        let crop = try ref.tensor("crop-blur.crop").toFloats().map { Int($0) }
        let original = r.initImage!.rgb.map { UInt8(($0 * 255).rounded()) }
        var outside = 0, changed = 0
        for y in 0..<image.height {
            for x in 0..<image.width where x < crop[0] || x >= crop[2] || y < crop[1] || y >= crop[3] {
                outside += 1
                for c in 0..<3 where image.pixels[(y * image.width + x) * 3 + c] != original[(y * image.width + x) * 3 + c] { changed += 1 }
            }
        }
        XCTAssertGreaterThan(outside, 1000)
        XCTAssertEqual(changed, 0)
    }

    func testBadMaskBlurAndCropAreRefused() throws {
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
        let good = try Self.request(try Self.reference, "crop-blur")
        func refused(_ change: (inout GenerationRequest) -> Void, _ message: String) {
            var r = good
            change(&r)
            XCTAssertThrowsError(try pipeline.generate(r)) { XCTAssertTrue("\($0)".contains(message), "\($0)") }
        }
        refused({ $0.maskBlur = -1 }, "mask blur -1.0: expected 0…16384 pixels")
        refused({ $0.maskBlur = .nan }, "mask blur nan")
        refused({ $0.maskCrop = -4 }, "mask crop -4: expected a padding of 0…16384 pixels")
        refused({ $0.mask = nil }, "mask blur and mask crop need a mask")
        refused({ $0.mask = InitImage(width: 96, height: 80, rgb: [Float](repeating: 0, count: 96 * 80 * 3)) },
                "the mask is black everywhere, so mask crop has no masked area")
        refused({ $0.mask = InitImage(width: 64, height: 64, rgb: [Float](repeating: 1, count: 64 * 64 * 3)) },
                "the mask is 64x64 but the init image is 96x80")
        refused({ $0.width = 60 }, "width and height must be positive multiples of 8")
    }

    /// `lumen generate --mask-blur --mask-crop` is the library's request; the flags need a mask.
    func testCommandLine() throws {
        let ref = try Self.reference
        let r = try Self.request(ref, "crop-blur")
        let out = dir + "/c.png"
        let run = try runLumen(["generate", r.prompt, "--negative-prompt", r.negativePrompt!, "--model", Fixtures.tinyFolder,
                                "--steps", "\(r.steps)", "--guidance", "\(r.guidanceScale)", "--seed", "\(r.seed)", "--scheduler", "pndm",
                                "--prompt-syntax", "plain", "--backend", "cpu", "--width", "64", "--height", "64",
                                "--init-image", Fixtures.root + "/images/canny-shapes.png", "--strength", "\(r.strength)",
                                "--mask", Fixtures.root + "/images/mask-crop96x80.png", "--mask-blur", "2", "--mask-crop", "4", "-o", out])
        XCTAssertEqual(run.status, 0, run.stderr)
        let (image, _) = try RGBImage.readPNG(out)
        XCTAssertEqual([image.width, image.height], [96, 80])
        let d = pixelDifference(image.pixels.map(Int.init), try ref.rawBytes("crop-blur.image").map(Int.init))
        XCTAssertLessThanOrEqual(d.largest, 1, "the CLI's image against diffusers'")
        let bad = try runLumen(["generate", "x", "--model", Fixtures.tinyFolder, "--init-image", Fixtures.root + "/images/init64.png",
                                "--mask-crop", "8", "-o", dir + "/x.png"])
        XCTAssertTrue(bad.stderr.contains("--mask-blur and --mask-crop need --mask"), bad.stderr)
        let negative = try runLumen(["generate", "x", "--model", Fixtures.tinyFolder, "--init-image", Fixtures.root + "/images/init64.png",
                                     "--mask", Fixtures.root + "/images/mask64.png", "--mask-blur=-2", "-o", dir + "/x.png"])
        XCTAssertTrue(negative.stderr.contains("--mask-blur -2.0: expected 0…16384 pixels"), negative.stderr)
    }
}
