import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// LoRA adapters against diffusers' load_lora_weights + set_adapters (tools/make_lora_fixtures.py):
/// a random rank-4 LoRA on tiny-sd's attention projections, transformer proj_in/proj_out (1×1
/// convolutions), feed-forwards and text-encoder layers, in the kohya-ss layout and in diffusers'
/// PEFT layout, applied at strengths 1 and 0.6.
final class LoRATests: XCTestCase {
    static var dir: String { Fixtures.root + "/lora" }
    static var kohya: String { dir + "/tiny-kohya.safetensors" }
    static var peft: String { dir + "/tiny-peft.safetensors" }

    func testKohyaAndPEFTFilesMatchDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            try check(LoRAWeight(path: Self.kohya), "image.scale_1")
            try check(LoRAWeight(path: Self.kohya, strength: 0.6), "image.scale_0_6")
            try check(LoRAWeight(path: Self.peft), "image.scale_1")
            try check(nil, "image.none")
        }
    }

    /// The names diffusers' training scripts save (`lora.down`/`lora.up` on the UNet's attention,
    /// `lora_linear_layer.down`/`.up` on the text encoder's) and the attention processors' layout
    /// of diffusers before 0.18 (`processor.to_q_lora.down`), against diffusers loading the same
    /// files (tools/make_lora_diffusers_fixtures.py). Lumen refused both layouts before.
    func testDiffusersTrainingScriptLayoutsMatchDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            for (file, expected) in [("tiny-diffusers", "image.training_scripts"), ("tiny-diffusers-processor", "image.processor")] {
                let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu,
                                            loras: [LoRAWeight(path: Self.dir + "/\(file).safetensors")])
                try check(pipeline, expected, maxPixelError: 1, reference: "reference-diffusers.safetensors")
            }
        }
    }

    /// A training script's file that adapts more than the attention projections mixes PEFT's names
    /// (proj_in/proj_out: `lora_A`) with the renamed ones (`lora.down`); diffusers' loader sees
    /// `lora_A` in the first UNet key, reads the file as PEFT's layout alone and leaves the
    /// attention factors out. Lumen applied them all (an image far from diffusers'); now it does
    /// as diffusers does and says so.
    func testMixedNamesAreReadAsDiffusersReadsThem() throws {
        let path = Self.dir + "/tiny-diffusers-mixed.safetensors"
        let lora = try LoRA(path: path)
        let file = try SafetensorsFile(path: path)
        XCTAssertEqual(lora.ignoredTensors.count, file.names.filter { $0.hasSuffix(".lora.down.weight") || $0.hasSuffix(".lora.up.weight") }.count)
        XCTAssertFalse(lora.ignoredTensors.isEmpty)
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu, loras: [LoRAWeight(path: path)])
        XCTAssertTrue(pipeline.notices.contains { $0.contains(path) && $0.contains("leaves them out") }, "\(pipeline.notices)")
        try check(pipeline, "image.mixed", maxPixelError: 1, reference: "reference-diffusers.safetensors")
        // A file of one layout ignores nothing.
        XCTAssertEqual(try LoRA(path: Self.dir + "/tiny-diffusers.safetensors").ignoredTensors, [])
        XCTAssertNil(try LoRA(path: Self.dir + "/tiny-diffusers.safetensors").notice)
    }

    /// A kohya/LyCORIS DoRA file: diffusers' loader filters its `dora_scale` tensors out and
    /// applies the factors as a plain LoRA (tools/make_lora_dora_fixtures.py). Lumen refused the
    /// file; now it draws diffusers' image and says what it left out.
    func testDoRAFileIsReadAsDiffusersReadsIt() throws {
        let path = Self.dir + "/tiny-kohya-dora.safetensors"
        let lora = try LoRA(path: path)
        XCTAssertEqual(lora.ignoredDoRAScales.count, try SafetensorsFile(path: path).names.filter { $0.hasSuffix(".dora_scale") }.count)
        XCTAssertFalse(lora.ignoredDoRAScales.isEmpty)
        XCTAssertEqual(lora.moduleCount, try LoRA(path: Self.dir + "/tiny-kohya.safetensors").moduleCount)
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu, loras: [LoRAWeight(path: path)])
        XCTAssertTrue(pipeline.notices.contains { $0.contains(path) && $0.contains("dora_scale") }, "\(pipeline.notices)")
        try check(pipeline, "image.dora", maxPixelError: 1, reference: "reference-dora.safetensors")
    }

    /// PEFT's DoRA in the UNet (`lora_magnitude_vector`, which diffusers applies: each adapted row
    /// rescaled to its magnitude; linear layers and 1×1 and 3×3 convolutions) with the adapters'
    /// LoraConfigs in the header (`lora_adapter_metadata`: lora_alpha 8 at r 4, and for the text
    /// encoder rsLoRA with an alpha_pattern), at weights 1 and 0.6. Lumen refused the magnitude
    /// tensors and ignored the header's alphas.
    func testPEFTDoRAWithAdapterMetadataMatchesDiffusers() throws {
        let path = Self.dir + "/tiny-peft-dora.safetensors"
        let lora = try LoRA(path: path)
        let q = try XCTUnwrap(lora.adaptation(.textEncoder, weightName: "text_model.encoder.layers.0.self_attn.q_proj.weight"))
        let k = try XCTUnwrap(lora.adaptation(.textEncoder, weightName: "text_model.encoder.layers.0.self_attn.k_proj.weight"))
        XCTAssertEqual(q.scale, 1 / Float(2).squareRoot(), accuracy: 1e-6)  // alpha_pattern's 1, over √2 (rsLoRA)
        XCTAssertEqual(k.scale, 4 / Float(2).squareRoot(), accuracy: 1e-6)
        XCTAssertFalse(q.dora)
        let unetQ = try XCTUnwrap(lora.adaptation(.unet, weightName: "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"))
        XCTAssertEqual(unetQ.scale, 2)  // lora_alpha 8 over r 4, from the header alone
        XCTAssertTrue(unetQ.dora)
        XCTAssertNil(lora.notice)
        for (name, strength) in [("image.peft_dora", Float(1)), ("image.peft_dora_0_6", 0.6)] {
            let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu, loras: [LoRAWeight(path: path, strength: strength)])
            try check(pipeline, name, maxPixelError: 1, reference: "reference-dora.safetensors")
        }
    }

    /// The processor layout as older files wrote it, without the `unet.` prefix (which diffusers
    /// 0.42 no longer reads): the same factors, so the same image as with the prefix.
    func testProcessorLayoutWithoutPrefix() throws {
        let dir = NSTemporaryDirectory() + "lumen-lora-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = try SafetensorsFile(path: Self.dir + "/tiny-diffusers-processor.safetensors")
        XCTAssertTrue(source.names.allSatisfy { $0.hasPrefix("unet.") && $0.contains(".processor.to_") })
        let bare = try source.names.map { (String($0.dropFirst("unet.".count)), try source.tensor($0)) }
        try SafetensorsWriter.write(bare, to: dir + "/bare.safetensors")
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu, loras: [LoRAWeight(path: dir + "/bare.safetensors")])
        try check(pipeline, "image.processor", maxPixelError: 1, reference: "reference-diffusers.safetensors")
    }

    /// kohya's SDXL layout (UNet modules under their original names, both text encoders) and the
    /// same adapter in the PEFT layout (`text_encoder_2.`).
    func testSDXLKohyaFileMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            for (lora, expected) in [(LoRAWeight(path: Self.dir + "/tiny-sdxl-kohya.safetensors"), "sdxl.scale_1"),
                                     (LoRAWeight(path: Self.dir + "/tiny-sdxl-peft.safetensors"), "sdxl.scale_1"), (nil, "sdxl.none")] {
                let pipeline = try Pipeline(modelPath: Fixtures.root + "/tiny-sdxl", backend: .cpu, loras: lora.map { [$0] } ?? [])
                try check(pipeline, expected, maxPixelError: 1)
            }
        }
    }

    func testOnVulkanMatchesDiffusers() throws {
        let vulkan = try testVulkanExecutor()
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, executor: vulkan, loras: [LoRAWeight(path: Self.kohya)])
        try check(pipeline, "image.scale_1", maxPixelError: 12)
        XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")
    }

    func check(_ lora: LoRAWeight?, _ expected: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu, loras: lora.map { [$0] } ?? [])
        try check(pipeline, expected, maxPixelError: 1, file: file, line: line)
    }

    func check(_ pipeline: Pipeline, _ expected: String, maxPixelError: Int, reference: String = "reference.safetensors",
               file: StaticString = #filePath, line: UInt = #line) throws {
        let ref = try SafetensorsFile(path: Self.dir + "/" + reference)
        var request = try DiffusersRequest(ref, key: "request").request
        // The SDXL images were drawn without a negative prompt (None: zero unconditional inputs).
        if expected.hasPrefix("sdxl.") { request.negativePrompt = nil }
        try assertDraws(pipeline, request, like: expected, in: ref, maxPixelError: maxPixelError, file: file, line: line)
    }

    /// Bad adapters fail with the file and the offending tensor named, before any image is made.
    func testBadAdaptersAreRefused() throws {
        let dir = NSTemporaryDirectory() + "lumen-lora-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = try SafetensorsFile(path: Self.kohya)
        func write(_ name: String, _ tensors: [(String, Tensor)]) throws -> String {
            try SafetensorsWriter.write(tensors, to: dir + "/" + name)
            return dir + "/" + name
        }
        let all = try source.names.map { ($0, try source.tensor($0)) }
        func refused(_ path: String, _ needles: [String], line: UInt = #line) {
            var request = GenerationRequest(prompt: "x")
            request.steps = 1
            XCTAssertThrowsError(try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu, loras: [LoRAWeight(path: path)]).generate(request),
                                 line: line) { error in
                let text = "\(error)"
                for n in needles { XCTAssertTrue(text.contains(n), "'\(n)' not in: \(text)", line: line) }
            }
        }
        // A module this model does not have (an SDXL-style name).
        let foreign = "lora_unet_down_blocks_2_attentions_0_transformer_blocks_0_attn1_to_q"
        refused(try write("foreign.safetensors", all + [(foreign + ".lora_down.weight", try Tensor(zeros: [4, 640])),
                                                         (foreign + ".lora_up.weight", try Tensor(zeros: [640, 4]))]),
                ["foreign.safetensors", foreign, "match no layer"])
        // A down factor without its up factor.
        let lonely = all.filter { !$0.0.hasPrefix("lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up") }
        refused(try write("half.safetensors", lonely), ["half.safetensors", "lora_te_text_model_encoder_layers_0_mlp_fc1", "up (B)"])
        // Factors of the wrong size for the layer they name.
        let wrong = try all.map { name, t in
            name == "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight" ? (name, try Tensor(zeros: [4, 7, 1, 1])) : (name, t)
        }
        refused(try write("wrong.safetensors", wrong), ["wrong.safetensors", "lora_unet_down_blocks_0_attentions_0_proj_in"])
        // Not a LoRA at all (a model's own weights).
        refused(Fixtures.tinySingleFile, ["tiny-sd.safetensors", "no LoRA layout"])
    }
}
