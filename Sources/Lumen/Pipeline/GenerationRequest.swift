import LumenRuntime

/// Which executor runs the networks.
public enum Backend: Sendable, Hashable, CustomStringConvertible {
    /// Vulkan when a device is present, otherwise the CPU.
    case auto
    case cpu
    /// A Vulkan device by index (nil: the preferred one).
    case vulkan(device: Int?)

    public var description: String {
        switch self {
        case .auto: return "auto"
        case .cpu: return "cpu"
        case .vulkan(let d): return d.map { "vulkan:\($0)" } ?? "vulkan"
        }
    }
}

/// The sampler that walks the noise schedule.
public enum SchedulerKind: String, Sendable, Hashable, CaseIterable {
    case ddim
    case pndm
    case euler
    case eulerAncestral = "euler-a"
    case dpmpp2m = "dpmpp-2m"
    case dpmpp2mKarras = "dpmpp-2m-karras"
    case lcm
    case ddpm
    case dpmpp2mSde = "dpmpp-2m-sde"
    case dpmpp2mSdeKarras = "dpmpp-2m-sde-karras"
    case unipc
    case deis
    case heun
    case lms
    case kdpm2
    case kdpm2Ancestral = "kdpm2-a"
    case dpmppSinglestep = "dpmpp-singlestep"
    /// The EDM formulation's samplers (Playground v2.5, CosXL): for models trained that way only.
    case edmEuler = "edm-euler"
    case edmDpmpp2m = "edm-dpmpp-2m"
    /// Trajectory consistency distillation's sampler, for TCD models and LoRAs (with `eta` as its γ).
    case tcd

    /// The name A1111 writes in its `parameters` text.
    public var displayName: String {
        switch self {
        case .ddim: return "DDIM"
        case .pndm: return "PLMS"
        case .euler: return "Euler"
        case .eulerAncestral: return "Euler a"
        case .dpmpp2m: return "DPM++ 2M"
        case .dpmpp2mKarras: return "DPM++ 2M Karras"
        case .lcm: return "LCM"
        case .ddpm: return "DDPM"
        case .dpmpp2mSde: return "DPM++ 2M SDE"
        case .dpmpp2mSdeKarras: return "DPM++ 2M SDE Karras"
        case .unipc: return "UniPC"
        case .deis: return "DEIS"
        case .heun: return "Heun"
        case .lms: return "LMS"
        case .kdpm2: return "DPM2"
        case .kdpm2Ancestral: return "DPM2 a"
        case .dpmppSinglestep: return "DPM++ single-step"
        case .edmEuler: return "EDM Euler"
        case .edmDpmpp2m: return "EDM DPM++ 2M"
        case .tcd: return "TCD"
        }
    }
}

/// Whether the VAE decodes the latents in overlapping tiles (diffusers' `enable_vae_tiling`,
/// `AutoencoderKL.tiled_decode`): memory stays that of one tile whatever the image size, at the
/// price of slightly different pixels near the tile seams.
public enum VAETiling: Sendable, Hashable, CustomStringConvertible {
    /// Never tile (diffusers' default); an image too large for the executor fails with
    /// `LumenError.outOfMemory`.
    case off
    /// Tile when the untiled decoder would hold a tensor larger than the executor can bind
    /// (Vulkan's maxStorageBufferRange), or when the image has more than twice the pixels of the
    /// VAE's `sample_size`² (SD 1.5: more than 512×1024); the tile is the VAE's `sample_size`,
    /// made smaller where the executor needs it. Smaller images decode untiled, as diffusers does.
    case auto
    /// Always tile with tiles of `sampleSize` pixels (a multiple of 4 × the VAE's scale factor,
    /// e.g. 32 for SD) when the latent is larger than one tile (diffusers' rule).
    case tiles(sampleSize: Int)

    public var description: String {
        switch self {
        case .off: return "off"
        case .auto: return "auto"
        case .tiles(let s): return "\(s)"
        }
    }

    /// Parses "auto", "off" or a tile size in pixels.
    public init?(_ text: String) {
        switch text {
        case "auto": self = .auto
        case "off": self = .off
        default:
            guard let n = Int(text), n > 0 else { return nil }
            self = .tiles(sampleSize: n)
        }
    }
}

/// A starting image for image-to-image, values in [0, 1], RGB, rows top to bottom.
public struct InitImage: Sendable, Hashable {
    public let width: Int
    public let height: Int
    /// width × height × 3 values in [0, 1].
    public let rgb: [Float]

    public init(width: Int, height: Int, rgb: [Float]) {
        self.width = width
        self.height = height
        self.rgb = rgb
    }

    /// Reads a PNG (any colour type or depth).
    public init(pngPath: String) throws {
        let (image, normalized) = try RGBImage.readPNG(pngPath)
        self.init(width: image.width, height: image.height, rgb: normalized)
    }
}

/// Latents [N, C, h, w] held by value (a request's init latents for a second pass).
public struct Latents: Sendable, Hashable {
    public let shape: [Int]
    public let values: [Float]

    /// The values of `tensor` (as `Pipeline.latents(for:)` returns them).
    public init(_ tensor: Tensor) {
        shape = tensor.shape.dims
        values = tensor.toFloats()
    }

    public var tensor: Tensor {
        get throws { try Tensor(shape: Shape(shape), values: values) }
    }
}

/// A ControlNet and the image that guides it.
public struct ControlNetInput: Sendable, Hashable {
    /// A diffusers `ControlNetModel` folder.
    public var path: String
    /// The conditioning image (an edge map, depth map, pose, …) made elsewhere, RGB in [0, 1],
    /// the size of the output image.
    public var image: InitImage
    /// diffusers' `controlnet_conditioning_scale`: the residuals are multiplied by it.
    public var scale: Float = 1
    /// diffusers' `control_guidance_start`/`end`: the fraction of the steps during which it acts.
    public var start: Double = 0
    public var end: Double = 1

    public init(path: String, image: InitImage, scale: Float = 1, start: Double = 0, end: Double = 1) {
        self.path = path
        self.image = image
        self.scale = scale
        self.start = start
        self.end = end
    }
}

/// One generation: a prompt and how to sample it. Defaults follow diffusers' pipeline.
public struct GenerationRequest: Sendable, Hashable {
    public var prompt: String
    /// What not to draw. nil is diffusers' `negative_prompt=None`: SD 1.x/2.x then encode the
    /// empty string, and SDXL (with `force_zeros_for_empty_prompt`) uses zero unconditional
    /// inputs; "" is an explicit empty prompt, which SDXL encodes like any other text.
    public var negativePrompt: String? = nil
    /// How the prompts are read: `.plain` as diffusers reads them (77 tokens, the text as it is),
    /// `.a1111` as AUTOMATIC1111 does (attention weights, BREAK, any length in 75-token chunks).
    public var promptSyntax: PromptSyntax = .plain
    public var steps: Int = 25
    /// Classifier-free guidance; at most 1 runs the conditional branch alone.
    public var guidanceScale: Float = 7.5
    /// diffusers' `guidance_rescale` (Lin et al. 2023, section 3.4): each image's guided prediction
    /// is rescaled to the standard deviation of its conditional one and mixed with the unrescaled
    /// prediction in this proportion, 0…1 (0: off; 0.7 for models trained with zero terminal SNR).
    /// Only with guidance (scale above 1).
    public var guidanceRescale: Float = 0
    /// An InstructPix2Pix model's image guidance (diffusers' `image_guidance_scale`, default 1.5):
    /// how closely the edit keeps to the init image. Guidance runs when `guidanceScale` is above 1
    /// and this is at least 1. Other models ignore it.
    public var imageGuidanceScale: Float = 1.5
    /// diffusers' `eta`, 0…1, which the pipelines pass to the schedulers that take it: DDIM's share
    /// of fresh noise in each step (0, deterministic, by default) and TCD's γ. The others ignore it,
    /// as in diffusers.
    public var eta: Float = 0
    /// Image size in pixels (multiples of the VAE's scale factor); nil: the model's default size,
    /// or the init image's size for image-to-image.
    public var width: Int? = nil
    public var height: Int? = nil
    public var seed: UInt64 = 0
    /// nil: the model's own scheduler config (or PNDM, as SD 1.x ships).
    public var scheduler: SchedulerKind? = nil
    /// What the UNet predicts, overriding the scheduler config (nil: the config's). For checkpoints
    /// whose files do not say, e.g. a Stable Diffusion 2.x-base single file (epsilon) read without
    /// `--config`, which is otherwise taken for 2.1's v-prediction.
    public var predictionType: PredictionType? = nil
    /// Images per prompt.
    public var count: Int = 1
    /// Image-to-image: the starting image and how much of it to repaint (diffusers' strength:
    /// 0.8 of 50 steps runs the last 40; 1.0 ignores the image).
    public var initImage: InitImage? = nil
    public var strength: Float = 0.8
    /// Masked image-to-image: white (grey ≥ 0.5) is repainted, black is kept, as diffusers'
    /// `StableDiffusionInpaintPipeline` does with an ordinary UNet; the same size as the init image.
    public var mask: InitImage? = nil
    /// Blurs the mask first as diffusers' `VaeImageProcessor.blur(mask, blur_factor)` does
    /// (Pillow's GaussianBlur; the standard deviation in pixels, 0 for none). The blurred mask is
    /// still thresholded at half for the latents, so alone it only rounds the mask's outline; with
    /// `maskCrop` it also softens the seam where the result is laid over the original.
    public var maskBlur: Float = 0
    /// diffusers' `padding_mask_crop`: inpaint only the mask's bounding box plus this many pixels
    /// (widened to the output's aspect ratio), resized to the output size (`width` × `height`,
    /// default the init image's), then laid back into the init image through the mask. The images
    /// are the init image's size; `latents(for:)` returns the crop's latents.
    public var maskCrop: Int? = nil
    /// A second pass: start from these latents [count, C, h, w] (what `latents(for:)` returns, not
    /// divided by the VAE's scaling factor) instead of noise or an encoded init image. With
    /// `denoisingStart` they are used as they are; without it they are noised to `strength` as an
    /// encoded init image would be.
    public var initLatents: Latents? = nil
    /// diffusers' `denoising_end`: run only the steps whose timestep is at least
    /// `round((1 - denoisingEnd) · T)` of the T training timesteps, leaving the rest to a second
    /// pass (an SDXL refiner, or another model) that starts with `denoisingStart` at the same value.
    public var denoisingEnd: Double? = nil
    /// diffusers' `denoising_start`: skip the steps whose timestep is at least
    /// `round((1 - denoisingStart) · T)` (the part a first pass ran) and add no noise to the init
    /// latents; `strength` is then ignored.
    public var denoisingStart: Double? = nil
    /// A second pass at a larger size from the upscaled latents (AUTOMATIC1111's hires fix);
    /// text-to-image only. The images (and `latents(for:)`) are the second pass's.
    public var hires: HiresFix? = nil
    /// ControlNets guiding the UNet (several are summed, as diffusers' `MultiControlNetModel`).
    public var controlNets: [ControlNetInput] = []
    /// An SDXL refiner's aesthetic-score conditioning (diffusers' `aesthetic_score` and
    /// `negative_aesthetic_score`, for the conditional and the unconditional rows); other models
    /// ignore them.
    public var aestheticScore: Float = 6
    public var negativeAestheticScore: Float = 2.5
    /// SDXL's size conditioning (original size, crop, target size, and their negative forms);
    /// the defaults are diffusers': the output's size and no crop. Other models ignore it.
    public var microConditioning = SDXLMicroConditioning()
    /// Skip the last `clipSkip` layers of the text encoder (diffusers' clip_skip).
    public var clipSkip: Int = 0
    /// Tiled VAE decoding (`.auto`: only where the image is large or the executor needs it).
    public var vaeTiling: VAETiling = .auto
    /// Preview images during denoising, decoded by TAESD (`.preview` events); nil: none.
    public var previews: PreviewOptions? = nil
    /// What turns the final latents into images: the model's VAE, or TAESD (much faster, softer).
    public var decoder: ImageDecoder = .vae
    /// What turns the init image (image-to-image, inpainting, the hires fix's Lanczos upscale) into
    /// latents: the model's VAE, or TAESD's encoder.
    public var encoder: ImageEncoder = .vae

    public init(prompt: String) { self.prompt = prompt }
}

/// What a generation reports as it goes.
public enum GenerationEvent: Sendable {
    /// Step `index` (1-based) of `count` is done; `latents` are the current latents [N, 4, h, w]
    /// (decode them for a preview).
    case step(index: Int, count: Int, latents: Tensor)
    /// Image `index` of the request is ready.
    case image(index: Int, image: RGBImage)
    /// With `GenerationRequest.previews`: after step `index` (1-based) of `count`, every
    /// `PreviewOptions.every` steps, the current latents decoded by TAESD, one image per image of
    /// the request. Comes before that step's `.step` event.
    case preview(index: Int, count: Int, images: [RGBImage])
}

/// Previews during denoising (`GenerationEvent.preview`).
public struct PreviewOptions: Sendable, Hashable {
    /// A TAESD / TAESDXL decoder for the model's latent space: a diffusers `AutoencoderTiny` folder,
    /// or a single file (`taesd_decoder.safetensors`, `taesdxl_decoder.safetensors`, or an
    /// `AutoencoderTiny`'s `diffusion_pytorch_model.safetensors`).
    public var taesdPath: String
    /// A preview after every `every`-th step (steps `every`, 2·`every`, … of the pass).
    public var every: Int

    public init(taesdPath: String, every: Int = 1) {
        self.taesdPath = taesdPath
        self.every = every
    }
}

/// The decoder of the final latents.
public enum ImageDecoder: Sendable, Hashable {
    /// The model's VAE (diffusers' default).
    case vae
    /// TAESD / TAESDXL at `path` (as `PreviewOptions.taesdPath`): diffusers' pipeline with
    /// `vae=AutoencoderTiny`, whole (never tiled).
    case taesd(path: String)
}

/// The encoder of init images.
public enum ImageEncoder: Sendable, Hashable {
    /// The model's VAE: a sample of its latent distribution from the request's generator, times
    /// the scaling factor (diffusers' default).
    case vae
    /// TAESD / TAESDXL's encoder at `path` (`taesd_encoder.safetensors`, `taesdxl_encoder.safetensors`
    /// or a diffusers `AutoencoderTiny` folder): diffusers' pipeline with `vae=AutoencoderTiny`,
    /// whose `encode(x).latents` are already scaled latents and draw nothing from the generator;
    /// whole (never tiled).
    case taesd(path: String)
}

/// Errors of a generation request.
public enum GenerationError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidRequest(String)
    case tokenizerUnavailable(String)
    /// The request cannot fit the memory budget, even with the VAE tiled: the plan says where.
    case insufficientMemory(plan: String)
    /// A stage of the generation produced NaN or infinite values (`stage` says which, e.g. "UNet
    /// step 3 of 25"); `hint` says what to try. No image is returned.
    case nonFinite(stage: String, hint: String)

    public var description: String {
        switch self {
        case .invalidRequest(let s): return "invalid request: \(s)"
        case .tokenizerUnavailable(let s): return "no tokenizer: \(s)"
        case .insufficientMemory(let plan):
            return "not enough memory for this request, even with the VAE tiled (nothing was run); try a smaller size, fewer images per batch, or a larger LUMEN_MEMORY_BUDGET / --memory-budget if more memory is really there:\n\(plan)"
        case .nonFinite(let stage, let hint): return "the \(stage) produced NaN or infinite values, so no image was written: \(hint)"
        }
    }
}
