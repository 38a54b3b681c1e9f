import Foundation
import LumenRuntime

extension StableDiffusionModel {
    /// An SDXL base single file with Stability's ("sgm") names: CLIP ViT-L under
    /// `conditioner.embedders.0.transformer.`, OpenCLIP bigG under `conditioner.embedders.1.model.`
    /// (fused `in_proj`, transposed `text_projection`), the UNet under `model.diffusion_model.`
    /// with its added embedding as `label_emb.0`, the VAE under `first_stage_model.`. Without
    /// `configFolder` the shapes give each network (transformer depth per level counted) and
    /// `SingleFileDefaults.sdxl` the rest.
    static func loadSDXLSingleFile(_ file: SafetensorsFile, configFolder: String?) throws -> StableDiffusionModel {
        let path = file.path
        let names = file.entries.keys
        func has(_ prefix: String) -> Bool { names.contains { $0.hasPrefix(prefix) } }
        let clip = OriginalCheckpointNames.sdxlCLIPPrefix, bigG = OriginalCheckpointNames.sdxlOpenCLIPPrefix
        if has(OriginalCheckpointNames.sdxlRefinerOpenCLIPPrefix) && !has(clip) {
            return try loadSDXLRefinerSingleFile(file, configFolder: configFolder)  // StableDiffusionModel+Refiner.swift
        }
        for (prefix, what) in [(clip, "CLIP ViT-L text encoder"), (bigG, "OpenCLIP bigG text encoder")] where !has(prefix) {
            throw ModelFileError.unsupported(path: path, detail: "an SDXL checkpoint (conditioner.embedders.*) without its \(what) (\(prefix)*)")
        }
        guard file.entries[OriginalCheckpointNames.unetPrefix + "input_blocks.0.0.weight"] != nil else {
            throw ModelFileError.unsupported(path: path, detail: "an SDXL checkpoint without its UNet (model.diffusion_model.input_blocks.0.0.weight)")
        }
        // conv_in's input channels (4, or 9 for an inpainting UNet) come from its shape, as for SD 1.x.
        if let s = try? shape(file, OriginalCheckpointNames.unetPrefix + "input_blocks.0.0.weight"), s.rank == 4, s[1] != 4, s[1] != 9 {
            throw ModelFileError.unsupported(path: path, detail: "an SDXL UNet with \(s[1]) input channels (Lumen reads 4, or 9 for inpainting)")
        }

        // diffusers reads a file with `edm_mean` as Playground v2.5 ("playground-v2-5").
        let statistics = try playgroundStatistics(file)
        let defaults = statistics == nil ? SingleFileDefaults.sdxl : .playground
        var text: CLIPTextConfig, text2: CLIPTextConfig, unet: UNet2DConditionConfig, vae: AutoencoderKLConfig
        func sub(_ s: String) -> String? { configFolder.map { ($0 as NSString).appendingPathComponent(s) } }
        if let configFolder {
            text = try loadConfig(CLIPTextConfig.self, path: sub("text_encoder/config.json")!)
            text2 = try loadConfig(CLIPTextConfig.self, path: sub("text_encoder_2/config.json")!)
            unet = try loadConfig(UNet2DConditionConfig.self, path: sub("unet/config.json")!)
            vae = try loadConfig(AutoencoderKLConfig.self, path: sub("vae/config.json")!)
            guard text2.projectionDim != nil else {
                throw ModelFileError.malformed(path: configFolder + "/text_encoder_2/config.json", detail: "no projection_dim: SDXL's second text encoder is a CLIPTextModelWithProjection")
            }
        } else {
            text = try inferTextConfig(file, prefix: String(clip.dropLast()))
            text.hiddenAct = defaults.textActivation
            text2 = try inferOpenCLIPTextConfig(file, prefix: bigG, usesLastBlock: true)
            text2.hiddenAct = SingleFileDefaults.sdxlSecondEncoderActivation
            unet = defaults.apply(to: try inferSDXLUNetConfig(file, pooledWidth: text2.projectionDim ?? text2.hiddenSize))
            vae = defaults.apply(to: try inferVAEConfig(file))
            vae.forceUpcast = true
            (vae.latentsMean, vae.latentsStd) = (statistics?.mean, statistics?.std)
        }
        let (unetWeights, vaeWeights) = originalUNetAndVAEWeights(file, unet: unet, vae: vae)
        let textWeights = SafetensorsWeights(files: [file], scope: clip) { OriginalCheckpointNames.sdxlTextEncoder($0) }
        let textWeights2 = SafetensorsWeights(files: [file], scope: bigG) { OriginalCheckpointNames.openCLIPTextEncoder($0, prefix: bigG) }

        var recognised = [
            "Stable Diffusion XL base: CLIP ViT-L as \(clip)text_model.*, OpenCLIP bigG as \(bigG)* "
                + "(q, k, v read as thirds of attn.in_proj_*, text_projection transposed), the UNet's added embedding as label_emb.0",
        ]
        if let statistics {
            recognised.append("Playground v2.5: edm_mean \(statistics.mean) and edm_std \(statistics.std)"
                + (configFolder == nil ? ", the VAE's latents_mean and latents_std" : " (ignored: the VAE config of --config applies, as in diffusers)"))
        }
        if file.entries[bigG + "logit_scale"] != nil { recognised.append("ignored \(bigG)logit_scale (CLIP's contrastive temperature, unused by diffusion)") }
        let ema = names.filter { $0.hasPrefix("model_ema.") }.count
        if ema > 0 { recognised.append("ignored \(ema) model_ema.* tensors (the EMA copy; the main weights are used)") }
        recognised += skippedBuffers(textWeights, "text encoder") + skippedBuffers(textWeights2, "text encoder 2")
            + skippedBuffers(unetWeights, "unet") + skippedBuffers(vaeWeights, "vae")
        if configFolder == nil {
            recognised.append("network shapes inferred from the tensors (transformer blocks per level \(unet.downBlockTypes.indices.map { unet.transformerLayersPerBlock.value($0) })); " + defaults.summary)
        }
        func existing(_ p: String?) -> String? { p.flatMap { FileManager.default.fileExists(atPath: $0) ? $0 : nil } }
        let tokenizer = existing(sub("tokenizer"))
        let scheduler = existing(sub("scheduler/scheduler_config.json"))
        let model = StableDiffusionModel(path: path, family: .sdxl, layout: .singleFile, text: text, unet: unet, vae: vae,
                                         textWeights: textWeights, unetWeights: unetWeights, vaeWeights: vaeWeights,
                                         tokenizerPath: tokenizer, schedulerConfigPath: scheduler)
        var tokenizer2Path: String?, pad2: String? = nil
        if let folder2 = existing(sub("tokenizer_2")) {
            tokenizer2Path = folder2
        } else {
            // The standard CLIP vocabulary (the default model's), padded as open_clip pads: with "!".
            tokenizer2Path = DefaultModel.clipTokenizerFolder
            pad2 = SingleFileDefaults.sdxlSecondTokenizerPadToken
        }
        var forceZeros = true  // StableDiffusionXLPipeline's default, SDXL base's value
        if let index = existing(sub("model_index.json")), let data = try? RegularFile.read(index),
           let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            forceZeros = json["force_zeros_for_empty_prompt"] as? Bool ?? true
        }
        model.xl = SDXLParts(textEncoder2Config: text2, textEncoder2Weights: textWeights2, tokenizer2Path: tokenizer2Path,
                             tokenizer2PadToken: pad2, forceZerosForEmptyPrompt: forceZeros)
        recognised.append("SDXL: force_zeros_for_empty_prompt \(forceZeros)")
        model.recognised = recognised
        model.singleFileDefaults = defaults
        if scheduler == nil {
            model.schedulerDefaults = defaults.scheduler
            if configFolder != nil { model.recognised.append("no scheduler config in --config: " + defaults.summary) }
        }
        return model
    }

    /// A Playground v2.5 file's `edm_mean` and `edm_std` ([1, 4, 1, 1] each, any float type), or
    /// nil where the file has no `edm_mean`; a malformed pair is refused naming the tensor.
    static func playgroundStatistics(_ file: SafetensorsFile) throws -> (mean: [Float], std: [Float])? {
        guard file.entries["edm_mean"] != nil else { return nil }
        func read(_ name: String, positive: Bool) throws -> [Float] {
            guard file.entries[name] != nil else {
                throw ModelFileError.unsupported(path: file.path, detail: "edm_mean without \(name): a Playground v2.5 file holds both")
            }
            let values = try file.tensor(name).toFloats()
            guard values.count == 4, values.allSatisfy({ $0.isFinite && (!positive || $0 > 0) }) else {
                throw ModelFileError.malformed(path: file.path, detail: "tensor \(name): \(values.prefix(8)); expected 4 finite values"
                                               + (positive ? " above 0" : "") + " (one per latent channel)")
            }
            return values
        }
        return (try read("edm_mean", positive: false), try read("edm_std", positive: true))
    }

    /// The SD UNet inference plus what SDXL adds: transformer blocks per level (counted from the
    /// first block of each level with attention; the mid block must have the last level's), and
    /// the added embedding `label_emb.0.0` [time embed, pooled + `timeIds` × time-id width]: 6 time
    /// ids for the base (size, crop, target size), 5 for the refiner (size, crop, aesthetic score).
    static func inferSDXLUNetConfig(_ file: SafetensorsFile, pooledWidth: Int, timeIds idCount: Int = 6) throws -> UNet2DConditionConfig {
        let p = OriginalCheckpointNames.unetPrefix
        var c = try inferUNetConfig(file)
        let L = c.layersPerBlock
        let depths = c.downBlockTypes.enumerated().map { i, type in
            type == .crossAttention ? count(file, "\(p)input_blocks.\(1 + i * (L + 1)).1.transformer_blocks") : 1
        }
        let mid = count(file, "\(p)middle_block.1.transformer_blocks")
        // Levels without attention have no depth of their own (the refiner's last level is one):
        // one depth for every attention level and the mid block is diffusers' single number.
        let attention = c.downBlockTypes.indices.filter { c.downBlockTypes[$0] == .crossAttention }.map { depths[$0] }
        if mid == depths.last {
            c.transformerLayersPerBlock = Set(depths).count == 1 ? .all(depths[0]) : .each(depths)
        } else if Set(attention + [mid]).count == 1 {
            c.transformerLayersPerBlock = .all(mid)
        } else {
            throw ModelFileError.unsupported(path: file.path, detail: "the UNet's mid block has \(mid) transformer blocks and its last level \(depths.last ?? 0); diffusers' UNet2DConditionModel gives both the same depth")
        }
        let added = try shape(file, "\(p)label_emb.0.0.weight")
        guard added.rank == 2 else {
            throw ModelFileError.wrongShape(path: file.path, tensor: "\(p)label_emb.0.0.weight", expected: Shape([1280, pooledWidth + 6 * 256]), got: added)
        }
        let timeIds = added[1] - pooledWidth
        guard timeIds > 0, timeIds % idCount == 0 else {
            throw ModelFileError.wrongShape(path: file.path, tensor: "\(p)label_emb.0.0.weight",
                                            expected: Shape([added[0], pooledWidth + idCount * max(1, timeIds / idCount)]), got: added)
        }
        c.additionEmbedType = .textTime
        c.additionTimeEmbedDim = timeIds / idCount
        c.projectionClassEmbeddingsInputDim = added[1]
        return c
    }
}

extension StableDiffusionModel {
    /// The name a single-file checkpoint gives a UNet tensor that diffusers calls `diffusersName`
    /// (`model.diffusion_model.` and the original block numbering), for tools and tests that write
    /// single files from diffusers folders.
    public static func originalUNetName(_ diffusersName: String, config: UNet2DConditionConfig) -> String {
        OriginalCheckpointNames.unet(
            diffusersName, layersPerBlock: config.layersPerBlock, upBlockHasAttention: { config.upBlockTypes[$0] == .crossAttention })
    }
}
