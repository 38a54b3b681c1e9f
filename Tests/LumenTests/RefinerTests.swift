import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// The SDXL refiner (tools/make_refiner_fixtures.py: a tiny random refiner with bigG alone and five
/// time ids, as a diffusers folder and a single file read back by diffusers' from_single_file)
/// against StableDiffusionXLImg2ImgPipeline(requires_aesthetics_score=True): image-to-image on its
/// own, and after the tiny SDXL base (diffusers' denoising_end / denoising_start handoff).
final class RefinerTests: TemporaryDirectoryTestCase {
    static var folder: String { Fixtures.root + "/tiny-sdxl-refiner" }
    static var checkpoint: String { Fixtures.root + "/tiny-sdxl-refiner-single-f16.safetensors" }
    static var reference: SafetensorsFile { get throws { try SafetensorsFile(path: Fixtures.root + "/refiner-reference.safetensors") } }

    /// The fixture's image-to-image request: init64.png at its strength.
    static func imageToImage(_ ref: SafetensorsFile) throws -> GenerationRequest {
        var r = try DiffusersRequest(ref, key: "pipeline").request
        r.initImage = try InitImage(pngPath: Fixtures.root + "/images/init64.png")
        r.strength = Float(try XCTUnwrap(Double(ref.metadata["strength"] ?? "")))
        return r
    }

    /// The fixture's base request (64×64) and its handoff point.
    static func handoff(_ ref: SafetensorsFile) throws -> (GenerationRequest, Double) {
        var r = try DiffusersRequest(ref, key: "pipeline").request
        r.width = 64
        r.height = 64
        return (r, try XCTUnwrap(Double(ref.metadata["split"] ?? "")))
    }

    func testFolderIsReadAsARefiner() throws {
        let model = try StableDiffusionModel.load(path: Self.folder)
        XCTAssertEqual(model.family, .sdxl)
        XCTAssertTrue(model.isRefiner)
        XCTAssertNil(model.xl)
        XCTAssertEqual(model.refiner, SDXLRefinerParts(requiresAestheticsScore: true, forceZerosForEmptyPrompt: false))
        XCTAssertTrue(model.variant.hasPrefix("refiner (OpenCLIP bigG only; aesthetic-score conditioning"), model.variant)
        XCTAssertEqual(model.summary().map(\.name), ["text_encoder_2", "unet", "vae"])
        XCTAssertEqual(model.textEncoderConfig.projectionDim, 8)
        XCTAssertEqual(model.unetConfig.addedTimeIdCount(pooledWidth: 8), 5)
        // diffusers' parameter counts of the same networks (the fixture's metadata).
        let counts = try JSONSerialization.jsonObject(with: Data(try XCTUnwrap(try Self.reference.metadata["param_counts"]).utf8)) as! [String: Int]
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: model.summary().map { ($0.name, $0.parameters) }), counts)
    }

    func testImageToImageMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            let ref = try Self.reference
            let pipeline = try Pipeline(modelPath: Self.folder, backend: .cpu)
            var r = try Self.imageToImage(ref)
            try assertDraws(pipeline, r, like: "img2img.image", in: ref, maxPixelError: 1)
            let scores = try JSONSerialization.jsonObject(with: Data(try XCTUnwrap(ref.metadata["aesthetic"]).utf8)) as! [String: Double]
            r.aestheticScore = Float(try XCTUnwrap(scores["aesthetic_score"]))
            r.negativeAestheticScore = Float(try XCTUnwrap(scores["negative_aesthetic_score"]))
            try assertDraws(pipeline, r, like: "img2img.aesthetic", in: ref, maxPixelError: 1)
        }
    }

    /// The single file with the folder's configs (as the fixture's from_single_file(config=folder)),
    /// and without them: the shapes as the folder's, the rest stable-diffusion-xl-refiner-1.0's.
    func testSingleFileMatchesDiffusers() throws {
        let ref = try Self.reference
        let pipeline = try Pipeline(modelPath: Self.checkpoint, backend: .cpu, configFolder: Self.folder)
        XCTAssertTrue(pipeline.model.isRefiner)
        XCTAssertEqual(pipeline.model.layout, .singleFile)
        try assertDraws(pipeline, try Self.imageToImage(ref), like: "single.image", in: ref, maxPixelError: 1)

        let model = try StableDiffusionModel.load(path: Self.checkpoint)
        let folder = try StableDiffusionModel.load(path: Self.folder)
        XCTAssertEqual(model.singleFileDefaults, .sdxlRefiner)
        XCTAssertEqual(model.refiner, SDXLRefinerParts(requiresAestheticsScore: true, forceZerosForEmptyPrompt: false))
        let u = model.unetConfig, f = folder.unetConfig
        XCTAssertEqual(u.blockOutChannels, f.blockOutChannels)
        XCTAssertEqual(u.downBlockTypes, f.downBlockTypes)
        XCTAssertEqual(u.upBlockTypes, f.upBlockTypes)
        XCTAssertEqual(u.transformerLayersPerBlock, f.transformerLayersPerBlock)
        XCTAssertEqual(u.crossAttentionDim, f.crossAttentionDim)
        XCTAssertEqual(u.additionTimeEmbedDim, f.additionTimeEmbedDim)
        XCTAssertEqual(u.projectionClassEmbeddingsInputDim, f.projectionClassEmbeddingsInputDim)
        XCTAssertEqual(u.sampleSize, 128)
        XCTAssertEqual(model.textEncoderConfig.numHiddenLayers, folder.textEncoderConfig.numHiddenLayers)
        XCTAssertEqual(model.textEncoderConfig.projectionDim, folder.textEncoderConfig.projectionDim)
        XCTAssertEqual(model.textEncoderConfig.hiddenAct, .gelu)
        XCTAssertEqual(model.tokenizerPadToken, "!")
        XCTAssertEqual(model.schedulerDefaults?.className, "EulerDiscreteScheduler")
        XCTAssertTrue(model.vaeConfig.forceUpcast)
        // The folder's counts (diffusers', testFolderIsReadAsARefiner) plus bigG's scalar logit_scale,
        // which the file carries and diffusers drops, as in SDXLSingleFileTests.
        var counts = Dictionary(uniqueKeysWithValues: folder.summary().map { ($0.name, $0.parameters) })
        counts["text_encoder_2", default: 0] += 1
        XCTAssertTrue(model.recognised.contains { $0.contains("logit_scale") }, "\(model.recognised)")
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: model.summary().map { ($0.name, $0.parameters) }), counts)
        XCTAssertNoThrow(try model.checkRunnable())
    }

    /// Base to refiner: the base's latents at the handoff, then the refiner's image, as diffusers'
    /// two pipelines draw them.
    func testHandoffMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            let ref = try Self.reference
            let base = try Pipeline(modelPath: SDXLFixtureTests.folder, backend: .cpu)
            let refiner = try Pipeline(modelPath: Self.folder, backend: .cpu)
            try checkHandoff(base, refiner, ref, maxPixelError: 1)
        }
    }

    func testOnVulkanMatchesDiffusers() throws {
        let vulkan = try testVulkanExecutor()
        let ref = try Self.reference
        let refiner = try Pipeline(modelPath: Self.folder, executor: vulkan)
        // The bound of the other lavapipe pipeline tests (SDXLFixtureTests: f16 activations).
        try assertDraws(refiner, try Self.imageToImage(ref), like: "img2img.image", in: ref, maxPixelError: 12)
        try checkHandoff(try Pipeline(modelPath: SDXLFixtureTests.folder, executor: vulkan), refiner, ref, maxPixelError: 12, latentError: 0.25)
        XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")
    }

    func checkHandoff(_ base: Pipeline, _ refiner: Pipeline, _ ref: SafetensorsFile, maxPixelError: Int, latentError: Float = 2e-3,
                      line: UInt = #line) throws {
        let (request, split) = try Self.handoff(ref)
        var steps: [(Int, Int)] = []
        let (first, _) = try base.refinerPasses(request, refinerStart: split)
        let latents = try base.latents(for: first)
        let worst = zip(latents.toFloats(), try ref.tensor("handoff.latents").toFloats()).map { abs($0 - $1) }.max()!
        XCTAssertLessThan(worst, latentError, "base latents at the handoff (~30 in size)", line: line)
        let image = try base.generate(request, refiner: refiner, refinerStart: split) { event in
            if case .step(let k, let n, _) = event { steps.append((k, n)) }
        }[0]
        // 8 leading steps 876…1: the six at or above round(1000 − 0.8 · 1000) = 200 on the base, two on the refiner.
        XCTAssertEqual(steps.map { "\($0.0)/\($0.1)" }, ["1/6", "2/6", "3/6", "4/6", "5/6", "6/6", "1/2", "2/2"], line: line)
        let d = pixelDifference(image.pixels.map(Int.init), try DiffusersRequest.pixels(ref, "handoff.image"))
        XCTAssertLessThanOrEqual(d.largest, maxPixelError, "handoff on \(base.executor.backendName)", line: line)
        XCTAssertLessThan(d.mean, 1, line: line)
    }

    /// `lumen generate --refiner` and the refiner alone with `--init-image`, against the same
    /// images; `lumen info` names it.
    func testCommandLine() throws {
        let ref = try Self.reference
        let call = try DiffusersRequest(ref, key: "pipeline")
        let out = dir + "/handoff.png"
        var r = try runLumen(["generate", call.prompt, "--model", SDXLFixtureTests.folder, "--refiner", Self.folder, "--refiner-start", "0.8",
                              "--width", "64", "--height", "64", "--prompt-syntax", "plain", "--backend", "cpu", "-o", out] + call.arguments)
        XCTAssertEqual(r.status, 0, r.stderr)
        var d = pixelDifference(try RGBImage.readPNG(out).0.pixels.map(Int.init), try DiffusersRequest.pixels(ref, "handoff.image"))
        XCTAssertLessThanOrEqual(d.largest, 1)
        let text = try RGBImage.readPNGWithText(out).text.first { $0.key == "parameters" }?.value ?? ""
        XCTAssertTrue(text.contains("Refiner: tiny-sdxl-refiner, Refiner switch at: 0.8"), text)

        let alone = dir + "/img2img.png"
        r = try runLumen(["generate", call.prompt, "--model", Self.folder, "--init-image", Fixtures.root + "/images/init64.png",
                          "--strength", ref.metadata["strength"] ?? "", "--prompt-syntax", "plain", "--backend", "cpu", "-o", alone] + call.arguments)
        XCTAssertEqual(r.status, 0, r.stderr)
        d = pixelDifference(try RGBImage.readPNG(alone).0.pixels.map(Int.init), try DiffusersRequest.pixels(ref, "img2img.image"))
        XCTAssertLessThanOrEqual(d.largest, 1)

        r = try runLumen(["info", Self.checkpoint])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("variant: refiner (OpenCLIP bigG only; aesthetic-score conditioning: 6.0, negative 2.5"), r.stdout)
        XCTAssertTrue(r.stdout.contains("stabilityai/stable-diffusion-xl-refiner-1.0"), r.stdout)
        XCTAssertTrue(r.stdout.contains("text_encoder_2"), r.stdout)

        for (args, words) in [(["--refiner-start", "0.8"], "--refiner-start needs --refiner"),
                              (["--refiner", Self.folder, "--refiner-start", "1.5"], "--refiner-start 1.5"),
                              (["--refiner", Self.folder, "--hires", "2"], "--refiner cannot be combined with --hires"),
                              (["--aesthetic-score", "nan"], "--aesthetic-score")] {
            let bad = dir + "/bad.png"
            r = try runLumen(["generate", "x", "--model", SDXLFixtureTests.folder, "-o", bad] + args)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            XCTAssertTrue(r.stderr.contains(words), "\(args): \(r.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: bad))
        }
    }

    /// A refiner folder whose model_index.json says no aesthetic score while its UNet reads five
    /// time ids is refused at load, naming the field and the fix (diffusers fails at the first step).
    func testMismatchedTimeIdsAreRefused() throws {
        let copy = dir + "/refiner"
        try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: true)
        for sub in ["scheduler", "text_encoder_2", "tokenizer_2", "unet", "vae"] {
            try FileManager.default.createSymbolicLink(atPath: copy + "/" + sub, withDestinationPath: Self.folder + "/" + sub)
        }
        var index = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.folder + "/model_index.json"))) as! [String: Any]
        index["requires_aesthetics_score"] = false
        try JSONSerialization.data(withJSONObject: index).write(to: URL(fileURLWithPath: copy + "/model_index.json"))
        XCTAssertThrowsError(try Pipeline(modelPath: copy, backend: .cpu)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("projection_class_embeddings_input_dim") && text.contains("28") && text.contains("requires_aesthetics_score true"), text)
        }
    }

    /// Handoffs that cannot be run as asked are refused by name before any work.
    func testBadHandoffsAreRefused() throws {
        let ref = try Self.reference
        let base = try Pipeline(modelPath: SDXLFixtureTests.folder, backend: .cpu)
        let refiner = try Pipeline(modelPath: Self.folder, backend: .cpu)
        let (request, _) = try Self.handoff(ref)
        func refused(_ r: GenerationRequest, start: Double = 0.8, _ words: String, line: UInt = #line) {
            XCTAssertThrowsError(try base.generate(r, refiner: refiner, refinerStart: start), line: line) {
                XCTAssertTrue("\($0)".contains(words), "\($0)", line: line)
            }
        }
        refused(request, start: 1, "refiner start must be in (0, 1)")
        var a = request; a.denoisingEnd = 0.5
        refused(a, "sets denoising end and start itself")
        var b = request; b.hires = HiresFix(scale: 2)
        refused(b, "hires fix")
        var c = request; c.aestheticScore = .nan
        refused(c, "aesthetic score must be a finite number")
    }
}
