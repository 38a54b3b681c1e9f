import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// Stable Diffusion XL against diffusers (tools/make_sdxl_fixtures.py): a tiny model with SDXL's
/// two text encoders (penultimate states side by side, the second's pooled projection), the UNet's
/// added size-and-text conditioning, and StableDiffusionXLPipeline's zero unconditional inputs.
final class SDXLFixtureTests: XCTestCase {
    static var folder: String { Fixtures.root + "/tiny-sdxl" }
    static var reference: SafetensorsFile { get throws { try SafetensorsFile(path: Fixtures.root + "/tiny-sdxl-reference.safetensors") } }

    func testTextEncodersMatchTransformers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            let ref = try Self.reference
            let model = try StableDiffusionModel.load(path: Self.folder)
            XCTAssertEqual(model.family, .sdxl)
            XCTAssertTrue(model.forceZerosForEmptyPrompt)
            let (config2, weights2) = try XCTUnwrap(model.textEncoder2)
            // `lumen info`'s summary lists all four networks with diffusers' parameter counts.
            let counts = try JSONDecoder().decode([String: Int].self, from: Data(try XCTUnwrap(ref.metadata["param_counts"]).utf8))
            XCTAssertEqual(Dictionary(uniqueKeysWithValues: model.summary().map { ($0.name, $0.parameters) }), counts)
            let pipeline = try Pipeline(modelPath: Self.folder, backend: .cpu)
            let prompts = ["a photo of an astronaut riding a horse on mars", ""]
            let ids1 = prompts.map { pipeline.tokenizer.ids($0) }, ids2 = prompts.map { pipeline.tokenizer2!.ids($0) }
            XCTAssertEqual(ids1.flatMap { $0.map(Int.init) }, try ref.tensor("text.input_ids").toInts())
            XCTAssertEqual(ids2.flatMap { $0.map(Int.init) }, try ref.tensor("text.input_ids_2").toInts())
    
            let g = Graph()
            let a = try g.input("a", shape: [2, 77], dtype: .i32), b = try g.input("b", shape: [2, 77], dtype: .i32)
            let rows = try g.input("rows", shape: [2], dtype: .i32)
            let out1 = try CLIPTextModel(config: model.textEncoderConfig).build(g, ids: a, weights: model.textEncoderWeights)
            let encoder2 = CLIPTextModel(config: config2)
            let out2 = try encoder2.build(g, ids: b, weights: weights2)
            let h1 = out1.hiddenStates[out1.hiddenStates.count - 2], h2 = out2.hiddenStates[out2.hiddenStates.count - 2]
            let pooled = try encoder2.textEmbeds(g, out2, eosRows: rows, weights: weights2)
            let result = try CPUExecutor().compile(g, outputs: [h1, h2, pooled]).run([
                "a": try Tensor(shape: [2, 77], indices: Array(ids1.joined())), "b": try Tensor(shape: [2, 77], indices: Array(ids2.joined())),
                "rows": try Tensor(shape: [2], indices: CLIPTextModel.eosRows(ids2)),
            ])
            assertRelativeError(result[h1]!, try ref.tensor("text.hidden_1"), below: 1e-5, "text_encoder penultimate")
            assertRelativeError(result[h2]!, try ref.tensor("text.hidden_2"), below: 1e-5, "text_encoder_2 penultimate")
            assertRelativeError(result[pooled]!, try ref.tensor("text.text_embeds"), below: 1e-5, "text_encoder_2 text_embeds")
        }
    }

    func testUNetWithAddedConditioningMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            let ref = try Self.reference
            let model = try StableDiffusionModel.load(path: Self.folder)
            let names = ["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"]
            let inputs = try Dictionary(uniqueKeysWithValues: names.map { ($0, try ref.tensor("unet.\($0)")) })
            let g = Graph()
            let v = try Dictionary(uniqueKeysWithValues: names.map { ($0, try g.input($0, shape: inputs[$0]!.shape)) })
            let unet = try UNet2DConditionModel(config: model.unetConfig)
            let y = try unet.build(g, sample: v["sample"]!, timestep: v["timestep"]!, context: v["encoder_hidden_states"]!,
                                   weights: model.unetWeights, added: (v["text_embeds"]!, v["time_ids"]!))
            let out = try CPUExecutor().compile(g, outputs: [y]).run(inputs)
            assertRelativeError(out[y]!, try ref.tensor("unet.out"), below: 2e-5, "SDXL UNet")
            // Without the added conditioning an SDXL UNet is refused, by name.
            let g2 = Graph()
            XCTAssertThrowsError(try unet.build(g2, sample: try g2.input("s", shape: [2, 4, 8, 8]), timestep: try g2.input("t", shape: [2]),
                                                context: try g2.input("c", shape: [2, 77, 24]), weights: model.unetWeights)) { error in
                XCTAssertTrue("\(error)".contains("text_embeds"), "\(error)")
            }
        }
    }

    /// Whole generations as StableDiffusionXLPipeline draws them: no negative prompt (zero
    /// unconditional inputs) and a negative prompt.
    func testGenerationMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            try checkGeneration(try Pipeline(modelPath: Self.folder, backend: .cpu), maxPixelError: 1)
        }
    }

    func testGenerationOnVulkanMatchesDiffusers() throws {
        let vulkan = try testVulkanExecutor()
        try checkGeneration(try Pipeline(modelPath: Self.folder, executor: vulkan), maxPixelError: 12)
        XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")
    }

    /// `clipSkip` 1 takes both encoders' states one layer earlier, as diffusers' clip_skip does.
    func testClipSkipMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            let ref = try Self.reference
            var r = try DiffusersRequest(ref, key: "pipeline").request
            r.clipSkip = 1
            try assertDraws(try Pipeline(modelPath: Self.folder, backend: .cpu), r, like: "pipeline.image_clip_skip_1", in: ref, maxPixelError: 1)
        }
    }

    /// Image-to-image as StableDiffusionXLImg2ImgPipeline (base model, no aesthetic score) draws it.
    func testImageToImageMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            let ref = try Self.reference
            var r = try DiffusersRequest(ref, key: "pipeline").request
            r.initImage = try InitImage(pngPath: Fixtures.root + "/images/init64.png")
            r.strength = Float(try XCTUnwrap(Double(ref.metadata["img2img_strength"] ?? "")))
            try assertDraws(try Pipeline(modelPath: Self.folder, backend: .cpu), r, like: "pipeline.img2img", in: ref, maxPixelError: 1)
        }
    }

    func checkGeneration(_ pipeline: Pipeline, maxPixelError: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        let ref = try Self.reference
        // nil is diffusers' negative_prompt=None (zeros); "" is encoded like any text.
        for (negative, name) in [(nil, "pipeline.image"), ("blurry", "pipeline.image_negative"), ("", "pipeline.image_empty_negative")] as [(String?, String)] {
            var r = try DiffusersRequest(ref, key: "pipeline").request
            r.negativePrompt = negative
            XCTAssertEqual(pipeline.schedulerKind(for: r), .euler, file: file, line: line)
            try assertDraws(pipeline, r, like: name, in: ref, maxPixelError: maxPixelError, file: file, line: line)
        }
    }
}
