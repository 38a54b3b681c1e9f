import LumenRuntime

/// TAESD as a pipeline stage: the tiny decoder (`AutoencoderTinyDecoder`) compiled through the
/// pipeline's cache once per latent shape, for previews during denoising and for fast final decodes
/// (`ImageDecoder.taesd`). It decodes the latents as the denoising loop leaves them (scaled; TAESD
/// takes them without dividing by the VAE's scaling factor).
struct TAESDStage {
    let decoder: AutoencoderTinyDecoder
    let cache: ProgramCache

    func key(batch: Int, height: Int, width: Int) -> ProgramKey {
        .tinyDecode(path: decoder.path, batch: batch, height: height, width: width)
    }

    func build(_ g: Graph, batch: Int, height: Int, width: Int) throws -> [Value] {
        let x = try g.input("latents", shape: [batch, decoder.config.latentChannels, height, width])
        return [try decoder.build(g, clampedLatents: x)]
    }

    /// Activation bytes of the decoder for these latents (0 once compiled), for the memory plan.
    func plannedActivations(batch: Int, height: Int, width: Int) throws -> Int {
        try cache.plannedBytes(key(batch: batch, height: height, width: width)) { try build($0, batch: batch, height: height, width: width) }
    }

    /// Latents [N, C, h, w] → N images.
    func decode(_ latents: Tensor, withLoRAs: Bool) throws -> [RGBImage] {
        let (n, h, w) = (latents.shape[0], latents.shape[2], latents.shape[3])
        let network = try cache.network(key(batch: n, height: h, width: w)) { try build($0, batch: n, height: h, width: w) }
        let decoded = try network.run(["latents": try AutoencoderTinyDecoder.clamp(latents)])[0]
        try ensureFinite(decoded.toFloats(), stage: .taesdDecode, withLoRAs: withLoRAs)
        return try (0..<n).map { try RGBImage(decoded: decoded, index: $0) }
    }
}

/// Previews as a `DenoisingHook`: after every `every`-th step of the pass, the latents (after the
/// scheduler's step and the hooks before this one, what diffusers' `callback_on_step_end` is
/// handed) decoded by TAESD and given to `emit(k, n, images)` (step k of n, from 1). It changes
/// neither the latents nor the random stream.
struct PreviewHook: DenoisingHook {
    let stage: TAESDStage
    let every: Int
    /// The pass's steps (indices into the scheduler's timesteps).
    let steps: Range<Int>
    /// The latent shape [N, C, h, w].
    let shape: Shape
    let withLoRAs: Bool
    let emit: (Int, Int, [RGBImage]) throws -> Void

    func afterStep(_ latents: inout [Float], step: Int, scheduler: any Scheduler, generator: inout TorchGenerator) throws {
        let k = step - steps.lowerBound + 1
        guard k % every == 0 else { return }
        // Non-finite latents are the loop's to report, naming the UNet step.
        guard !latents.contains(where: { !$0.isFinite }) else { return }
        try emit(k, steps.count, try stage.decode(try Tensor(shape: shape, values: latents), withLoRAs: withLoRAs))
    }
}

extension Pipeline {
    /// The TAESD decoder at `path`, opened once and checked against the model: its latent channels
    /// and pixels per latent must be the VAE's. (TAESD and TAESDXL have the same shapes; their
    /// weights alone cannot tell SD's latent space from SDXL's, so the wrong one gives wrong colours,
    /// not an error: `notices(for:)` warns when the file's name says the other family.)
    public func taesd(_ path: String) throws -> AutoencoderTinyDecoder {
        if let known = loadedTAESDs[path] { return known }
        let taesd = try AutoencoderTinyDecoder(path: path)
        let c = taesd.config, vae = model.vaeConfig
        guard c.latentChannels == vae.latentChannels else {
            throw ModelFileError.unsupported(path: path, detail: "this TAESD decodes \(c.latentChannels)-channel latents"
                + (c.latentChannels == 16 ? " (as TAESD3 and TAEF1 do)" : "") + "; the model's VAE makes \(vae.latentChannels)-channel latents: "
                + "use taesd_decoder.safetensors (madebyollin/taesd) for SD 1.x/2.x or taesdxl_decoder.safetensors (madebyollin/taesdxl) for SDXL")
        }
        guard c.scaleFactor == vae.scaleFactor else {
            throw ModelFileError.unsupported(path: path, detail: "this TAESD makes \(c.scaleFactor) pixels per latent (\(c.blocks.count - 1) upsamplings); "
                + "the model's VAE makes \(vae.scaleFactor)")
        }
        loadedTAESDs[path] = taesd
        return taesd
    }

    /// The TAESD stage of a TAESD path.
    func taesdStage(_ path: String) throws -> TAESDStage {
        TAESDStage(decoder: try taesd(path), cache: cache)
    }

    /// A notice when a TAESD's file or folder name names the other family (TAESDXL for an SD 1.x/2.x
    /// model, plain TAESD for SDXL): the decode runs, with wrong colours.
    func taesdFamilyNotices(_ request: GenerationRequest) -> [String] {
        var paths: [String] = []
        if let p = request.previews?.taesdPath { paths.append(p) }
        if case .taesd(let p) = request.decoder, !paths.contains(p) { paths.append(p) }
        return paths.compactMap { path in
            let name = path.split(separator: "/").suffix(2).joined(separator: "/").lowercased()
            let saysXL = name.contains("taesdxl"), saysSD = name.contains("taesd") && !saysXL
            if model.xl == nil && saysXL {
                return "the TAESD \(path) looks like TAESDXL (for SDXL latents) but the model is Stable Diffusion 1.x/2.x: its images will have wrong colours; use taesd_decoder.safetensors"
            }
            if model.xl != nil && saysSD {
                return "the TAESD \(path) looks like TAESD for SD 1.x/2.x latents but the model is SDXL: its images will have wrong colours; use taesdxl_decoder.safetensors"
            }
            return nil
        }
    }
}

/// TAESD's encoder as a pipeline stage (`ImageEncoder.taesd`): init images to latents, compiled
/// through the pipeline's cache once per image size. `AutoencoderTiny.encode(x).latents` are
/// already the scaled latents the UNet works on, and draw nothing from the generator (diffusers'
/// `retrieve_latents` takes `.latents` as they are; AutoencoderTiny's scaling factor is 1).
struct TAESDEncodeStage {
    let encoder: AutoencoderTinyEncoder
    let cache: ProgramCache

    func key(height: Int, width: Int) -> ProgramKey {
        .tinyEncode(path: encoder.path, height: height, width: width)
    }

    func build(_ g: Graph, height: Int, width: Int) throws -> [Value] {
        let x = try g.input("image", shape: [1, encoder.config.inChannels, height, width])
        return [try encoder.build(g, image: x)]
    }

    /// Activation bytes of the encoder for an image of this size (0 once compiled), for the memory plan.
    func plannedActivations(height: Int, width: Int) throws -> Int {
        try cache.plannedBytes(key(height: height, width: width)) { try build($0, height: height, width: width) }
    }

    /// The image as latents [1, C, H/8, W/8], flattened.
    func encode(_ image: InitImage, withLoRAs: Bool) throws -> [Float] {
        let (h, w) = (image.height, image.width)
        var planar = [Float](repeating: 0, count: 3 * h * w)
        for i in 0..<(h * w) {
            for c in 0..<3 { planar[c * h * w + i] = image.rgb[i * 3 + c] * 2 - 1 }
        }
        let network = try cache.network(key(height: h, width: w)) { try build($0, height: h, width: w) }
        let latents = try network.run(["image": try Tensor(shape: [1, 3, h, w], values: planar)])[0].toFloats()
        try ensureFinite(latents, stage: .taesdEncode, withLoRAs: withLoRAs)
        return latents
    }
}

extension Pipeline {
    /// The TAESD encoder at `path`, opened once and checked against the model: it must make the
    /// VAE's latent channels at the VAE's pixels per latent.
    public func taesdEncoder(_ path: String) throws -> AutoencoderTinyEncoder {
        if let known = loadedTAESDEncoders[path] { return known }
        let taesd = try AutoencoderTinyEncoder(path: path)
        let c = taesd.config, vae = model.vaeConfig
        guard c.inChannels == 3 else {
            throw ModelFileError.unsupported(path: path, detail: "this TAESD encodes \(c.inChannels)-channel images; expected RGB (3)")
        }
        guard c.latentChannels == vae.latentChannels else {
            throw ModelFileError.unsupported(path: path, detail: "this TAESD encoder makes \(c.latentChannels)-channel latents; the model's VAE makes \(vae.latentChannels): "
                + "use taesd_encoder.safetensors (madebyollin/taesd) for SD 1.x/2.x or taesdxl_encoder.safetensors (madebyollin/taesdxl) for SDXL")
        }
        guard c.scaleFactor == vae.scaleFactor else {
            throw ModelFileError.unsupported(path: path, detail: "this TAESD encoder makes a latent of \(c.scaleFactor) pixels (\(c.blocks.count - 1) stride-2 levels); "
                + "the model's VAE makes one of \(vae.scaleFactor)")
        }
        loadedTAESDEncoders[path] = taesd
        return taesd
    }

    /// The TAESD encoder stage of a TAESD path.
    func taesdEncodeStage(_ path: String) throws -> TAESDEncodeStage {
        TAESDEncodeStage(encoder: try taesdEncoder(path), cache: cache)
    }

    /// An init image as scaled latents [1, C, h, w], by the request's encoder: the VAE (a sample
    /// from the generator, tiled as the plan says) or TAESD (whole, drawing nothing).
    func encodeInitImage(_ image: InitImage, _ request: GenerationRequest, plan: MemoryPlan,
                         generator: inout TorchGenerator) throws -> [Float] {
        switch request.encoder {
        case .vae:
            return try vae.encode(image, layout: plan.encodeTiles, statistics: latentStatistics(request).encode, generator: &generator)
        case .taesd(let path):
            return try taesdEncodeStage(path).encode(image, withLoRAs: !model.loras.isEmpty)
        }
    }
}
