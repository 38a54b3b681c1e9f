import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// TAESD as the init image's encoder (`GenerationRequest.encoder`, `--vae-encoder taesd PATH`)
/// against diffusers' img2img and inpainting pipelines given `vae=AutoencoderTiny`
/// (tools/make_taesd_encode_fixtures.py): the tiny SD model with Euler ancestral, whose steps
/// draw noise, so that a sample drawn for the encoding (the VAE's, which TAESD does not make)
/// would show; through the library on each instruction set and lavapipe, and through the CLI.
final class TAESDEncodeTests: TemporaryDirectoryTestCase {
    static var taesd: String { Fixtures.root + "/taesd/tiny" }
    static var reference: SafetensorsFile { get throws { try SafetensorsFile(path: Fixtures.root + "/taesd-encode-reference.safetensors") } }

    func request(_ ref: SafetensorsFile, _ name: String) throws -> GenerationRequest {
        let fields = try DiffusersRequest(ref, key: name).fields
        var r = try DiffusersRequest(ref, key: name).request
        r.scheduler = try XCTUnwrap(SchedulerKind(rawValue: ref.metadata["scheduler"] ?? ""))
        r.initImage = try InitImage(pngPath: Fixtures.root + "/" + (fields["init"] as! String))
        r.strength = Float(fields["strength"] as! Double)
        if let mask = fields["mask"] as? String { r.mask = try InitImage(pngPath: Fixtures.root + "/" + mask) }
        r.encoder = .taesd(path: Self.taesd)
        r.decoder = .taesd(path: Self.taesd)
        return r
    }

    func check(_ pipeline: Pipeline, _ what: String) throws {
        let ref = try Self.reference
        for name in ["img2img", "inpaint"] {
            var r = try request(ref, name)
            assertRelativeError(try pipeline.latents(for: r), try ref.tensor("\(name).latents"), below: 1e-4, "\(what): \(name) latents")
            for (decoder, image) in [(r.decoder, "image"), (ImageDecoder.vae, "vae-image")] {
                r.decoder = decoder
                let d = pixelDifference(try pipeline.generate(r)[0].pixels.map(Int.init), try DiffusersRequest.pixels255(ref, "\(name).\(image)"))
                print("\(what): \(name) \(image): largest \(d.largest), mean \(d.mean)")
                // 8-bit levels: at most one value rounded the other way from just beside .5.
                XCTAssertLessThanOrEqual(d.largest, 1, "\(what): \(name) \(image)")
                XCTAssertLessThan(d.mean, 1.0 / 255, "\(what): \(name) \(image)")
            }
            // The VAE's encoding is another image: the fixture tells the encoders apart.
            var vae = r
            vae.encoder = .vae
            XCTAssertGreaterThan(relativeError(try pipeline.latents(for: vae).toFloats(), try ref.tensor("\(name).latents").toFloats()), 0.05,
                                 "\(what): \(name) with the VAE's encoder")
        }
    }

    func testTAESDEncoderPipelinesEqualDiffusersOnCPU() throws {
        try forEachInstructionSet(modelInstructionSets) { isa in
            try check(try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu), "CPU \(isa)")
        }
    }

    func testTAESDEncoderPipelinesEqualDiffusersOnVulkan() throws {
        try check(try Pipeline(modelPath: Fixtures.tinyFolder, executor: try testVulkanExecutor()), "lavapipe")
    }

    /// An encoder for another latent space, or a decoder file given as the encoder, is refused by
    /// name before any step.
    func testMismatchedEncoderIsRefused() throws {
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
        var r = try request(try Self.reference, "img2img")
        for (path, words) in [(Fixtures.root + "/taesd-preview/wide", "16-channel latents"),
                              (Fixtures.root + "/taesd-preview/scale4", "latent of 4 pixels"),
                              (Fixtures.root + "/taesd/tiny_decoder.safetensors", "not a TAESD encoder")] {
            r.encoder = .taesd(path: path)
            var steps = 0
            XCTAssertThrowsError(try pipeline.generate(r) { if case .step = $0 { steps += 1 } }) {
                XCTAssertTrue("\($0)".contains(words) && "\($0)".contains(path), "\($0)")
            }
            XCTAssertEqual(steps, 0)
        }
    }

    func testCLIEncodesWithTAESD() throws {
        let ref = try Self.reference
        let fields = try DiffusersRequest(ref, key: "img2img").fields
        let out = dir + "/out.png"
        let r = try runLumen(["generate", try DiffusersRequest(ref, key: "img2img").prompt, "--model", Fixtures.tinyFolder,
                              "--prompt-syntax", "plain", "--negative-prompt", fields["negative_prompt"] as! String,
                              "--scheduler", "euler-a", "--init-image", Fixtures.root + "/images/init64.png",
                              "--strength", "\(fields["strength"] as! Double)", "--vae-encoder", "taesd", Self.taesd,
                              "-o", out] + (try DiffusersRequest(ref, key: "img2img").arguments))
        XCTAssertEqual(r.status, 0, r.stderr)
        let d = pixelDifference(try RGBImage.readPNG(out).image.pixels.map(Int.init), try DiffusersRequest.pixels255(ref, "img2img.vae-image"))
        XCTAssertLessThanOrEqual(d.largest, 1, "--vae-encoder taesd")
        XCTAssertLessThan(d.mean, 1.0 / 255, "--vae-encoder taesd")
    }

    func testCLIRefusesBadEncoderFlagsAndWritesNothing() throws {
        let out = dir + "/bad.png"
        let base = ["generate", "x", "--model", Fixtures.tinyFolder, "--steps", "2", "-o", out]
        let img = ["--init-image", Fixtures.root + "/images/init64.png"]
        let cases: [([String], String)] = [
            (["--vae-encoder", "taesd", Self.taesd], "nothing to encode"),
            (img + ["--vae-encoder", "taesd"], "expected vae, or taesd PATH"),
            (img + ["--vae-encoder", "fast"], "expected vae, or taesd PATH"),
            (img + ["--vae-encoder", "taesd", Fixtures.root + "/taesd-preview/wide"], "16-channel latents"),
            (img + ["--vae-encoder", "taesd", Fixtures.root + "/taesd/tiny_decoder.safetensors"], "not a TAESD encoder"),
        ]
        for (extra, words) in cases {
            let r = try runLumen(base + extra)
            XCTAssertNotEqual(r.status, 0, "\(extra)")
            XCTAssertTrue(r.stderr.contains(words), "\(extra): \(r.stderr)")
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [], "\(extra)")
        }
    }
}
