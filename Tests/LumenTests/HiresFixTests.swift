import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// The hires fix against a reference built from diffusers' pipelines doing the same two passes
/// (tools/make_hires_fixtures.py): txt2img latents, torch's interpolate, img2img from them.
final class HiresFixTests: XCTestCase {
    static var reference: SafetensorsFile { get throws { try SafetensorsFile(path: Fixtures.root + "/hires-reference.safetensors") } }

    static func request(_ ref: SafetensorsFile, _ name: String) throws -> GenerationRequest {
        var (r, fields) = try fixtureRequest(ref, name)
        r.hires = HiresFix(scale: fields["scale"] as! Double, steps: fields["hires_steps"] as? Int,
                           strength: Float(fields["strength"] as! Double),
                           upscaler: try XCTUnwrap(HiresUpscaler(rawValue: fields["upscaler"] as! String)))
        return r
    }

    func check(_ pipeline: Pipeline, latentBound: Float, maxPixelError: Int) throws {
        let ref = try Self.reference
        for name in ["euler-bilinear", "pndm-nearest", "euler-lanczos"] {
            try assertMatchesFixture(pipeline, try Self.request(ref, name), name, in: ref, latentBound: latentBound, maxPixelError: maxPixelError)
        }
    }

    func testHiresFixMatchesDiffusersTwoPasses() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            // The latents are ~1–10 in size; the f32 networks agree with diffusers to ~1e-6 relative.
            try check(try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu), latentBound: 1e-3, maxPixelError: 1)
        }
    }

    func testHiresFixOnVulkan() throws {
        let vulkan = try testVulkanExecutor()
        try check(try Pipeline(modelPath: Fixtures.tinyFolder, executor: vulkan), latentBound: 0.25, maxPixelError: 12)
        XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")
    }

    /// The upscalers on a 2×2 plane, against the values torch 2.15 interpolate prints for it.
    func testUpscalersOnASmallPlane() throws {
        let x = try Tensor(shape: [1, 1, 2, 2], values: [0, 1, 2, 3])
        XCTAssertEqual(try HiresUpscaler.latentNearest.upscale(x, height: 4, width: 4).toFloats(),
                       [0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3])
        // Bilinear, corners not aligned: sources at -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped
        // neighbour): weights 1, 0.75/0.25, 0.25/0.75, and the edge repeated.
        XCTAssertEqual(try HiresUpscaler.latent.upscale(x, height: 4, width: 4).toFloats(),
                       [0, 0.25, 0.75, 1, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2, 2.25, 2.75, 3])
    }

    func testHiresFixIsRefusedWithAnInitImage() throws {
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
        var r = try Self.request(try Self.reference, "euler-bilinear")
        r.initImage = try InitImage(pngPath: Fixtures.root + "/images/init64.png")
        XCTAssertThrowsError(try pipeline.generate(r)) { XCTAssertTrue("\($0)".contains("text-to-image requests only"), "\($0)") }
        r.initImage = nil
        r.hires?.scale = 100
        XCTAssertThrowsError(try pipeline.generate(r)) { XCTAssertTrue("\($0)".contains("scale must be 1…8"), "\($0)") }
    }
}
