import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// Stable Diffusion 2.x against diffusers/transformers (tools/make_sd2_fixtures.py): a tiny model
/// with what makes a 2.x model (OpenCLIP text encoder with GELU and the penultimate layer, "!"
/// padding, linear transformer projections, per-level head counts, DDIM with v-prediction), from
/// its diffusers folder and from a single file with the original names (OpenCLIP's fused q/k/v).
final class SD2FixtureTests: XCTestCase {
    static var folder: String { Fixtures.root + "/tiny-sd2" }
    static var singleFile: String { Fixtures.root + "/tiny-sd2.safetensors" }
    static var reference: String { Fixtures.root + "/tiny-sd2-reference.safetensors" }
    static func ref(_ name: String) throws -> Tensor { try SafetensorsFile(path: reference).tensor(name) }

    /// (name, model path, --config).
    static let layouts: [(String, String, String?)] = [
        ("folder", folder, nil),
        ("single file with --config", singleFile, folder),
        ("single file, configs inferred", singleFile, nil),
    ]

    func testTokenizerPadsWithExclamationMark() throws {
        let expected = try Self.ref("text.input_ids").toInts()
        XCTAssertEqual(expected.last, 0, "the reference pads with \"!\" (0): the test would be vacuous otherwise")
        for (name, path, config) in Self.layouts {
            let pipeline = try Pipeline(modelPath: path, backend: .cpu, configFolder: config)
            let ids = ["a photo of an astronaut riding a horse on mars", ""].flatMap { pipeline.tokenizer.ids($0).map(Int.init) }
            XCTAssertEqual(ids, expected, name)
        }
    }

    func testTextEncoderMatchesTransformers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            let ids64 = try Self.ref("text.input_ids")
            let ids = try Tensor(shape: ids64.shape, indices: ids64.toInts().map(Int32.init))
            for (layout, path, config) in Self.layouts {
                let model = try StableDiffusionModel.load(path: path, configFolder: config)
                XCTAssertEqual(model.family, .sd2, layout)
                XCTAssertEqual(model.textEncoderConfig.numHiddenLayers, 23, "\(layout): the 24th OpenCLIP block is not used")
                XCTAssertEqual(model.textEncoderConfig.hiddenAct, .gelu, layout)
                let g = Graph()
                let input = try g.input("ids", shape: ids.shape, dtype: .i32)
                let out = try CLIPTextModel(config: model.textEncoderConfig).build(g, ids: input, weights: model.textEncoderWeights)
                let result = try CPUExecutor().compile(g, outputs: [out.lastHiddenState]).run(["ids": ids])
                assertRelativeError(result[out.lastHiddenState]!, try Self.ref("text.last_hidden_state"), below: 1e-5, "SD 2.x text encoder (\(layout))")
            }
        }
    }

    func testUNetMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            let sample = try Self.ref("unet.sample"), timestep = try Self.ref("unet.timestep")
            let context = try Self.ref("unet.encoder_hidden_states")
            // The inferred configs assume 2.1's 64-wide heads, which the tiny UNet (2 heads of 16 and
            // 32) does not have: only the folder and --config layouts can match its output.
            for (layout, path, config) in Self.layouts.prefix(2) {
                let model = try StableDiffusionModel.load(path: path, configFolder: config)
                XCTAssertTrue(model.unetConfig.useLinearProjection, layout)
                let g = Graph()
                let x = try g.input("sample", shape: sample.shape), t = try g.input("timestep", shape: timestep.shape)
                let c = try g.input("context", shape: context.shape)
                let y = try UNet2DConditionModel(config: model.unetConfig).build(g, sample: x, timestep: t, context: c, weights: model.unetWeights)
                let out = try CPUExecutor().compile(g, outputs: [y]).run(["sample": sample, "timestep": timestep, "context": context])
                assertRelativeError(out[y]!, try Self.ref("unet.out"), below: 2e-5, "SD 2.x UNet (\(layout))")
            }
        }
    }

    /// A whole v-prediction generation, as diffusers' StableDiffusionPipeline draws it.
    func testGenerationMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            try checkGeneration(try Pipeline(modelPath: Self.folder, backend: .cpu), maxPixelError: 1)
            try checkGeneration(try Pipeline(modelPath: Self.singleFile, backend: .cpu, configFolder: Self.folder), maxPixelError: 1)
        }
    }

    /// `predictionType` overrides the scheduler config's: epsilon on the same weights draws what
    /// diffusers draws with its scheduler's prediction_type set to epsilon.
    func testPredictionTypeOverride() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            try checkGeneration(try Pipeline(modelPath: Self.folder, backend: .cpu), maxPixelError: 1,
                                predictionType: .epsilon, expected: "pipeline.image_as_epsilon")
        }
    }

    func testGenerationOnVulkanMatchesDiffusers() throws {
        let vulkan = try testVulkanExecutor()
        try checkGeneration(try Pipeline(modelPath: Self.folder, executor: vulkan), maxPixelError: 12)
        XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")
    }

    func checkGeneration(_ pipeline: Pipeline, maxPixelError: Int, predictionType: PredictionType? = nil,
                         expected name: String = "pipeline.image", file: StaticString = #filePath, line: UInt = #line) throws {
        let ref = try SafetensorsFile(path: Self.reference)
        var r = try DiffusersRequest(ref, key: "pipeline").request
        r.predictionType = predictionType
        XCTAssertEqual(pipeline.schedulerKind(for: r), .ddim, file: file, line: line)
        try assertDraws(pipeline, r, like: name, in: ref, maxPixelError: maxPixelError, file: file, line: line)
    }

    /// Without --config, a 2.x single file is read as diffusers' from_single_file reads it: the
    /// shapes, and Stable Diffusion 2.1's settings for what the weights cannot show.
    func testSingleFileWithoutConfigGetsSD21Defaults() throws {
        let model = try StableDiffusionModel.load(path: Self.singleFile)
        XCTAssertEqual(model.family, .sd2)
        XCTAssertEqual(model.layout, .singleFile)
        let u = model.unetConfig
        XCTAssertEqual(u.blockOutChannels, [32, 64])
        XCTAssertTrue(u.useLinearProjection)
        XCTAssertEqual(u.crossAttentionDim, 8)
        XCTAssertEqual(u.sampleSize, 96)
        XCTAssertEqual(model.schedulerDefaults?.predictionType, "v_prediction")
        XCTAssertTrue(model.recognised.contains { $0.contains("ignored text encoder blocks 23..<24") }, "\(model.recognised)")
        XCTAssertTrue(model.recognised.contains { $0.contains("text_projection, logit_scale") }, "\(model.recognised)")
        let pipeline = try Pipeline(modelPath: Self.singleFile, backend: .cpu)
        let request = GenerationRequest(prompt: "x")
        XCTAssertEqual(pipeline.schedulerKind(for: request), .ddim)
        XCTAssertEqual(pipeline.size(for: request).width, 768)
        // The folder's own scheduler config is read when --config gives it.
        let withConfig = try StableDiffusionModel.load(path: Self.singleFile, configFolder: Self.folder)
        XCTAssertNil(withConfig.schedulerDefaults)
        XCTAssertEqual(try Pipeline(modelPath: Self.singleFile, backend: .cpu, configFolder: Self.folder).size(for: request).width, 64)
    }

    func testTruncatedSD2FileNamesTheMissingTensor() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lumen-sd2-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = try SafetensorsFile(path: Self.singleFile)
        let kept = source.names.filter { !$0.hasSuffix("resblocks.3.attn.in_proj_weight") }
        try SafetensorsWriter.write(try kept.map { ($0, try source.tensor($0)) }, to: dir + "/cut.safetensors")
        var request = GenerationRequest(prompt: "x")
        request.steps = 1
        XCTAssertThrowsError(try Pipeline(modelPath: dir + "/cut.safetensors", backend: .cpu, configFolder: Self.folder).generate(request)) { error in
            XCTAssertTrue("\(error)".contains("cond_stage_model.model.transformer.resblocks.3.attn.in_proj_weight"), "\(error)")
        }
    }
}
