import LumenRuntime

extension StableDiffusionModel {
    /// An inpainting model: its UNet takes the latents, the mask and the masked image's latents.
    public var isInpainting: Bool { unetConfig.inChannels == 2 * vaeConfig.latentChannels + 1 }

    /// An InstructPix2Pix model (timbrooks/instruct-pix2pix): its UNet takes the latents and the
    /// edited image's latents, and edits that image as the prompt instructs.
    public var isInstructPix2Pix: Bool { unetConfig.inChannels == 2 * vaeConfig.latentChannels }

    /// What generation would refuse about the model itself, checked without building a network, so
    /// that `lumen info` and `Pipeline` agree: the UNet's config is one Lumen can build, an SDXL UNet
    /// has its second text encoder, and the scheduler config reads and names a known scheduler.
    /// Returns the notices a `Pipeline` would show about the scheduler (a stand-in for a class Lumen lacks).
    @discardableResult
    public func checkRunnable() throws -> [String] {
        _ = try UNet2DConditionModel(config: unetConfig)
        let latent = vaeConfig.latentChannels
        guard unetConfig.inChannels == latent || isInpainting || isInstructPix2Pix else {
            throw ModelFileError.invalidValue(path: layout == .diffusersFolder ? path + "/unet/config.json" : path, field: "in_channels",
                                              value: "\(unetConfig.inChannels)",
                                              expected: "\(latent) (the VAE's latent channels), \(2 * latent + 1) (an inpainting UNet: latents, mask, "
                                                + "masked image) or \(2 * latent) (InstructPix2Pix: latents, image)")
        }
        if isInstructPix2Pix && refiner != nil {
            throw ModelFileError.unsupported(path: path, detail: "a refiner with an InstructPix2Pix UNet (\(2 * latent) input channels)")
        }
        if unetConfig.additionEmbedType == .textTime && xl == nil && refiner == nil {
            throw ModelFileError.missingFile(
                path: layout == .diffusersFolder ? path + "/text_encoder_2" : path,
                detail: "the UNet's config (addition_embed_type \"text_time\") is SDXL's, which also needs text_encoder_2/ and tokenizer_2/; "
                    + "the model has no second text encoder")
        }
        try checkAddedTimeIds()  // StableDiffusionModel+Refiner.swift
        if let p = schedulerConfigPath {
            let config = try SchedulerConfig(path: p)
            let (_, notice) = try SchedulerKind.resolve(className: config.className, path: p, useKarrasSigmas: config.useKarrasSigmas ?? false,
                                                      stochastic: config.algorithmType == .sdeDpmsolverPlusPlus)
            return notice.map { [$0] } ?? []
        }
        return []
    }

    /// The range checks for a VAE given with `--vae` (a single VAE file's config is inferred
    /// from its shapes over the model's own).
    func checkReplacedVAEConfig(_ vaePath: String) throws {
        if let bad = vaeConfig.firstInvalidField() {
            throw ModelFileError.invalidValue(path: vaePath, field: "\(bad.field) (of the VAE config)", value: bad.value, expected: bad.expected)
        }
    }
}
