import Foundation
import Lumen
import LumenRuntime
import XCTest

/// Issue #21, numbers: hostile or overflowing values in configs, requests and weights are typed
/// errors that name the file and field (or the stage that went non-finite), never a trap, a hang
/// or a black image returned as success.
final class HostileNumbersTests: TemporaryDirectoryTestCase {
    /// A copy of the tiny SD folder with `edit` applied to one of its JSON configs.
    private func tinyCopy(editing config: String? = nil, _ edit: (inout [String: Any]) -> Void = { _ in }) throws -> String {
        let path = dir + "/tiny-\(UUID().uuidString)"
        try FileManager.default.copyItem(atPath: Fixtures.tinyFolder, toPath: path)
        if let config {
            let file = URL(fileURLWithPath: path + "/" + config)
            var json = try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as! [String: Any]
            edit(&json)
            try JSONSerialization.data(withJSONObject: json).write(to: file)
        }
        return path
    }

    /// The same with a config's raw text edited (for values JSONSerialization would not write).
    private func tinyCopy(config: String, replacing old: String, with new: String) throws -> String {
        let path = try tinyCopy()
        let file = path + "/" + config
        let text = try String(contentsOfFile: file, encoding: .utf8)
        XCTAssertTrue(text.contains(old), "\(config) has \(old)")
        try text.replacingOccurrences(of: old, with: new).write(toFile: file, atomically: true, encoding: .utf8)
        return path
    }

    private func assertInvalidValue(_ path: String, file config: String, field: String,
                                    file f: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try Pipeline(modelPath: path, backend: .cpu), file: f, line: line) { error in
            guard case ModelFileError.invalidValue(let p, let fieldName, _, _) = error else {
                return XCTFail("\(field): \(error)", file: f, line: line)
            }
            XCTAssertEqual(p, path + "/" + config, file: f, line: line)
            XCTAssertEqual(fieldName, field, file: f, line: line)
        }
    }

    func testConfigFieldsOutOfRangeNameFileAndField() throws {
        let unet = "unet/config.json", vae = "vae/config.json", text = "text_encoder/config.json"
        assertInvalidValue(try tinyCopy(editing: unet) { $0["attention_head_dim"] = 0 }, file: unet, field: "attention_head_dim")
        assertInvalidValue(try tinyCopy(editing: unet) { $0["attention_head_dim"] = 3 }, file: unet, field: "attention_head_dim")
        assertInvalidValue(try tinyCopy(editing: unet) { $0["layers_per_block"] = -1 }, file: unet, field: "layers_per_block")
        assertInvalidValue(try tinyCopy(editing: unet) { $0["in_channels"] = 1_000_000_000_000 }, file: unet, field: "in_channels")
        assertInvalidValue(try tinyCopy(editing: unet) { $0["sample_size"] = 1_000_000_000 }, file: unet, field: "sample_size")
        assertInvalidValue(try tinyCopy(editing: unet) { $0["norm_num_groups"] = 0 }, file: unet, field: "norm_num_groups")
        assertInvalidValue(try tinyCopy(editing: unet) { $0["block_out_channels"] = [Int]() }, file: unet, field: "block_out_channels")
        assertInvalidValue(try tinyCopy(editing: unet) { $0["transformer_layers_per_block"] = [Int]() },
                           file: unet, field: "transformer_layers_per_block")
        assertInvalidValue(try tinyCopy(editing: vae) { $0["block_out_channels"] = [Int]() }, file: vae, field: "block_out_channels")
        assertInvalidValue(try tinyCopy(editing: vae) { $0["down_block_types"] = [String]() }, file: vae, field: "down_block_types")
        assertInvalidValue(try tinyCopy(editing: vae) { $0["scaling_factor"] = 0 }, file: vae, field: "scaling_factor")
        assertInvalidValue(try tinyCopy(editing: text) { $0["num_attention_heads"] = 0 }, file: text, field: "num_attention_heads")
        assertInvalidValue(try tinyCopy(editing: text) { $0["max_position_embeddings"] = 1 }, file: text, field: "max_position_embeddings")
    }

    func testAWrongTypeNamesTheFieldAndTheType() throws {
        let path = try tinyCopy(config: "unet/config.json", replacing: "\"layers_per_block\": 1", with: "\"layers_per_block\": 1.5")
        XCTAssertThrowsError(try StableDiffusionModel.load(path: path)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("layers_per_block") && message.contains("1.5") && message.contains("expected an integer"), message)
        }
        let path2 = try tinyCopy(config: "unet/config.json", replacing: "\"layers_per_block\": 1", with: "\"layers_per_block\": \"two\"")
        XCTAssertThrowsError(try StableDiffusionModel.load(path: path2)) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("layers_per_block") && message.contains("expected an integer"), message)
        }
    }

    func testSchedulerConfigBoundsAndClassNames() throws {
        let sched = "scheduler/scheduler_config.json"
        for (field, value) in [("num_train_timesteps", 1_000_000_000 as Any), ("beta_end", 1.5 as Any)] {
            let path = try tinyCopy(editing: sched) { $0[field] = value }
            XCTAssertThrowsError(try Pipeline(modelPath: path, backend: .cpu)) { error in
                guard case SchedulerError.invalidValue(let p, let f, _, _) = error else { return XCTFail("\(error)") }
                XCTAssertEqual(p, path + "/" + sched)
                XCTAssertEqual(f, field)
            }
        }
        let foo = try tinyCopy(editing: sched) { $0["_class_name"] = "Foo" }
        XCTAssertThrowsError(try Pipeline(modelPath: foo, backend: .cpu)) { error in
            XCTAssertEqual(error as? SchedulerError, .unknownScheduler(name: "Foo", path: foo + "/" + sched))
        }
        let sde = try Pipeline(modelPath: try tinyCopy(editing: sched) { $0["_class_name"] = "DPMSolverSDEScheduler" }, backend: .cpu)
        XCTAssertEqual(sde.schedulerKind(for: GenerationRequest(prompt: "x")), .eulerAncestral)
        XCTAssertEqual(sde.notices.count, 1)
        XCTAssertTrue(sde.notices.first?.contains("DPMSolverSDEScheduler") == true && sde.notices.first?.contains("Euler a") == true, "\(sde.notices)")
        let heun = try Pipeline(modelPath: try tinyCopy(editing: sched) { $0["_class_name"] = "HeunDiscreteScheduler" }, backend: .cpu)
        XCTAssertEqual(heun.schedulerKind(for: GenerationRequest(prompt: "x")), .heun)
        XCTAssertEqual(heun.notices, [])
        // No scheduler folder: the defaults used are stated.
        let bare = try tinyCopy()
        try FileManager.default.removeItem(atPath: bare + "/scheduler")
        let pipeline = try Pipeline(modelPath: bare, backend: .cpu)
        XCTAssertEqual(pipeline.notices.count, 1)
        XCTAssertTrue(pipeline.notices[0].contains("no scheduler/scheduler_config.json") && pipeline.notices[0].contains("PNDM"),
                      "\(pipeline.notices)")
        XCTAssertEqual(try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu).notices, [])
    }

    func testRequestNumbersAreBoundedBeforeArithmetic() throws {
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
        func expectInvalid(_ mentions: String, _ edit: (inout GenerationRequest) -> Void, line: UInt = #line) {
            var r = GenerationRequest(prompt: "x")
            r.steps = 1
            edit(&r)
            XCTAssertThrowsError(try pipeline.generate(r), line: line) { error in
                guard case GenerationError.invalidRequest(let s) = error else { return XCTFail("\(error)", line: line) }
                XCTAssertTrue(s.contains(mentions), s, line: line)
            }
        }
        expectInvalid("width") { $0.width = 9_223_372_036_854_775_800; $0.height = 64 }
        expectInvalid("height") { $0.height = Int.min }
        expectInvalid("count") { $0.count = -3 }
        expectInvalid("guidance") { $0.guidanceScale = 1e38 }
        expectInvalid("guidance") { $0.guidanceScale = .nan }
        expectInvalid("guidance") { $0.guidanceScale = -5 }
        expectInvalid("VAE tile") { $0.vaeTiling = .tiles(sampleSize: Int.max) }
        expectInvalid("strength") {
            $0.initImage = InitImage(width: 64, height: 64, rgb: [Float](repeating: 0.5, count: 64 * 64 * 3))
            $0.width = 64; $0.height = 64; $0.strength = .infinity
        }
        XCTAssertThrowsError(try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu,
                                          loras: [LoRAWeight(path: Fixtures.root + "/lora/tiny-kohya.safetensors", strength: 1e30)])) {
            guard case GenerationError.invalidRequest(let s) = $0 else { return XCTFail("\($0)") }
            XCTAssertTrue(s.contains("tiny-kohya.safetensors") && s.contains("strength"), s)
        }
    }

    /// A single file whose UNet output bias is NaN (or infinite): the first UNet step says so.
    func testNonFiniteUNetWeightsStopAtTheFirstStep() throws {
        for poison in [Float.nan, .infinity] {
            let path = dir + "/poisoned-\(poison).safetensors"
            let original = try SafetensorsFile(path: Fixtures.tinySingleFile)
            let tensors = try original.names.map { name -> (name: String, tensor: Tensor) in
                let t = try original.tensor(name)
                guard name == "model.diffusion_model.out.2.bias" else { return (name, t) }
                return (name, try Tensor(shape: t.shape, values: [Float](repeating: poison, count: t.count)))
            }
            try SafetensorsWriter.write(tensors, to: path)
            let pipeline = try Pipeline(modelPath: path, backend: .cpu, configFolder: Fixtures.tinyFolder)
            var r = GenerationRequest(prompt: "a red circle")
            r.steps = 2
            XCTAssertThrowsError(try pipeline.generate(r)) { error in
                guard case GenerationError.nonFinite(let stage, let hint) = error else { return XCTFail("\(error)") }
                XCTAssertTrue(stage.hasPrefix("UNet at step 1 of "), stage)  // PNDM takes its first step twice
                XCTAssertTrue(hint.contains("guidance") && hint.contains("fp32"), hint)
            }
        }
    }

    /// NaN in the text encoder's or the VAE decoder's weights (an fp16 VAE overflowing reads the
    /// same): the stage is named, no image is returned.
    func testNonFiniteTextEncoderAndVAEAreNamed() throws {
        for (file, tensor, stage) in [("text_encoder/model.safetensors", "final_layer_norm.bias", "text encoder"),
                                      ("vae/diffusion_pytorch_model.safetensors", "decoder.conv_out.bias", "VAE decoder")] {
            let path = try tinyCopy()
            let weights = path + "/" + file
            let original = try SafetensorsFile(path: weights)
            XCTAssertNotNil(original.entries[tensor], tensor)
            let tensors = try original.names.map { name -> (name: String, tensor: Tensor) in
                let t = try original.tensor(name)
                guard name == tensor else { return (name, t) }
                return (name, try Tensor(shape: t.shape, values: [Float](repeating: .nan, count: t.count)))
            }
            try SafetensorsWriter.write(tensors, to: weights)
            let pipeline = try Pipeline(modelPath: path, backend: .cpu)
            var r = GenerationRequest(prompt: "a red circle")
            r.steps = 1
            XCTAssertThrowsError(try pipeline.generate(r)) { error in
                guard case GenerationError.nonFinite(let s, let hint) = error else { return XCTFail("\(error)") }
                XCTAssertEqual(s, stage)
                XCTAssertFalse(hint.isEmpty)
            }
        }
    }

    func testNonFinitePixelsAreAnErrorNotATrap() throws {
        var values = [Float](repeating: 0.25, count: 3 * 4 * 4)
        values[7] = .nan
        XCTAssertThrowsError(try RGBImage(decoded: try Tensor(shape: [1, 3, 4, 4], values: values))) {
            XCTAssertEqual($0 as? ImageError, .nonFinite(count: 1, of: 48))
        }
        values[7] = .infinity  // infinity clamps like any large value, but is still refused
        XCTAssertThrowsError(try RGBImage(decoded: try Tensor(shape: [1, 3, 4, 4], values: values)))
    }

    func testSDXLFolderWithoutItsSecondEncoderSaysSo() throws {
        let path = dir + "/xl"
        try FileManager.default.copyItem(atPath: Fixtures.root + "/tiny-sdxl", toPath: path)
        try FileManager.default.removeItem(atPath: path + "/text_encoder_2")
        try FileManager.default.removeItem(atPath: path + "/tokenizer_2")
        XCTAssertThrowsError(try Pipeline(modelPath: path, backend: .cpu)) { error in
            guard case ModelFileError.missingFile(let p, let detail) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(p, path + "/text_encoder_2")
            XCTAssertTrue(detail.contains("text_time"), detail)
        }
    }

    /// A single file whose configs cannot be inferred (a tensor the inference reads is missing)
    /// says that --config supplies them.
    func testSingleFileInferenceFailureHintsAtConfig() throws {
        let path = dir + "/partial.safetensors"
        let original = try SafetensorsFile(path: Fixtures.tinySingleFile)
        try SafetensorsWriter.write(try original.names.filter { $0 != "model.diffusion_model.out.2.weight" }
            .map { ($0, try original.tensor($0)) }, to: path)
        XCTAssertThrowsError(try StableDiffusionModel.load(path: path)) { error in
            guard case ModelFileError.unsupported(let p, let detail) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(p, path)
            XCTAssertTrue(detail.contains("out.2.weight") && detail.contains("--config"), detail)
        }
    }

    func testLongPromptNotice() throws {
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
        XCTAssertEqual(pipeline.notices(for: GenerationRequest(prompt: "a red circle")), [])
        let long = Array(repeating: "red", count: 100).joined(separator: " ")
        let notices = pipeline.notices(for: GenerationRequest(prompt: long))
        XCTAssertEqual(notices.count, 1)
        XCTAssertTrue(notices.first?.contains("100 tokens; only the first 75") == true, "\(notices)")
    }
}
