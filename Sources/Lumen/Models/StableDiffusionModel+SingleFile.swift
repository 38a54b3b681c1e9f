import Foundation
import LumenRuntime

extension StableDiffusionModel {
    /// A single-file checkpoint with the original Stable Diffusion names.
    static func loadSingleFile(_ path: String, configFolder: String?) throws -> StableDiffusionModel {
        let lower = path.lowercased()
        if lower.hasSuffix(".ckpt") || lower.hasSuffix(".pt") || lower.hasSuffix(".bin") || lower.hasSuffix(".pth") {
            throw ModelFileError.unsupported(
                path: path,
                detail: "pickle checkpoints are never loaded (unpickling runs code); convert it to safetensors, e.g. "
                    + "python -c \"import torch, safetensors.torch as st; sd = torch.load('\((path as NSString).lastPathComponent)', weights_only=True); "
                    + "st.save_file(sd.get('state_dict', sd), 'model.safetensors')\"")
        }
        let file = try SafetensorsFile(path: path)
        let names = file.entries.keys
        func has(_ prefix: String) -> Bool { names.contains { $0.hasPrefix(prefix) } }
        if has("conditioner.embedders.") {
            return try loadSDXLSingleFile(file, configFolder: configFolder)  // StableDiffusionModel+SDXLSingleFile.swift
        }
        if has("model.diffusion_model.double_blocks.") || has("double_blocks.") {
            throw ModelFileError.unsupported(path: path, detail: "this is a Flux checkpoint, which Lumen does not support")
        }
        if has("model.diffusion_model.joint_blocks.") {
            throw ModelFileError.unsupported(path: path, detail: "this is a Stable Diffusion 3 checkpoint, which Lumen does not support")
        }
        if has("model.diffusion_model.encoder_hid_proj.") {
            throw ModelFileError.unsupported(path: path, detail: "this UNet has encoder_hid_proj (a Kolors-style UNet fed by a ChatGLM text encoder), which Lumen does not support")
        }
        guard file.entries["model.diffusion_model.input_blocks.0.0.weight"] != nil else {
            if has("encoder.down.") && has("decoder.up.") {
                throw ModelFileError.unsupported(path: path, detail: "this is a VAE on its own, not a full model; pass it with --vae next to a model")
            }
            throw ModelFileError.unsupported(path: path, detail: "no Stable Diffusion UNet tensors (model.diffusion_model.*) found; not a checkpoint Lumen recognises")
        }
        // SD 2.x keeps OpenCLIP's text tower under cond_stage_model.model.*; SD 1.x a transformers
        // CLIPTextModel under cond_stage_model.transformer.*.
        let openCLIP = has(OriginalCheckpointNames.openCLIPPrefix)
        guard openCLIP || has("cond_stage_model.transformer.") else {
            throw ModelFileError.unsupported(path: path, detail: "no text encoder (cond_stage_model.transformer.* or, for SD 2.x, cond_stage_model.model.*) found")
        }

        let defaults: SingleFileDefaults = openCLIP ? .sd2 : .sd1
        var text: CLIPTextConfig, unet: UNet2DConditionConfig, vae: AutoencoderKLConfig
        if let configFolder {
            func sub(_ s: String) -> String { (configFolder as NSString).appendingPathComponent(s) }
            text = try loadConfig(CLIPTextConfig.self, path: sub("text_encoder/config.json"))
            unet = try loadConfig(UNet2DConditionConfig.self, path: sub("unet/config.json"))
            vae = try loadConfig(AutoencoderKLConfig.self, path: sub("vae/config.json"))
        } else {
            text = openCLIP ? try inferOpenCLIPTextConfig(file) : try inferTextConfig(file)
            text.hiddenAct = defaults.textActivation
            unet = defaults.apply(to: try inferUNetConfig(file))
            vae = defaults.apply(to: try inferVAEConfig(file))
        }
        let (unetWeights, vaeWeights) = originalUNetAndVAEWeights(file, unet: unet, vae: vae)
        let textWeights = SafetensorsWeights(files: [file], scope: "cond_stage_model.") {
            openCLIP ? OriginalCheckpointNames.openCLIPTextEncoder($0) : OriginalCheckpointNames.textEncoder($0)
        }
        var recognised: [String]
        if openCLIP {
            let blocks = count(file, OriginalCheckpointNames.openCLIPPrefix + "transformer.resblocks")
            recognised = ["Stable Diffusion 2.x: OpenCLIP text encoder as cond_stage_model.model.* (q, k, v read as thirds of attn.in_proj_*)"]
            if blocks > text.numHiddenLayers {
                recognised.append("ignored text encoder blocks \(text.numHiddenLayers)..<\(blocks) (SD 2.x conditions on the penultimate layer)")
            }
            let unusedTower = ["text_projection", "logit_scale"].filter { file.entries[OriginalCheckpointNames.openCLIPPrefix + $0] != nil }
            if !unusedTower.isEmpty { recognised.append("ignored cond_stage_model.model.{\(unusedTower.joined(separator: ", "))} (CLIP's contrastive head, unused by diffusion)") }
        } else {
            recognised = [has("cond_stage_model.transformer.text_model.")
                ? "text encoder as cond_stage_model.transformer.text_model.*"
                : "text encoder as cond_stage_model.transformer.* (the older naming, without text_model)"]
        }
        let ema = names.filter { $0.hasPrefix("model_ema.") }.count
        if ema > 0 { recognised.append("ignored \(ema) model_ema.* tensors (the EMA copy; the main weights are used)") }
        recognised += skippedBuffers(textWeights, "text encoder") + skippedBuffers(unetWeights, "unet") + skippedBuffers(vaeWeights, "vae")
        if configFolder == nil {
            recognised.append("network shapes inferred from the tensors; " + defaults.summary)
            if openCLIP {
                recognised.append("a 512×512 epsilon model such as 2.x-base needs --config with its diffusers folder, or "
                    + "--prediction-type epsilon and a size (diffusers' from_single_file assumes 2.1's v-prediction too)")
            }
        } else if let configFolder, !configHasKey((configFolder as NSString).appendingPathComponent("vae/config.json"), "scaling_factor") {
            recognised.append("vae config has no scaling_factor: \(vae.scalingFactor) (the Stable Diffusion 1.x/2.x value)")
        }
        let tokenizer = configFolder.map { ($0 as NSString).appendingPathComponent("tokenizer") }
            .flatMap { FileManager.default.fileExists(atPath: $0) ? $0 : nil }
        let scheduler = configFolder.map { ($0 as NSString).appendingPathComponent("scheduler/scheduler_config.json") }
            .flatMap { FileManager.default.fileExists(atPath: $0) ? $0 : nil }
        let model = StableDiffusionModel(path: path, family: openCLIP || unet.crossAttentionDim == 1024 ? .sd2 : .sd1, layout: .singleFile, text: text, unet: unet, vae: vae,
                                         textWeights: textWeights, unetWeights: unetWeights, vaeWeights: vaeWeights,
                                         tokenizerPath: tokenizer, schedulerConfigPath: scheduler)
        model.recognised = recognised
        model.singleFileDefaults = defaults
        if scheduler == nil {
            model.schedulerDefaults = defaults.scheduler
            if configFolder != nil { model.recognised.append("no scheduler config in --config: " + defaults.summary) }
        }
        model.tokenizerPadToken = defaults.tokenizerPadToken  // open_clip pads with 0, the id of "!"
        return model
    }

    /// OpenCLIP's text tower (SD 2.x) as the CLIPTextModel diffusers converts it to: one layer
    /// fewer than the checkpoint holds (SD 2.x conditions on the penultimate layer's output, so
    /// diffusers' folders drop the last block), GELU, 64-wide heads.
    /// SDXL's bigG (`prefix` `conditioner.embedders.1.model.`, `usesLastBlock`) keeps every block
    /// and its `text_projection` [hidden, projection].
    static func inferOpenCLIPTextConfig(_ file: SafetensorsFile, prefix: String = OriginalCheckpointNames.openCLIPPrefix,
                                        usesLastBlock: Bool = false) throws -> CLIPTextConfig {
        let p = prefix
        var c = CLIPTextConfig()
        let tok = try shape(file, p + "token_embedding.weight")
        c.vocabSize = tok[0]
        c.hiddenSize = tok[1]
        c.maxPositionEmbeddings = try shape(file, p + "positional_embedding")[0]
        let blocks = count(file, p + "transformer.resblocks")
        guard blocks >= (usesLastBlock ? 1 : 2) else {
            throw ModelFileError.unsupported(path: file.path, detail: usesLastBlock ? "the OpenCLIP text encoder under \(p) has no transformer.resblocks"
                : "the OpenCLIP text encoder has \(blocks) resblocks; SD 2.x uses all but the last, so at least 2 are needed")
        }
        c.numHiddenLayers = usesLastBlock ? blocks : blocks - 1
        if usesLastBlock { c.projectionDim = try shape(file, p + "text_projection").dims.last }
        c.intermediateSize = try shape(file, p + "transformer.resblocks.0.mlp.c_fc.weight")[0]
        c.numAttentionHeads = max(1, c.hiddenSize / 64)
        c.hiddenAct = .gelu
        return c
    }

    static func shape(_ file: SafetensorsFile, _ name: String) throws -> Shape {
        guard let e = file.entries[name] else { throw ModelFileError.missingTensor(path: file.path, tensor: name) }
        return e.shape
    }

    /// Counts `prefix.N.` indices present.
    static func count(_ file: SafetensorsFile, _ prefix: String) -> Int {
        var n = 0
        while file.entries.keys.contains(where: { $0.hasPrefix("\(prefix).\(n).") }) { n += 1 }
        return n
    }

    static func inferTextConfig(_ file: SafetensorsFile, prefix: String = "cond_stage_model.transformer") throws -> CLIPTextConfig {
        let base = file.entries["\(prefix).text_model.embeddings.token_embedding.weight"] != nil
            ? "\(prefix).text_model" : prefix
        var c = CLIPTextConfig()
        let tok = try shape(file, "\(base).embeddings.token_embedding.weight")
        c.vocabSize = tok[0]
        c.hiddenSize = tok[1]
        c.maxPositionEmbeddings = try shape(file, "\(base).embeddings.position_embedding.weight")[0]
        c.numHiddenLayers = count(file, "\(base).encoder.layers")
        c.intermediateSize = try shape(file, "\(base).encoder.layers.0.mlp.fc1.weight")[0]
        c.numAttentionHeads = max(1, c.hiddenSize / 64)  // CLIP ViT-L/14 and its relatives use 64-wide heads
        return c
    }

    static func inferUNetConfig(_ file: SafetensorsFile) throws -> UNet2DConditionConfig {
        let p = OriginalCheckpointNames.unetPrefix
        var c = UNet2DConditionConfig()
        let convIn = try shape(file, "\(p)input_blocks.0.0.weight")
        c.inChannels = convIn[1]
        c.outChannels = try shape(file, "\(p)out.2.weight")[0]
        let inputBlocks = count(file, "\(p)input_blocks")
        guard let firstDown = (1..<max(inputBlocks, 2)).first(where: { file.entries["\(p)input_blocks.\($0).0.op.weight"] != nil }) else {
            throw ModelFileError.unsupported(path: file.path, detail: "cannot find the UNet's down-sampling layers (input_blocks.N.0.op)")
        }
        let L = firstDown - 1
        let levels = inputBlocks / (L + 1)  // each level: L blocks, plus a down-sampler except the last, plus conv_in
        c.layersPerBlock = L
        var channels: [Int] = [], down: [UNetDownBlockType] = [], up: [UNetUpBlockType] = []
        for i in 0..<levels {
            let first = 1 + i * (L + 1)
            channels.append(try shape(file, "\(p)input_blocks.\(first).0.out_layers.3.weight")[0])
            down.append(file.entries["\(p)input_blocks.\(first).1.proj_in.weight"] != nil ? .crossAttention : .plain)
            up.append(file.entries["\(p)output_blocks.\(i * (L + 1)).1.proj_in.weight"] != nil ? .crossAttention : .plain)
        }
        c.blockOutChannels = channels
        c.downBlockTypes = down
        c.upBlockTypes = up
        if let k = file.entries.keys.first(where: { $0.hasPrefix(p) && $0.hasSuffix("attn2.to_k.weight") }) {
            c.crossAttentionDim = try shape(file, k)[1]
        }
        if let proj = file.entries.keys.first(where: { $0.hasPrefix(p) && $0.hasSuffix("proj_in.weight") }) {
            c.useLinearProjection = try shape(file, proj).rank == 2
        }
        c.attentionHeadDim = .all(8)  // SD 1.x: 8 heads at every level (not visible in the weights)
        return c
    }

    /// The VAE's shape-given fields (channels, levels, layers) from original names under
    /// `prefix`, over `base` (whose norm groups and scaling factor the weights cannot show).
    static func inferVAEConfig(_ file: SafetensorsFile, prefix p: String = OriginalCheckpointNames.vaePrefix,
                               base: AutoencoderKLConfig = AutoencoderKLConfig()) throws -> AutoencoderKLConfig {
        var c = base
        let levels = count(file, "\(p)encoder.down")
        c.layersPerBlock = count(file, "\(p)encoder.down.0.block")
        c.blockOutChannels = try (0..<levels).map { try shape(file, "\(p)encoder.down.\($0).block.0.conv1.weight")[0] }
        c.latentChannels = try shape(file, "\(p)decoder.conv_in.weight")[1]
        c.inChannels = try shape(file, "\(p)encoder.conv_in.weight")[1]
        c.outChannels = try shape(file, "\(p)decoder.conv_out.weight")[0]
        return c
    }

    /// The UNet's and the VAE's weights of a single file, read under the original checkpoints'
    /// names (`model.diffusion_model.*`, `first_stage_model.*`), for every family.
    static func originalUNetAndVAEWeights(_ file: SafetensorsFile, unet: UNet2DConditionConfig,
                                          vae: AutoencoderKLConfig) -> (unet: SafetensorsWeights, vae: SafetensorsWeights) {
        let L = unet.layersPerBlock, upTypes = unet.upBlockTypes, levels = vae.blockOutChannels.count
        let unetWeights = SafetensorsWeights(files: [file], scope: OriginalCheckpointNames.unetPrefix) { name in
            [StoredTensor(OriginalCheckpointNames.unet(name, layersPerBlock: L, upBlockHasAttention: { upTypes[$0] == .crossAttention }))]
        }
        let vaeWeights = SafetensorsWeights(files: [file], scope: OriginalCheckpointNames.vaePrefix) {
            [StoredTensor(OriginalCheckpointNames.vae($0, levels: levels))]
        }
        return (unetWeights, vaeWeights)
    }
}
