import Foundation
import LumenRuntime

/// What an SDXL refiner (diffusers' `StableDiffusionXLImg2ImgPipeline` without `text_encoder`)
/// has beyond its one text encoder: whether its UNet is conditioned on the aesthetic score
/// instead of the target size (`requires_aesthetics_score`: five time ids, not six), and whether no
/// negative prompt means zero unconditional inputs (the refiner ships `false`).
public struct SDXLRefinerParts: Sendable, Hashable {
    public let requiresAestheticsScore: Bool
    public let forceZerosForEmptyPrompt: Bool

    public init(requiresAestheticsScore: Bool, forceZerosForEmptyPrompt: Bool) {
        self.requiresAestheticsScore = requiresAestheticsScore
        self.forceZerosForEmptyPrompt = forceZerosForEmptyPrompt
    }

    /// The time ids its UNet's added embedding reads: original size, crop top-left, then the
    /// aesthetic score (5) or the target size (6).
    public var timeIdCount: Int { requiresAestheticsScore ? 5 : 6 }
}

extension UNet2DConditionConfig {
    /// How many time ids the added embedding (`text_time`) reads after a pooled embedding of
    /// `pooledWidth`: (projection_class_embeddings_input_dim − pooled) / addition_time_embed_dim,
    /// nil when that is not a whole positive number or the UNet has no added embedding.
    public func addedTimeIdCount(pooledWidth: Int) -> Int? {
        guard additionEmbedType == .textTime, let t = additionTimeEmbedDim, let inDim = projectionClassEmbeddingsInputDim,
              t > 0, inDim > pooledWidth, (inDim - pooledWidth) % t == 0 else { return nil }
        return (inDim - pooledWidth) / t
    }
}

extension StableDiffusionModel {
    /// An SDXL refiner: one text encoder (bigG), aesthetic-score conditioning.
    public var isRefiner: Bool { refiner != nil }

    /// The width of the pooled text embedding an SDXL-style UNet reads (the last encoder's
    /// projection), nil for SD 1.x/2.x.
    var pooledTextWidth: Int? {
        if let xl { return xl.textEncoder2Config.projectionDim ?? xl.textEncoder2Config.hiddenSize }
        if refiner != nil { return textEncoderConfig.projectionDim ?? textEncoderConfig.hiddenSize }
        return nil
    }

    /// A refiner folder's `model_index.json` settings; without the file (or the fields), the
    /// aesthetic score is inferred from the UNet (five time ids) and `force_zeros_for_empty_prompt`
    /// is the pipeline's default. Returns the notes for `lumen info`.
    func setRefinerParts(folder: String) throws -> [String] {
        let textConfig = (folder as NSString).appendingPathComponent("text_encoder_2/config.json")
        guard textEncoderConfig.projectionDim != nil else {
            throw ModelFileError.malformed(path: textConfig, detail: "no projection_dim: an SDXL refiner's text encoder is a CLIPTextModelWithProjection")
        }
        var index: [String: Any] = [:]
        if let data = try? RegularFile.read((folder as NSString).appendingPathComponent("model_index.json")),
           let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] { index = json }
        let pooled = textEncoderConfig.projectionDim ?? textEncoderConfig.hiddenSize
        let inferred = unetConfig.addedTimeIdCount(pooledWidth: pooled) == 5
        let aesthetic = index["requires_aesthetics_score"] as? Bool ?? inferred
        // StableDiffusionXLImg2ImgPipeline's default; the refiner's model_index says false.
        let forceZeros = index["force_zeros_for_empty_prompt"] as? Bool ?? true
        refiner = SDXLRefinerParts(requiresAestheticsScore: aesthetic, forceZerosForEmptyPrompt: forceZeros)
        let source = index["requires_aesthetics_score"] == nil ? " (inferred from the UNet's added embedding)" : ""
        return ["SDXL refiner: text_encoder_2 (OpenCLIP bigG, with projection) and tokenizer_2 only; "
                + "requires_aesthetics_score \(aesthetic)\(source); force_zeros_for_empty_prompt \(forceZeros)"]
    }

    /// An SDXL refiner single file: OpenCLIP bigG alone as `conditioner.embedders.0.model.*`
    /// (fused `in_proj`, transposed `text_projection`), the UNet with five time ids in
    /// `label_emb.0`, the VAE. Without `configFolder`, stable-diffusion-xl-refiner-1.0's configs.
    static func loadSDXLRefinerSingleFile(_ file: SafetensorsFile, configFolder: String?) throws -> StableDiffusionModel {
        let path = file.path
        let bigG = OriginalCheckpointNames.sdxlRefinerOpenCLIPPrefix
        guard file.entries[OriginalCheckpointNames.unetPrefix + "input_blocks.0.0.weight"] != nil else {
            throw ModelFileError.unsupported(path: path, detail: "an SDXL refiner checkpoint without its UNet (model.diffusion_model.input_blocks.0.0.weight)")
        }
        guard file.entries[bigG + "text_projection"] != nil else {
            throw ModelFileError.missingTensor(path: path, tensor: bigG + "text_projection")
        }
        let defaults = SingleFileDefaults.sdxlRefiner
        var text: CLIPTextConfig, unet: UNet2DConditionConfig, vae: AutoencoderKLConfig
        func sub(_ s: String) -> String? { configFolder.map { ($0 as NSString).appendingPathComponent(s) } }
        if let configFolder {
            text = try loadConfig(CLIPTextConfig.self, path: sub("text_encoder_2/config.json")!)
            unet = try loadConfig(UNet2DConditionConfig.self, path: sub("unet/config.json")!)
            vae = try loadConfig(AutoencoderKLConfig.self, path: sub("vae/config.json")!)
            guard text.projectionDim != nil else {
                throw ModelFileError.malformed(path: configFolder + "/text_encoder_2/config.json", detail: "no projection_dim: an SDXL refiner's text encoder is a CLIPTextModelWithProjection")
            }
        } else {
            text = try inferOpenCLIPTextConfig(file, prefix: bigG, usesLastBlock: true)
            text.hiddenAct = defaults.textActivation
            let pooled = text.projectionDim ?? text.hiddenSize
            do {
                unet = defaults.apply(to: try inferSDXLUNetConfig(file, pooledWidth: pooled, timeIds: 5))
            } catch ModelFileError.wrongShape(_, let tensor, _, let got) {
                throw ModelFileError.unsupported(
                    path: path, detail: "an SDXL refiner checkpoint (OpenCLIP bigG alone as \(bigG)*) whose UNet's \(tensor) is \(got): "
                        + "not the pooled embedding (\(pooled)) and five time ids (size, crop, aesthetic score) of a refiner")
            }
            vae = defaults.apply(to: try inferVAEConfig(file))
            vae.forceUpcast = true
        }
        let (unetWeights, vaeWeights) = originalUNetAndVAEWeights(file, unet: unet, vae: vae)
        let textWeights = SafetensorsWeights(files: [file], scope: bigG) { OriginalCheckpointNames.openCLIPTextEncoder($0, prefix: bigG) }
        var recognised = [
            "Stable Diffusion XL refiner: OpenCLIP bigG alone as \(bigG)* (q, k, v read as thirds of attn.in_proj_*, "
                + "text_projection transposed), the UNet's added embedding (five time ids: size, crop, aesthetic score) as label_emb.0",
        ]
        if file.entries[bigG + "logit_scale"] != nil { recognised.append("ignored \(bigG)logit_scale (CLIP's contrastive temperature, unused by diffusion)") }
        recognised += skippedBuffers(textWeights, "text encoder 2") + skippedBuffers(unetWeights, "unet") + skippedBuffers(vaeWeights, "vae")
        if configFolder == nil {
            recognised.append("network shapes inferred from the tensors (transformer blocks per level \(unet.downBlockTypes.indices.map { unet.transformerLayersPerBlock.value($0) })); " + defaults.summary)
        }
        func existing(_ p: String?) -> String? { p.flatMap { FileManager.default.fileExists(atPath: $0) ? $0 : nil } }
        let scheduler = existing(sub("scheduler/scheduler_config.json"))
        let model = StableDiffusionModel(path: path, family: .sdxl, layout: .singleFile, text: text, unet: unet, vae: vae,
                                         textWeights: textWeights, unetWeights: unetWeights, vaeWeights: vaeWeights,
                                         tokenizerPath: existing(sub("tokenizer_2")), schedulerConfigPath: scheduler)
        var aesthetic = true, forceZeros = false  // stable-diffusion-xl-refiner-1.0's model_index.json
        if let index = existing(sub("model_index.json")), let data = try? RegularFile.read(index),
           let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            aesthetic = json["requires_aesthetics_score"] as? Bool ?? aesthetic
            forceZeros = json["force_zeros_for_empty_prompt"] as? Bool ?? true
        }
        model.refiner = SDXLRefinerParts(requiresAestheticsScore: aesthetic, forceZerosForEmptyPrompt: forceZeros)
        recognised.append("SDXL refiner: requires_aesthetics_score \(aesthetic); force_zeros_for_empty_prompt \(forceZeros)")
        model.recognised = recognised
        model.singleFileDefaults = defaults
        // The standard CLIP vocabulary when --config has no tokenizer_2, padded as open_clip pads: with "!".
        model.tokenizerPadToken = SingleFileDefaults.sdxlSecondTokenizerPadToken
        if scheduler == nil {
            model.schedulerDefaults = defaults.scheduler
            if configFolder != nil { model.recognised.append("no scheduler config in --config: " + defaults.summary) }
        }
        return model
    }

    /// The refiner's conditioning against its UNet: the pooled embedding and the time ids must
    /// fill the added embedding's input exactly (diffusers checks this at the first call; here it
    /// is checked at load, naming the config field).
    func checkAddedTimeIds() throws {
        guard unetConfig.additionEmbedType == .textTime, let pooled = pooledTextWidth,
              let t = unetConfig.additionTimeEmbedDim, let inDim = unetConfig.projectionClassEmbeddingsInputDim else { return }
        let ids = refiner?.timeIdCount ?? 6
        guard inDim == pooled + ids * t else {
            let what = ids == 5 ? "original size, crop top-left, aesthetic score" : "original size, crop top-left, target size"
            let hint = unetConfig.addedTimeIdCount(pooledWidth: pooled).map { found in
                found == 6 && ids == 5 ? "; the UNet reads 6 (target size, not the aesthetic score): set requires_aesthetics_score false in model_index.json"
                    : found == 5 && ids == 6 ? "; the UNet reads 5 (the aesthetic score): an SDXL refiner's UNet, which needs requires_aesthetics_score true in model_index.json and no text_encoder/"
                    : ""
            } ?? ""
            throw ModelFileError.invalidValue(
                path: layout == .diffusersFolder ? path + "/unet/config.json" : path, field: "projection_class_embeddings_input_dim",
                value: "\(inDim)", expected: "\(pooled + ids * t): the pooled text embedding (\(pooled)) and \(ids) time ids (\(what)) of addition_time_embed_dim \(t)\(hint)")
        }
    }
}
