import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// ControlNets against diffusers' StableDiffusionControlNetPipeline (tools/make_controlnet_fixtures.py):
/// tiny random ControlNets on tiny-sd, one with a scale, one in a guidance window, two at once
/// (MultiControlNetModel), and one without classifier-free guidance.
final class ControlNetTests: XCTestCase {
    static var reference: SafetensorsFile { get throws { try SafetensorsFile(path: Fixtures.root + "/controlnet-reference.safetensors") } }
    static let cases = ["single", "window", "multi", "nocfg"]

    static func request(_ ref: SafetensorsFile, _ name: String) throws -> GenerationRequest {
        var (r, fields) = try fixtureRequest(ref, name)
        r.width = 64
        r.height = 64
        let image = try InitImage(pngPath: Fixtures.root + "/" + (fields["control"] as! String))
        let names = fields["controlnets"] as! [String], scales = fields["scales"] as! [Double]
        let starts = fields["starts"] as! [Double], ends = fields["ends"] as! [Double]
        r.controlNets = names.indices.map {
            ControlNetInput(path: Fixtures.root + "/" + names[$0], image: image, scale: Float(scales[$0]), start: starts[$0], end: ends[$0])
        }
        return r
    }

    func check(_ pipeline: Pipeline, latentBound: Float, maxPixelError: Int) throws {
        let ref = try Self.reference
        for name in Self.cases {
            try assertMatchesFixture(pipeline, try Self.request(ref, name), name, in: ref, latentBound: latentBound, maxPixelError: maxPixelError)
        }
    }

    func testControlNetsMatchDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            // The latents are ~10–20 in size; the f32 networks agree with diffusers to ~1e-6 relative.
            try check(try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu), latentBound: 2e-3, maxPixelError: 1)
        }
    }

    /// An SDXL ControlNet (with the added text-and-size embedding) as StableDiffusionXLControlNetPipeline
    /// draws with it.
    func testSDXLControlNetMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            let ref = try Self.reference
            var r = try Self.request(ref, "xl")
            r.negativePrompt = nil
            let pipeline = try Pipeline(modelPath: SDXLFixtureTests.folder, backend: .cpu)
            let worst = zip(try pipeline.latents(for: r).toFloats(), try ref.tensor("xl.latents").toFloats()).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(worst, 2e-3)
            let d = pixelDifference(try pipeline.generate(r)[0].pixels.map(Int.init), try ref.rawBytes("xl.image").map(Int.init))
            XCTAssertLessThanOrEqual(d.largest, 1)
            XCTAssertLessThan(d.mean, 1)
        }
    }

    func testControlNetsOnVulkan() throws {
        let vulkan = try testVulkanExecutor()
        try check(try Pipeline(modelPath: Fixtures.tinyFolder, executor: vulkan), latentBound: 0.25, maxPixelError: 12)
        XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")
    }

    /// `lumen generate --control CONTROLNET:PNG:SCALE` draws the library's (and diffusers') image.
    func testCommandLine() throws {
        let ref = try Self.reference
        let dir = NSTemporaryDirectory() + "lumen-controlnet-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = dir + "/cn.png"
        let run = try runLumen(["generate", "a photo of an astronaut riding a horse on mars", "--model", Fixtures.tinyFolder,
                                "--negative-prompt", "low quality", "--steps", "6", "--guidance", "7.5", "--seed", "51",
                                "--control", Fixtures.root + "/tiny-controlnet-a:" + Fixtures.root + "/images/control64.png:0.8",
                                "--backend", "cpu", "-o", out])
        XCTAssertEqual(run.status, 0, run.stderr)
        let (image, _) = try RGBImage.readPNG(out)
        let d = pixelDifference(image.pixels.map(Int.init), try ref.rawBytes("single.image").map(Int.init))
        XCTAssertLessThanOrEqual(d.largest, 1)
        let bad = try runLumen(["generate", "x", "--model", Fixtures.tinyFolder, "--control", "nonsense", "-o", dir + "/x.png"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("--control nonsense: expected CONTROLNET:PNG"), bad.stderr)
    }

    /// A ControlNet at scale 0 changes nothing, to the bit; a control image of another size and a
    /// ControlNet of another model family are refused by name.
    func testScaleZeroAndRefusals() throws {
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
        var r = try Self.request(try Self.reference, "single")
        var off = r
        off.controlNets[0].scale = 0
        var plain = r
        plain.controlNets = []
        XCTAssertEqual(try pipeline.latents(for: off).toFloats(), try pipeline.latents(for: plain).toFloats())
        XCTAssertNotEqual(try pipeline.latents(for: r).toFloats(), try pipeline.latents(for: plain).toFloats())

        r.controlNets[0].image = InitImage(width: 32, height: 32, rgb: [Float](repeating: 0, count: 32 * 32 * 3))
        XCTAssertThrowsError(try pipeline.generate(r)) { XCTAssertTrue("\($0)".contains("the control image is 32x32"), "\($0)") }
        let sdxl = try Pipeline(modelPath: SDXLFixtureTests.folder, backend: .cpu)
        var x = try Self.request(try Self.reference, "single")
        x.scheduler = nil
        XCTAssertThrowsError(try sdxl.generate(x)) { XCTAssertTrue("\($0)".contains("made for another model family"), "\($0)") }
    }
}
