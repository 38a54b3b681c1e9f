import Foundation
import Lumen
import XCTest

/// The shapes models reach users in, each written at run time from the committed tiny model
/// (renamed keys, variant file names, other dtypes, a separate VAE) and each checked to give
/// exactly the image the canonical folder gives, which PipelineTests checks against diffusers.
/// The renaming rules are the ones tools/make_variant_fixtures.py checks diffusers/transformers
/// accept with identical outputs (recorded in Tests/Fixtures/variant-checks.json).
final class ModelVariantTests: TemporaryDirectoryTestCase {
    // MARK: - Helpers

    /// A txt2img request small enough to run many times, with guidance (both text rows) and a
    /// stochastic-free scheduler from the model's config.
    static var request: GenerationRequest {
        var r = GenerationRequest(prompt: "a photo of an astronaut riding a horse on mars")
        r.negativePrompt = "blurry"
        r.steps = 3
        r.guidanceScale = 7.5
        r.width = 64
        r.height = 64
        r.seed = 42
        return r
    }

    /// The pixels Lumen generates from a model given in some shape.
    static func image(_ path: String, config: String? = nil, vae: String? = nil, precision: WeightPrecision = .auto) throws -> [UInt8] {
        let pipeline = try Pipeline(modelPath: path, backend: .cpu, configFolder: config, vaePath: vae, precision: precision)
        return try pipeline.generate(request).flatMap(\.pixels)
    }

    nonisolated(unsafe) static var canonicalPixels: [UInt8]?
    /// The canonical folder's image (computed once).
    static func canonical() throws -> [UInt8] {
        if let p = canonicalPixels { return p }
        let p = try image(Fixtures.tinyFolder)
        canonicalPixels = p
        return p
    }

    func assertSameImage(_ pixels: [UInt8], _ expected: [UInt8], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(pixels.count, 64 * 64 * 3, what, file: file, line: line)
        let differing = zip(pixels, expected).filter { $0 != $1 }.count
        XCTAssertEqual(differing, 0, "\(what): \(differing) of \(pixels.count) values differ from the expected image", file: file, line: line)
        // Not a flat image: the comparison means something.
        XCTAssertGreaterThan(Set(pixels).count, 16, what, file: file, line: line)
    }

    /// Within 1 of diffusers' uint8 value everywhere and equal almost everywhere, as PipelineTests.
    func assertMatchesDiffusers(_ pixels: [UInt8], _ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let expected = try SafetensorsFile(path: Fixtures.root + "/variant-reference.safetensors").rawBytes(name)
        XCTAssertEqual(pixels.count, expected.count, name, file: file, line: line)
        let diffs = zip(pixels, expected).map { abs(Int($0) - Int($1)) }
        XCTAssertLessThanOrEqual(diffs.max() ?? 0, 1, "\(name): a pixel differs from diffusers' by more than 1", file: file, line: line)
        XCTAssertLessThan(Double(diffs.filter { $0 > 0 }.count) / Double(max(diffs.count, 1)), 0.01, "\(name): too many pixels differ", file: file, line: line)
    }

    func copyTiny(_ name: String = "tiny") throws -> String {
        let path = dir + "/" + name
        try FileManager.default.copyItem(atPath: Fixtures.tinyFolder, toPath: path)
        return path
    }

    /// Rewrites a safetensors file: `rename` maps each name (nil drops the tensor), `convert`
    /// each floating-point tensor, `extra` adds tensors.
    func rewrite(_ source: String, to target: String, rename: (String) -> String? = { $0 },
                 convert: (Tensor) throws -> Tensor = { $0 }, extra: [(String, Tensor)] = []) throws {
        let file = try SafetensorsFile(path: source)
        var out: [(name: String, tensor: Tensor)] = []
        for name in file.names {
            guard let newName = rename(name) else { continue }
            let t = try file.tensor(name)
            out.append((newName, t.dtype.isFloatingPoint ? try convert(t) : t))
        }
        out += extra.map { (name: $0.0, tensor: $0.1) }
        try SafetensorsWriter.write(out, to: target)
    }

    /// The int64 `position_ids` [1, 77] buffer the original checkpoints and transformers 4 carry.
    func positionIDs() throws -> Tensor {
        let t = try SafetensorsFile(path: Fixtures.tinySingleFile).tensor("cond_stage_model.transformer.text_model.embeddings.position_ids")
        XCTAssertEqual(t.dtype, .i64)
        return t
    }

    /// What `lumen info` prints, from the same data: family, layout, files read per network.
    func assertInfo(_ model: StableDiffusionModel, layout: ModelLayout, files: [String: String], recognises: [String] = [],
                    file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(model.family, .sd1, file: file, line: line)
        XCTAssertEqual(model.layout, layout, file: file, line: line)
        let summary = Dictionary(uniqueKeysWithValues: model.summary().map { ($0.name, $0) })
        let canonical = Self.canonicalParameters
        for (network, suffix) in files {
            let read = summary[network]?.files ?? []
            XCTAssertEqual(read.count, 1, "\(network): \(read)", file: file, line: line)
            XCTAssertTrue(read.first?.hasSuffix(suffix) ?? false, "\(network) read \(read), expected …\(suffix)", file: file, line: line)
            XCTAssertEqual(summary[network]?.parameters, canonical[network], "\(network) parameter count", file: file, line: line)
        }
        for needle in recognises {
            XCTAssertTrue(model.recognised.contains { $0.contains(needle) }, "'\(needle)' not in \(model.recognised)", file: file, line: line)
        }
    }

    static let canonicalParameters: [String: Int] = {
        guard let model = try? StableDiffusionModel.load(path: Fixtures.tinyFolder) else { return [:] }
        return Dictionary(uniqueKeysWithValues: model.summary().map { ($0.name, $0.parameters) })
    }()

    /// The variants tools/make_variant_fixtures.py checked against diffusers/transformers.
    static let checkedVariants: Set<String> = {
        guard let data = FileManager.default.contents(atPath: Fixtures.root + "/variant-checks.json"),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let checks = json["checks"] as? [String: Any] else { return [] }
        return Set(checks.keys)
    }()

    func assertCheckedByDiffusers(_ variant: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(Self.checkedVariants.contains(variant),
                      "\(variant): not recorded in Tests/Fixtures/variant-checks.json (run tools/make_variant_fixtures.py)", file: file, line: line)
    }

    // MARK: - Diffusers folders

    /// The image every variant is compared with is diffusers' image for the same request.
    func testCanonicalImageMatchesDiffusers() throws {
        try assertMatchesDiffusers(try Self.canonical(), "canonical.image")
    }

    func testTextEncoderWithAndWithoutPrefixAndPositionIDs() throws {
        let canonical = try Self.canonical()
        let cases: [(String, Bool, Bool)] = [
            ("text-model-prefix-position-ids", true, true),   // transformers 4, as nearly every SD folder is published
            ("text-model-prefix", true, false),
            ("no-prefix-position-ids", false, true),
        ]
        for (name, prefix, ids) in cases {
            assertCheckedByDiffusers(name)
            let path = try copyTiny(name)
            let weights = path + "/text_encoder/model.safetensors"
            let positionName = (prefix ? "text_model." : "") + "embeddings.position_ids"
            try rewrite(weights, to: weights, rename: { prefix ? "text_model." + $0 : $0 },
                        extra: ids ? [(positionName, try positionIDs())] : [])
            let model = try StableDiffusionModel.load(path: path)
            assertInfo(model, layout: .diffusersFolder, files: ["text_encoder": "text_encoder/model.safetensors"],
                       recognises: [prefix ? "with the text_model. prefix" : "without the text_model. prefix"]
                           + (ids ? ["skipped 1 integer buffer"] : []))
            assertSameImage(try Self.image(path), canonical, name)
        }
    }

    func testTokenizerJSONOnly() throws {
        assertCheckedByDiffusers("tokenizer-json-only")
        let path = try copyTiny()
        let tok = path + "/tokenizer"
        let vocab = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: tok + "/vocab.json")))
        let merges = try String(contentsOfFile: tok + "/merges.txt", encoding: .utf8)
            .split(separator: "\n").dropFirst().map { $0.split(separator: " ").map(String.init) }
        // The fields transformers 5 writes that a CLIP tokenizer needs (the script checks a real
        // transformers 5 tokenizer.json holds this vocabulary and these merges).
        let json: [String: Any] = [
            "added_tokens": [["id": 49406, "content": "<|startoftext|>", "special": true],
                             ["id": 49407, "content": "<|endoftext|>", "special": true]],
            "model": ["type": "BPE", "vocab": vocab, "merges": merges, "end_of_word_suffix": "</w>", "unk_token": "<|endoftext|>"],
        ]
        for f in ["vocab.json", "merges.txt", "special_tokens_map.json"] { try FileManager.default.removeItem(atPath: tok + "/" + f) }
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: tok + "/tokenizer.json"))
        let model = try StableDiffusionModel.load(path: path)
        assertInfo(model, layout: .diffusersFolder, files: [:], recognises: ["tokenizer.json only"])
        assertSameImage(try Self.image(path), try Self.canonical(), "tokenizer.json only")
    }

    func testFP16VariantFilesOnly() throws {
        assertCheckedByDiffusers("fp16-variant-only")
        let path = try copyTiny()
        for (sub, base) in [("text_encoder", "model"), ("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model")] {
            try FileManager.default.moveItem(atPath: "\(path)/\(sub)/\(base).safetensors", toPath: "\(path)/\(sub)/\(base).fp16.safetensors")
        }
        let model = try StableDiffusionModel.load(path: path)
        assertInfo(model, layout: .diffusersFolder,
                   files: ["text_encoder": "text_encoder/model.fp16.safetensors", "unet": "unet/diffusion_pytorch_model.fp16.safetensors",
                           "vae": "vae/diffusion_pytorch_model.fp16.safetensors"],
                   recognises: ["unet: only the fp16 variant"])
        assertSameImage(try Self.image(path), try Self.canonical(), "fp16 variant only")
        assertSameImage(try Self.image(path, precision: .fp16), try Self.canonical(), "fp16 variant only, fp16 asked")
    }

    func testPlainF32AndFP16VariantBoth() throws {
        assertCheckedByDiffusers("plain-f32-and-fp16-variant")
        let path = try copyTiny()
        for (sub, base) in [("text_encoder", "model"), ("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model")] {
            let plain = "\(path)/\(sub)/\(base).safetensors"
            try FileManager.default.moveItem(atPath: plain, toPath: "\(path)/\(sub)/\(base).fp16.safetensors")
            try rewrite("\(path)/\(sub)/\(base).fp16.safetensors", to: plain, convert: { try $0.converted(to: .f32) })
        }
        // By default (and for the CPU backend) the plain files; the fp16 variant when asked.
        let plain = try StableDiffusionModel.load(path: path)
        assertInfo(plain, layout: .diffusersFolder,
                   files: ["text_encoder": "text_encoder/model.safetensors", "unet": "unet/diffusion_pytorch_model.safetensors",
                           "vae": "vae/diffusion_pytorch_model.safetensors"],
                   recognises: ["unet: both diffusion_pytorch_model.safetensors and diffusion_pytorch_model.fp16.safetensors present; read diffusion_pytorch_model.safetensors"])
        XCTAssertEqual(plain.summary().first { $0.name == "unet" }?.dtypes.keys.sorted(), ["F32"])
        let half = try StableDiffusionModel.load(path: path, precision: .fp16)
        assertInfo(half, layout: .diffusersFolder,
                   files: ["text_encoder": "text_encoder/model.fp16.safetensors", "unet": "unet/diffusion_pytorch_model.fp16.safetensors",
                           "vae": "vae/diffusion_pytorch_model.fp16.safetensors"],
                   recognises: ["read diffusion_pytorch_model.fp16.safetensors (precision fp16)"])
        XCTAssertEqual(half.summary().first { $0.name == "unet" }?.dtypes.keys.sorted(), ["F16"])
        // The f32 files hold the f16 values exactly, and the CPU executor widens f16 weights to
        // f32 exactly: the same image either way.
        assertSameImage(try Self.image(path), try Self.canonical(), "plain f32 files")
        assertSameImage(try Self.image(path, precision: .fp16), try Self.canonical(), "fp16 variant files")
    }

    func testVAEConfigWithoutScalingFactor() throws {
        assertCheckedByDiffusers("vae-config-without-scaling-factor")
        let path = try copyTiny()
        let configPath = path + "/vae/config.json"
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: configPath))) as! [String: Any]
        XCTAssertEqual(config.removeValue(forKey: "scaling_factor") as? Double, 0.18215)
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: configPath))
        let model = try StableDiffusionModel.load(path: path)
        XCTAssertEqual(model.vaeConfig.scalingFactor, 0.18215)
        assertInfo(model, layout: .diffusersFolder, files: [:], recognises: ["no scaling_factor: 0.18215"])
        assertSameImage(try Self.image(path), try Self.canonical(), "vae config without scaling_factor")
    }

    // MARK: - Single-file checkpoints

    /// The committed single file with `cond_stage_model.transformer.text_model.*` names and the
    /// int64 position_ids (checked by diffusers' from_single_file in tools/make_fixtures.py).
    func testSingleFileWithTextModelNames() throws {
        let model = try StableDiffusionModel.load(path: Fixtures.tinySingleFile, configFolder: Fixtures.tinyFolder)
        assertInfo(model, layout: .singleFile, files: ["unet": "tiny-sd.safetensors", "vae": "tiny-sd.safetensors", "text_encoder": "tiny-sd.safetensors"],
                   recognises: ["cond_stage_model.transformer.text_model.*", "text encoder: skipped 1 integer buffer"])
        assertSameImage(try Self.image(Fixtures.tinySingleFile, config: Fixtures.tinyFolder), try Self.canonical(), "single file")
    }

    func testSingleFileVariants() throws {
        let canonical = try Self.canonical()
        let text = "cond_stage_model.transformer.text_model."
        let ema: [(String, Tensor)] = [
            // As EMA checkpoints carry them: flattened names, a decay and an update count.
            ("model_ema.decay", try Tensor([0.9999])),
            ("model_ema.num_updates", try Tensor(shape: [], indices: [12345])),
            ("model_ema.diffusion_modelinput_blocks00weight", try Tensor(shape: [32, 4, 3, 3], values: (0..<1152).map { Float($0 % 7) - 3 }, dtype: .f16)),
            ("model_ema.diffusion_modelout2bias", try Tensor(shape: [4], values: [5, -5, 5, -5], dtype: .f16)),
        ]
        let cases: [(name: String, rename: (String) -> String?, dtype: DType?, extra: [(String, Tensor)], notes: [String])] = [
            ("single-file-transformer-names", { $0.hasPrefix(text) ? "cond_stage_model.transformer." + $0.dropFirst(text.count) : $0 }, nil, [],
             ["cond_stage_model.transformer.* (the older naming"]),
            ("single-file-no-position-ids", { $0.hasSuffix("position_ids") ? nil : $0 }, nil, [], []),
            ("single-file-model-ema", { $0 }, nil, ema, ["ignored 4 model_ema.* tensors"]),
            ("single-file-f32", { $0 }, .f32, [], []),
        ]
        for c in cases {
            assertCheckedByDiffusers(c.name)
            let path = "\(dir!)/\(c.name).safetensors"
            try rewrite(Fixtures.tinySingleFile, to: path, rename: c.rename, convert: { c.dtype == nil ? $0 : try $0.converted(to: c.dtype!) },
                        extra: c.extra)
            let model = try StableDiffusionModel.load(path: path, configFolder: Fixtures.tinyFolder)
            assertInfo(model, layout: .singleFile, files: ["unet": c.name + ".safetensors", "text_encoder": c.name + ".safetensors"], recognises: c.notes)
            if let dtype = c.dtype {
                XCTAssertEqual(model.summary().flatMap(\.dtypes.keys).sorted(), Array(repeating: dtype == .f32 ? "F32" : "BF16", count: 3), c.name)
            }
            assertSameImage(try Self.image(path, config: Fixtures.tinyFolder), canonical, c.name)
        }
    }

    /// bf16 cannot hold the f16 weights exactly, so its image is compared with an f32 file of
    /// the same (bf16-rounded) values: the bf16 reading path must change nothing else.
    func testSingleFileBF16() throws {
        assertCheckedByDiffusers("single-file-bf16")
        let bf16 = dir + "/bf16.safetensors", f32 = dir + "/bf16-as-f32.safetensors"
        try rewrite(Fixtures.tinySingleFile, to: bf16, convert: { try $0.converted(to: .bf16) })
        try rewrite(bf16, to: f32, convert: { try $0.converted(to: .f32) })
        let model = try StableDiffusionModel.load(path: bf16, configFolder: Fixtures.tinyFolder)
        assertInfo(model, layout: .singleFile, files: ["unet": "bf16.safetensors"])
        XCTAssertEqual(model.summary().flatMap(\.dtypes.keys).sorted(), ["BF16", "BF16", "BF16"])
        let pixels = try Self.image(bf16, config: Fixtures.tinyFolder)
        assertSameImage(pixels, try Self.image(f32, config: Fixtures.tinyFolder), "bf16 vs the same values in f32")
        // And the rounding moved the image only a little from the f16 model's.
        let diffs = zip(pixels, try Self.canonical()).map { abs(Int($0) - Int($1)) }
        XCTAssertGreaterThan(diffs.max() ?? 0, 0, "bf16 rounding should change something")
        XCTAssertLessThan(Double(diffs.reduce(0, +)) / Double(diffs.count), 8, "bf16 image far from the f16 one")
    }

    // MARK: - A separate VAE

    /// A VAE unlike the model's own (its decoder's output bias shifted), in every layout `--vae`
    /// accepts, must give the image of a folder whose own vae/ holds those weights.
    func testSeparateVAE() throws {
        let shift: (Tensor) throws -> Tensor = { t in
            try Tensor(shape: t.shape, values: t.toFloats().enumerated().map { $0.element + ($0.offset % 2 == 0 ? 0.5 : -0.25) }, dtype: t.dtype)
        }
        // The reference: a copy of the model with the other VAE as its own.
        let reference = try copyTiny("reference")
        let vaeFile = reference + "/vae/diffusion_pytorch_model.safetensors"
        let file = try SafetensorsFile(path: vaeFile)
        try SafetensorsWriter.write(try file.names.map { n in (n, n == "decoder.conv_out.bias" ? try shift(file.tensor(n)) : try file.tensor(n)) },
                                    to: vaeFile)
        let expected = try Self.image(reference)
        let referenceModel = try StableDiffusionModel.load(path: reference)
        let vaeParameters = referenceModel.summary().first { $0.name == "vae" }?.parameters
        XCTAssertNotEqual(expected, try Self.canonical(), "the other VAE must change the image")
        try assertMatchesDiffusers(expected, "other-vae.image")

        // Original names as the fine-tuned SD VAEs ship them, from the checkpoint's VAE part
        // (whose names diffusers' from_single_file reads), with and without first_stage_model.
        let single = try SafetensorsFile(path: Fixtures.tinySingleFile)
        let vaeNames = single.names.filter { $0.hasPrefix("first_stage_model.") }
        func vaeTensor(_ n: String) throws -> Tensor {
            n == "first_stage_model.decoder.conv_out.bias" ? try shift(single.tensor(n)) : try single.tensor(n)
        }
        let bare = dir + "/vae-ft.safetensors", prefixed = dir + "/vae-prefixed.safetensors"
        try SafetensorsWriter.write(try vaeNames.map { (String($0.dropFirst("first_stage_model.".count)), try vaeTensor($0)) }, to: bare)
        try SafetensorsWriter.write(try vaeNames.map { ($0, try vaeTensor($0)) }, to: prefixed)

        let cases: [(variant: String, vae: String, layout: VAESource.Layout)] = [
            ("vae-single-file-original-names", bare, .originalNames),
            ("vae-single-file-first-stage-model", prefixed, .checkpointNames),
            ("vae-diffusers-folder", reference + "/vae", .diffusersFolder),
            ("vae-diffusers-folder", reference, .diffusersFolder),  // a model folder: its vae/
            ("vae-single-file-diffusers-names", vaeFile, .diffusersNames),
        ]
        for (variant, vae, layout) in cases {
            assertCheckedByDiffusers(variant)
            for (model, config) in [(Fixtures.tinyFolder, nil), (Fixtures.tinySingleFile, Fixtures.tinyFolder)] {
                let m = try StableDiffusionModel.load(path: model, configFolder: config, vaePath: vae)
                XCTAssertEqual(m.vaeSource, VAESource(path: vae, layout: layout))
                XCTAssertEqual(m.vaeConfig, referenceModel.vaeConfig, variant)
                XCTAssertTrue(m.recognised.contains { $0.hasPrefix("vae replaced by \(vae)") }, "\(m.recognised)")
                let read = m.summary().first { $0.name == "vae" }
                XCTAssertEqual(read?.files.count, 1)
                XCTAssertTrue(read?.files.first?.hasPrefix(vae) ?? false, "\(read?.files ?? [])")
                XCTAssertEqual(read?.parameters, vaeParameters, variant)
                assertSameImage(try Self.image(model, config: config, vae: vae), expected, "\(variant) on \(model)")
            }
        }
    }

    // MARK: - Refused clearly

    func testPickleOnlyIsRefusedWithAConversionHint() throws {
        let path = try copyTiny()
        try FileManager.default.removeItem(atPath: path + "/text_encoder/model.safetensors")
        try Data([0x80, 0x02, 0x7d, 0x71]).write(to: URL(fileURLWithPath: path + "/text_encoder/pytorch_model.bin"))
        XCTAssertThrowsError(try StableDiffusionModel.load(path: path)) { error in
            guard case ModelFileError.unsupported(let file, let detail) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(file.hasSuffix("text_encoder/pytorch_model.bin"), file)
            XCTAssertTrue(detail.contains("never loaded") && detail.contains("st.save_file") && detail.contains("model.safetensors"), detail)
        }
        let vae = dir + "/vae-ft-mse.pt"
        try Data([0x80, 0x02]).write(to: URL(fileURLWithPath: vae))
        XCTAssertThrowsError(try StableDiffusionModel.load(path: Fixtures.tinyFolder, vaePath: vae)) { error in
            guard case ModelFileError.unsupported(let file, let detail) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(file, vae)
            XCTAssertTrue(detail.contains("--vae") && detail.contains("pickle") && detail.contains("safetensors"), detail)
        }
    }

    func testOtherFamiliesAreRefusedNamingWhatWasDetected() throws {
        func refused(_ path: String, vae: String? = nil, _ needle: String, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertThrowsError(try StableDiffusionModel.load(path: path, vaePath: vae), file: file, line: line) { error in
                guard case ModelFileError.unsupported(_, let detail) = error else { return XCTFail("\(error)", file: file, line: line) }
                XCTAssertTrue(detail.contains(needle), "'\(needle)' not in: \(detail)", file: file, line: line)
            }
        }
        let folders: [(String, [String], String)] = [
            ("flux", ["transformer", "vae", "text_encoder", "text_encoder_2"], "Flux model"),
            ("sd3", ["transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"], "Stable Diffusion 3 model"),
        ]
        for (name, subs, needle) in folders {
            for sub in subs { try FileManager.default.createDirectory(atPath: "\(dir!)/\(name)/\(sub)", withIntermediateDirectories: true) }
            refused("\(dir!)/\(name)", needle)
        }
        let t = try Tensor(zeros: [2, 2], dtype: .f16)
        let files: [(String, String, String)] = [
            ("sdxl.safetensors", "conditioner.embedders.1.model.ln_final.weight", "SDXL checkpoint (conditioner.embedders.*) without its CLIP ViT-L text encoder"),
            ("flux.safetensors", "double_blocks.0.img_attn.qkv.weight", "Flux checkpoint"),
            ("sd3.safetensors", "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", "Stable Diffusion 3 checkpoint"),
            ("vae.safetensors", "decoder.up.0.block.0.conv1.weight", "pass it with --vae"),
            ("other.safetensors", "some.weight", "not a checkpoint Lumen recognises"),
        ]
        for (name, key, needle) in files {
            var tensors = [(key, t)]
            if name == "vae.safetensors" { tensors.append(("encoder.down.0.block.0.conv1.weight", t)) }
            try SafetensorsWriter.write(tensors, to: "\(dir!)/\(name)")
            refused("\(dir!)/\(name)", needle)
        }
        // A file without VAE tensors given as --vae, and a VAE with other latent channels.
        refused(Fixtures.tinyFolder, vae: "\(dir!)/other.safetensors", "no VAE tensors")
        let single = try SafetensorsFile(path: Fixtures.tinySingleFile)
        let wide = dir + "/wide-vae.safetensors"
        try SafetensorsWriter.write(try single.names.filter { $0.hasPrefix("first_stage_model.") }.map { n in
            (n, n == "first_stage_model.decoder.conv_in.weight" ? try Tensor(zeros: [16, 8, 3, 3], dtype: .f16) : try single.tensor(n))
        }, to: wide)
        refused(Fixtures.tinyFolder, vae: wide, "8 latent channels")
    }
}
