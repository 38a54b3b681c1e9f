import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// TAESD previews, the TAESD final decode and the TAESD encoder against diffusers
/// (tools/make_taesd_preview_fixtures.py): the tiny SD model with Euler ancestral, a
/// callback_on_step_end decoding the step's latents with the tiny AutoencoderTiny every 2 steps,
/// the final latents decoded by it (diffusers' pipeline with vae=AutoencoderTiny), and
/// AutoencoderTiny.encode of an image; through the library (CPU, each instruction set, and
/// lavapipe) and the CLI.
final class TAESDPreviewTests: TemporaryDirectoryTestCase {
    static var folder: String { Fixtures.root + "/taesd-preview" }
    static var taesd: String { Fixtures.root + "/taesd/tiny" }
    static var reference: SafetensorsFile { get throws { try SafetensorsFile(path: folder + "/reference.safetensors") } }

    func request(_ ref: SafetensorsFile) throws -> GenerationRequest {
        var r = try DiffusersRequest(ref, key: "pipeline").request
        r.scheduler = try XCTUnwrap(SchedulerKind(rawValue: ref.metadata["scheduler"] ?? ""))
        r.previews = PreviewOptions(taesdPath: Self.taesd, every: try XCTUnwrap(Int(ref.metadata["every"] ?? "")))
        r.decoder = .taesd(path: Self.taesd)
        return r
    }

    /// The previews (steps 2, 4 and 6 of 6), each the TAESD decode of diffusers' latents at that
    /// step; the final image diffusers' TAESD decode; and the previews change nothing.
    func checkPipeline(_ pipeline: Pipeline, _ what: String) throws {
        let ref = try Self.reference
        let r = try request(ref)
        var previews: [Int] = [], events: [String] = []
        var stepLatents: [Int: Tensor] = [:]
        let images = try pipeline.generate(r) { event in
            switch event {
            case .preview(let k, let n, let images):
                XCTAssertEqual(n, 6)
                XCTAssertEqual(images.count, 1)
                previews.append(k)
                events.append("preview \(k)")
                let d = pixelDifference(images[0].pixels.map(Int.init), try DiffusersRequest.pixels255(ref, "step-\(k).image"))
                print("\(what): preview \(k): largest \(d.largest), mean \(d.mean)")
                // Pixel differences in 8-bit levels. Measured (AVX2, AVX-512, lavapipe): at most 1 level
                // and a mean of at most 5e-4, i.e. 0 to 6 of the 12,288 values one level off
                // (a value diffusers rounds from just beside .5); a preview of another step is off
                // by 2 to 10 levels on average.
                XCTAssertLessThanOrEqual(d.largest, 1, "\(what): preview at step \(k)")
                XCTAssertLessThan(d.mean, 1.0 / 255, "\(what): preview at step \(k)")
            case .step(let k, _, let latents):
                events.append("step \(k)")
                stepLatents[k] = latents
            case .image:
                events.append("image")
            }
        }
        XCTAssertEqual(previews, [2, 4, 6], what)
        XCTAssertEqual(events, ["step 1", "preview 2", "step 2", "step 3", "preview 4", "step 4", "step 5", "preview 6", "step 6", "image"], what)
        for k in [2, 4, 6] {
            // The latents the previews decoded; ~40 in size after Euler ancestral's steps.
            assertRelativeError(try XCTUnwrap(stepLatents[k]), try ref.tensor("step-\(k).latents"), below: 1e-4, "\(what): latents at step \(k)")
        }
        let d = pixelDifference(images[0].pixels.map(Int.init), try DiffusersRequest.pixels255(ref, "final.image"))
        print("\(what): TAESD final decode: largest \(d.largest), mean \(d.mean)")
        XCTAssertLessThanOrEqual(d.largest, 1, "\(what): TAESD final decode")
        XCTAssertLessThan(d.mean, 1.0 / 255, "\(what): TAESD final decode")

        // Previews neither change the latents nor draw from the generator.
        var plain = r
        plain.previews = nil
        XCTAssertEqual(try pipeline.latents(for: plain).toFloats(), try pipeline.latents(for: r).toFloats(), what)
    }

    func testPreviewsAndTAESDDecodeEqualDiffusersOnCPU() throws {
        try forEachInstructionSet(modelInstructionSets) { isa in
            try checkPipeline(try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu), "CPU \(isa)")
        }
    }

    func testPreviewsAndTAESDDecodeEqualDiffusersOnVulkan() throws {
        try checkPipeline(try Pipeline(modelPath: Fixtures.tinyFolder, executor: try testVulkanExecutor()), "lavapipe")
    }

    /// Every N steps: `every` 4 of 6 gives one preview, `every` 1 one per step, and a batch of 2
    /// gives two images a preview.
    func testPreviewCadenceAndBatch() throws {
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
        var r = try request(try Self.reference)
        r.decoder = .vae
        for (every, want) in [(4, [4]), (1, [1, 2, 3, 4, 5, 6]), (7, [])] {
            r.previews?.every = every
            var got: [Int] = []
            _ = try pipeline.latents(for: r) { if case .preview(let k, _, _) = $0 { got.append(k) } }
            XCTAssertEqual(got, want, "every \(every)")
        }
        r.count = 2
        r.previews?.every = 3
        var counts: [Int] = []
        _ = try pipeline.latents(for: r) { if case .preview(_, _, let images) = $0 { counts.append(images.count) } }
        XCTAssertEqual(counts, [2, 2])
    }

    /// TAESDs for another latent space are refused by name before any step; so is a preview
    /// cadence of 0.
    func testMismatchedTAESDIsRefusedBeforeAnyStep() throws {
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
        var r = GenerationRequest(prompt: "x")
        r.steps = 2
        for (path, words) in [(Self.folder + "/wide", "16-channel latents"), (Self.folder + "/scale4", "4 pixels per latent")] {
            for asDecoder in [false, true] {
                var bad = r
                if asDecoder { bad.decoder = .taesd(path: path) } else { bad.previews = PreviewOptions(taesdPath: path) }
                var steps = 0
                XCTAssertThrowsError(try pipeline.generate(bad) { if case .step = $0 { steps += 1 } }) {
                    XCTAssertTrue("\($0)".contains(words) && "\($0)".contains(path), "\($0)")
                }
                if !asDecoder { XCTAssertEqual(steps, 0, "refused before the first step") }
            }
        }
        var zero = r
        zero.previews = PreviewOptions(taesdPath: Self.taesd, every: 0)
        XCTAssertThrowsError(try pipeline.generate(zero)) { XCTAssertTrue("\($0)".contains("previews every 0"), "\($0)") }
        var xl = r
        xl.previews = PreviewOptions(taesdPath: Self.folder + "/taesdxl_decoder.safetensors")
        XCTAssertTrue(pipeline.notices(for: xl).contains { $0.contains("looks like TAESDXL") }, "\(pipeline.notices(for: xl))")
    }

    /// The encoder, from the folder and from the original taesd_encoder layout, against
    /// AutoencoderTiny.encode(image).latents.
    func checkEncoder(_ executor: any Executor, _ what: String) throws {
        let ref = try Self.reference
        for path in [Self.taesd, Self.folder + "/tiny_encoder.safetensors"] {
            let encoder = try AutoencoderTinyEncoder(path: path)
            XCTAssertEqual(encoder.config.blocks, [1, 1, 1, 1])
            XCTAssertEqual(encoder.config.latentChannels, 4)
            let out = try encoder.encode(try ref.tensor("encoder.image"), executor: executor)
            print("\(what): encoder relative error \(relativeError(out.toFloats(), try ref.tensor("encoder.latents").toFloats()))")
            // Measured 3.0e-7 (CPU, both instruction sets), 4.3e-7 (lavapipe); the latents are ~0.3 in size.
            assertRelativeError(out, try ref.tensor("encoder.latents"), below: 1e-5, "\(what): \((path as NSString).lastPathComponent)")
        }
        XCTAssertThrowsError(try AutoencoderTinyEncoder(path: Fixtures.root + "/taesd/tiny_decoder.safetensors")) {
            XCTAssertTrue("\($0)".contains("not a TAESD encoder") && "\($0)".contains("tiny_decoder.safetensors"), "\($0)")
        }
    }

    func testEncoderEqualsDiffusersOnCPU() throws {
        try forEachInstructionSet(modelInstructionSets) { isa in try checkEncoder(CPUExecutor(), "CPU \(isa)") }
    }

    func testEncoderEqualsDiffusersOnVulkan() throws {
        try checkEncoder(try testVulkanExecutor(), "lavapipe")
    }

    // MARK: - The CLI

    func testCLIWritesPreviewsAndDecodesWithTAESD() throws {
        let ref = try Self.reference
        let out = dir + "/out.png"
        let r = try runLumen(["generate", try DiffusersRequest(ref, key: "pipeline").prompt, "--model", Fixtures.tinyFolder,
                              "--prompt-syntax", "plain", "--negative-prompt", "blurry", "--scheduler", "euler-a",
                              "--width", "64", "--height", "64", "--preview", "taesd", Self.taesd, "--preview-every", "2",
                              "--vae-decoder", "taesd", "-o", out] + (try DiffusersRequest(ref, key: "pipeline").arguments))
        XCTAssertEqual(r.status, 0, r.stderr)
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        XCTAssertEqual(files, ["out.png", "out.step-0002.png", "out.step-0004.png", "out.step-0006.png"])
        for k in [2, 4, 6] {
            let image = try RGBImage.readPNG(dir + "/out.step-000\(k).png").image
            let d = pixelDifference(image.pixels.map(Int.init), try DiffusersRequest.pixels255(ref, "step-\(k).image"))
            XCTAssertLessThanOrEqual(d.largest, 1, "preview \(k)")
            XCTAssertLessThan(d.mean, 1.0 / 255, "preview \(k)")
        }
        let d = pixelDifference(try RGBImage.readPNG(out).image.pixels.map(Int.init), try DiffusersRequest.pixels255(ref, "final.image"))
        XCTAssertLessThanOrEqual(d.largest, 1, "--vae-decoder taesd")
        XCTAssertLessThan(d.mean, 1.0 / 255, "--vae-decoder taesd")
    }

    /// Previews of each image of a batch and of the hires fix's second pass get names of their own.
    func testCLIPreviewNamesForBatchesAndHires() throws {
        // Euler: 2 steps are 2 scheduler steps (the model's PNDM would run 3).
        let base = ["generate", "a red circle", "--model", Fixtures.tinyFolder, "--steps", "2", "--seed", "3", "--scheduler", "euler",
                    "--width", "64", "--height", "64", "--preview", "taesd", Self.taesd]
        var r = try runLumen(base + ["--count", "2", "-o", dir + "/b.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(),
                       ["b-1.png", "b-1.step-0001.png", "b-1.step-0002.png", "b-2.png", "b-2.step-0001.png", "b-2.step-0002.png"])
        try FileManager.default.contentsOfDirectory(atPath: dir).forEach { try FileManager.default.removeItem(atPath: dir + "/" + $0) }
        // The second pass: 0.5 of 2 steps at 128×128.
        r = try runLumen(base + ["--hires", "2", "--hires-strength", "0.5", "-o", dir + "/h.png"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(),
                       ["h.hires.step-0001.png", "h.png", "h.step-0001.png", "h.step-0002.png"])
        XCTAssertEqual(try RGBImage.readPNG(dir + "/h.hires.step-0001.png").image.width, 128)
        XCTAssertEqual(try RGBImage.readPNG(dir + "/h.step-0002.png").image.width, 64)
    }

    func testCLIRefusesBadTAESDFlagsAndWritesNothing() throws {
        let out = dir + "/bad.png"
        let base = ["generate", "x", "--model", Fixtures.tinyFolder, "--steps", "2", "-o", out]
        let cases: [([String], String)] = [
            (["--preview", "taesd", Self.folder + "/wide"], "16-channel latents"),
            (["--vae-decoder", "taesd", Self.folder + "/scale4"], "4 pixels per latent"),
            (["--preview-every", "2"], "--preview-every 2 needs --preview taesd PATH"),
            (["--preview", Self.taesd], "expected taesd PATH"),
            (["--preview", "taesd", Self.taesd, "--preview-every", "0"], "--preview-every 0"),
            (["--vae-decoder", "taesd"], "--vae-decoder taesd needs the TAESD's path"),
            (["--vae-decoder", "fast"], "expected vae, or taesd PATH"),
            (["--preview", "taesd", Self.folder + "/none"], "none"),
        ]
        for (extra, words) in cases {
            let r = try runLumen(base + extra)
            XCTAssertNotEqual(r.status, 0, "\(extra)")
            XCTAssertTrue(r.stderr.contains(words), "\(extra): \(r.stderr)")
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [], "\(extra)")
        }
    }
}

extension DiffusersRequest {
    /// An image stored as uint8 values in float32 (0…255).
    static func pixels255(_ file: SafetensorsFile, _ name: String) throws -> [Int] {
        try file.tensor(name).toFloats().map { Int($0.rounded()) }
    }
}
