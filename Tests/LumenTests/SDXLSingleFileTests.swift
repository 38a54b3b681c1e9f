import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// SDXL base as one checkpoint with Stability's names (tools/make_sdxl_single_file_fixtures.py:
/// tiny-sdxl written as `conditioner.embedders.{0,1}`, `model.diffusion_model` with `label_emb`,
/// `first_stage_model`, checked by diffusers' own from_single_file reading it back), against
/// StableDiffusionXLPipeline.from_single_file's images.
final class SDXLSingleFileTests: TemporaryDirectoryTestCase {
    static var checkpoint: String { Fixtures.root + "/tiny-sdxl-single-f16.safetensors" }
    static var folder: String { Fixtures.root + "/tiny-sdxl" }
    static var reference: SafetensorsFile { get throws { try SafetensorsFile(path: Fixtures.root + "/tiny-sdxl-single-file-reference.safetensors") } }

    func testF16FileMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            let ref = try Self.reference
            let pipeline = try Pipeline(modelPath: Self.checkpoint, backend: .cpu, configFolder: Self.folder)
            XCTAssertEqual(pipeline.model.family, .sdxl)
            XCTAssertEqual(pipeline.model.layout, .singleFile)
            XCTAssertEqual(pipeline.schedulerKind(for: try DiffusersRequest(ref, key: "pipeline").request), .euler)
            try assertDraws(pipeline, try DiffusersRequest(ref, key: "pipeline").request, like: "f16.image", in: ref, maxPixelError: 1)
        }
    }

    /// The same values in f32 (widened exactly, so diffusers' f16 image is the reference) and
    /// rounded to bf16 (diffusers' image of the bf16 copy): the file's dtype is read as it is.
    func testF32AndBF16FilesMatchDiffusers() throws {
        let ref = try Self.reference
        for (dtype, name) in [(DType.f32, "f16.image"), (.bf16, "bf16.image")] {
            let path = dir + "/tiny-sdxl-\(dtype).safetensors"
            try writeConverted(Self.checkpoint, to: path, dtype: dtype)
            let pipeline = try Pipeline(modelPath: path, backend: .cpu, configFolder: Self.folder)
            try assertDraws(pipeline, try DiffusersRequest(ref, key: "pipeline").request, like: name, in: ref, maxPixelError: 1)
        }
    }

    func testOnVulkanMatchesDiffusers() throws {
        let vulkan = try testVulkanExecutor()
        let ref = try Self.reference
        let pipeline = try Pipeline(modelPath: Self.checkpoint, executor: vulkan, configFolder: Self.folder)
        // The bound of SDXLFixtureTests' lavapipe run of the same network from its folder.
        try assertDraws(pipeline, try DiffusersRequest(ref, key: "pipeline").request, like: "f16.image", in: ref, maxPixelError: 12)
        XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")
    }

    /// Without --config: every shape-given field as the folder's configs (transformer depth per
    /// level, added-embedding widths, bigG's projection and all its blocks), the rest SDXL base's
    /// (diffusers' stable-diffusion-xl-base-1.0), and every parameter as many as diffusers counts.
    func testDetectionFromTheTensors() throws {
        let model = try StableDiffusionModel.load(path: Self.checkpoint)
        let folder = try StableDiffusionModel.load(path: Self.folder)
        XCTAssertEqual(model.family, .sdxl)
        XCTAssertEqual(model.singleFileDefaults, .sdxl)
        let u = model.unetConfig, f = folder.unetConfig
        XCTAssertEqual(u.blockOutChannels, f.blockOutChannels)
        XCTAssertEqual(u.layersPerBlock, f.layersPerBlock)
        XCTAssertEqual(u.downBlockTypes, f.downBlockTypes)
        XCTAssertEqual(u.upBlockTypes, f.upBlockTypes)
        XCTAssertEqual(u.crossAttentionDim, f.crossAttentionDim)
        XCTAssertEqual(u.useLinearProjection, f.useLinearProjection)
        XCTAssertEqual(u.transformerLayersPerBlock, f.transformerLayersPerBlock)
        XCTAssertEqual(u.additionEmbedType, .textTime)
        XCTAssertEqual(u.additionTimeEmbedDim, f.additionTimeEmbedDim)
        XCTAssertEqual(u.projectionClassEmbeddingsInputDim, f.projectionClassEmbeddingsInputDim)
        XCTAssertEqual(u.sampleSize, 128)  // SDXL base: 1024×1024
        XCTAssertEqual(u.attentionHeadDim, .each(u.blockOutChannels.map { max(1, $0 / 64) }))
        let t2 = try XCTUnwrap(model.textEncoder2?.config), f2 = try XCTUnwrap(folder.textEncoder2?.config)
        XCTAssertEqual(t2.numHiddenLayers, f2.numHiddenLayers)
        XCTAssertEqual(t2.projectionDim, f2.projectionDim)
        XCTAssertEqual(t2.hiddenAct, .gelu)
        XCTAssertEqual(model.textEncoderConfig.hiddenAct, .quickGelu)
        XCTAssertEqual(model.textEncoderConfig.numHiddenLayers, folder.textEncoderConfig.numHiddenLayers)
        XCTAssertEqual(model.vaeConfig.scalingFactor, 0.13025)
        XCTAssertTrue(model.vaeConfig.forceUpcast)
        XCTAssertEqual(model.vaeConfig.blockOutChannels, folder.vaeConfig.blockOutChannels)
        XCTAssertTrue(model.forceZerosForEmptyPrompt)
        XCTAssertEqual(model.xl?.tokenizer2PadToken, "!")
        let s = try XCTUnwrap(model.schedulerDefaults)
        XCTAssertEqual(s.className, "EulerDiscreteScheduler")
        XCTAssertEqual(s.timestepSpacing, "leading")
        XCTAssertEqual(s.stepsOffset, 1)
        XCTAssertEqual(s.betaSchedule, .scaledLinear)
        // What the file holds per network is diffusers' parameter count (tiny-sdxl-reference's
        // param_counts), plus bigG's scalar logit_scale, which the file carries and diffusers drops.
        var counts = try JSONDecoder().decode([String: Int].self, from: Data(try XCTUnwrap(
            try SafetensorsFile(path: Fixtures.root + "/tiny-sdxl-reference.safetensors").metadata["param_counts"]).utf8))
        counts["text_encoder_2", default: 0] += 1
        XCTAssertTrue(model.recognised.contains { $0.contains("logit_scale") }, "\(model.recognised)")
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: model.summary().map { ($0.name, $0.parameters) }), counts)
    }

    /// The `v_pred`/`ztsnr` marks of v-prediction SDXL files (NoobAI-XL's): diffusers'
    /// from_single_file ignores them, and so does the image; a notice says how to draw the model
    /// as trained, until the request asks for v-prediction.
    func testPredictionMarksAreNoticedNotApplied() throws {
        let file = try SafetensorsFile(path: Self.checkpoint)
        let path = dir + "/vpred.safetensors"
        try SafetensorsWriter.write(try file.names.map { ($0, try file.tensor($0)) }
            + [("v_pred", try Tensor(zeros: [0], dtype: .f32)), ("ztsnr", try Tensor(zeros: [0], dtype: .f32))], to: path)
        let pipeline = try Pipeline(modelPath: path, backend: .cpu)
        XCTAssertEqual(pipeline.model.trainingMarkers, ["v_pred", "ztsnr"])
        XCTAssertEqual(pipeline.schedulerKind(for: GenerationRequest(prompt: "x")), .euler)
        var request = GenerationRequest(prompt: "x")
        let notices = pipeline.notices(for: request)
        XCTAssertTrue(notices.contains { $0.contains("marked v_pred and ztsnr") && $0.contains("--scheduler-config") }, "\(notices)")
        request.predictionType = .vPrediction
        XCTAssertFalse(pipeline.notices(for: request).contains { $0.contains("v_pred") })
        XCTAssertEqual(try Pipeline(modelPath: Self.checkpoint, backend: .cpu).model.trainingMarkers, [])

        // The config the notice suggests, through --scheduler-config: read in place of SDXL's
        // defaults, no notice, and a zero-SNR v-prediction generation that runs.
        let notice = try XCTUnwrap(notices.first { $0.contains("marked v_pred") })
        let json = try Self.jsonObject(in: notice)
        let config = dir + "/zero-snr.json"
        try json.write(toFile: config, atomically: true, encoding: .utf8)
        // (The tiny file draws only with its folder's configs: --config, whose scheduler config the option replaces too.)
        let configured = try Pipeline(modelPath: path, backend: .cpu, configFolder: Self.folder, schedulerConfigPath: config)
        XCTAssertEqual(configured.model.schedulerConfigPath, config)
        request = GenerationRequest(prompt: "x")
        (request.width, request.height, request.steps) = (64, 64, 2)
        XCTAssertEqual(configured.notices(for: request).filter { $0.contains("v_pred") }, [])
        XCTAssertEqual(configured.schedulerKind(for: request), .euler)
        XCTAssertEqual(try configured.generate(request).count, 1)
        let (status, _, stderr) = try runLumen(["generate", "x", "--model", path, "--config", Self.folder, "--scheduler-config", config, "--steps", "2",
                                                "--width", "64", "--height", "64", "-o", dir + "/zero-snr.png"])
        XCTAssertEqual(status, 0, stderr)
        XCTAssertFalse(stderr.contains("marked v_pred"), stderr)
        XCTAssertThrowsError(try Pipeline(modelPath: path, backend: .cpu, schedulerConfigPath: dir + "/missing.json")) {
            XCTAssertTrue("\($0)".contains("missing.json"), "\($0)")
        }
    }

    /// The `{…}` a notice quotes.
    static func jsonObject(in notice: String) throws -> String {
        let open = try XCTUnwrap(notice.firstIndex(of: "{")), close = try XCTUnwrap(notice.firstIndex(of: "}"))
        return String(notice[open...close])
    }

    /// A CosXL-style file (EDM v-prediction, its sigma range in edm_vpred.sigma_max/sigma_min):
    /// diffusers reads it as plain SDXL; the notice gives the EDMEulerScheduler config with the
    /// file's range, and with it the EDM scheduler runs.
    func testCosXLMarkIsNoticed() throws {
        let file = try SafetensorsFile(path: Self.checkpoint)
        let path = dir + "/cosxl.safetensors"
        try SafetensorsWriter.write(try file.names.map { ($0, try file.tensor($0)) }
            + [("edm_vpred.sigma_max", try Tensor(shape: [], values: [120])), ("edm_vpred.sigma_min", try Tensor(shape: [], values: [0.002]))], to: path)
        let pipeline = try Pipeline(modelPath: path, backend: .cpu)
        var request = GenerationRequest(prompt: "x")
        let notice = try XCTUnwrap(pipeline.notices(for: request).first { $0.contains("edm_vpred") }, "\(pipeline.notices(for: request))")
        XCTAssertTrue(notice.contains("\"sigma_max\": 120.0") && notice.contains("EDMEulerScheduler"), notice)
        let json = try Self.jsonObject(in: notice)
        let config = dir + "/cosxl.json"
        try json.write(toFile: config, atomically: true, encoding: .utf8)
        let configured = try Pipeline(modelPath: path, backend: .cpu, configFolder: Self.folder, schedulerConfigPath: config)
        XCTAssertEqual(configured.schedulerKind(for: request), .edmEuler)
        XCTAssertEqual(configured.notices(for: request).filter { $0.contains("edm_vpred") }, [])
        (request.width, request.height, request.steps) = (64, 64, 2)
        XCTAssertEqual(try configured.generate(request).count, 1)
    }

    /// A base's UNet with bigG named as a refiner's (five time ids do not fit its added embedding)
    /// and an SDXL file without its second encoder are refused, naming what was found.
    func testIncompleteOrRefinerFilesAreRefused() throws {
        let file = try SafetensorsFile(path: Self.checkpoint)
        let cases: [(String, (String) -> String?, String)] = [
            ("refiner", { $0.hasPrefix("conditioner.embedders.0.") ? nil
                : $0.replacingOccurrences(of: "conditioner.embedders.1.", with: "conditioner.embedders.0.") }, "refiner"),
            ("no-bigG", { $0.hasPrefix("conditioner.embedders.1.") ? nil : $0 }, "conditioner.embedders.1.model."),
        ]
        for (name, rename, expected) in cases {
            let path = dir + "/\(name).safetensors"
            try SafetensorsWriter.write(try file.names.compactMap { n in try rename(n).map { ($0, try file.tensor(n)) } }, to: path)
            XCTAssertThrowsError(try StableDiffusionModel.load(path: path), name) { error in
                XCTAssertTrue("\(error)".contains(expected) && "\(error)".contains(path), "\(name): \(error)")
            }
        }
    }

    private func writeConverted(_ source: String, to path: String, dtype: DType) throws {
        let file = try SafetensorsFile(path: source)
        try SafetensorsWriter.write(try file.names.map { name in
            let t = try file.tensor(name)
            return (name, t.dtype == .f16 ? try t.converted(to: dtype) : t)
        }, to: path)
    }
}
