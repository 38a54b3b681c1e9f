import LumenRuntime

/// The bounds of a request's numbers, checked before any arithmetic is done with them (a width of
/// 2⁶³ - 8 must not overflow the pixel count, a count of -3 must not form a range).
extension GenerationRequest {
    /// The largest width or height: four times the largest image the memory plan targets, and small
    /// enough that products of sizes stay far inside Int.
    public static let maxSide = 16384
    /// Guidance beyond this multiplies the difference of the two predictions by more than a float
    /// can carry through a UNet step in fp16 and gives noise long before that; published models
    /// use 1–20 (0 or any value up to 1 turns guidance off).
    public static let maxGuidanceScale: Float = 100
}

extension LoRAWeight {
    /// A LoRA's strength multiplies its update of every merged weight; 1 is the trained effect and
    /// values past ±100 only overflow the merged weights (fp16 holds at most 65504).
    public static let maxStrength: Float = 100

    /// Throws when the strength is not finite or beyond ±`maxStrength`.
    public func checkStrength() throws {
        guard strength.isFinite, abs(strength) <= Self.maxStrength else {
            throw GenerationError.invalidRequest(
                "LoRA \(path): strength \(strength); expected a finite number in -\(Self.maxStrength)…\(Self.maxStrength) (1 is the trained effect)")
        }
    }
}

extension Pipeline {
    /// Throws `GenerationError.invalidRequest` naming the first value out of range.
    func validate(_ r: GenerationRequest) throws {
        func invalid(_ s: String) -> GenerationError { .invalidRequest(s) }
        guard r.steps >= 1, r.steps <= 1000 else { throw invalid("steps must be 1...1000 (got \(r.steps))") }
        guard r.count >= 1, r.count <= 64 else { throw invalid("count must be 1...64 (got \(r.count))") }
        guard r.guidanceScale.isFinite, r.guidanceScale >= 0, r.guidanceScale <= GenerationRequest.maxGuidanceScale else {
            throw invalid("guidance scale must be 0…\(GenerationRequest.maxGuidanceScale) (got \(r.guidanceScale)); "
                          + "values up to 1 turn guidance off, published models use 1–20, and larger ones only overflow")
        }
        let m = r.microConditioning
        for (name, size) in [("original size", m.originalSize), ("target size", m.targetSize),
                             ("negative original size", m.negativeOriginalSize), ("negative target size", m.negativeTargetSize)] {
            if let size, !((1...65536).contains(size.width) && (1...65536).contains(size.height)) {
                throw invalid("SDXL \(name) \(size.width)x\(size.height): expected 1…65536 pixels a side")
            }
        }
        for (name, crop) in [("crop", m.cropTopLeft), ("negative crop", m.negativeCropTopLeft)]
            where !((0...65536).contains(crop.top) && (0...65536).contains(crop.left)) {
            throw invalid("SDXL \(name) top-left \(crop.top),\(crop.left): expected 0…65536 pixels")
        }
        guard r.eta.isFinite, (0...1).contains(r.eta) else {
            throw invalid("eta must be 0…1 (got \(r.eta)); it is DDIM's share of fresh noise in each step and TCD's gamma")
        }
        guard r.guidanceRescale.isFinite, (0...1).contains(r.guidanceRescale) else {
            throw invalid("guidance rescale must be 0…1 (got \(r.guidanceRescale)); it is the share of the rescaled prediction")
        }
        let side = 1...GenerationRequest.maxSide
        for (name, value) in [("width", r.width), ("height", r.height)] {
            if let value, !side.contains(value) {
                throw invalid("\(name) must be 1…\(GenerationRequest.maxSide) pixels (got \(value))")
            }
        }
        let f = model.vaeConfig.scaleFactor
        // The model's default size (sample_size × scale factor) is bounded by the config checks.
        let (w, h) = size(for: r)
        guard side.contains(w), side.contains(h), w % f == 0, h % f == 0 else {
            throw invalid("width and height must be positive multiples of \(f) up to \(GenerationRequest.maxSide) (got \(w)x\(h))")
        }
        guard w * h <= 4096 * 4096 else { throw invalid("\(w)x\(h) is larger than 4096x4096") }
        guard r.clipSkip >= 0, r.clipSkip < model.textEncoderConfig.numHiddenLayers else {
            throw invalid("clip skip must be 0..<\(model.textEncoderConfig.numHiddenLayers)")
        }
        if let previews = r.previews, !(1...1000).contains(previews.every) {
            throw invalid("previews every \(previews.every) steps: expected 1…1000")
        }
        for (name, value) in [("aesthetic score", r.aestheticScore), ("negative aesthetic score", r.negativeAestheticScore)] {
            guard value.isFinite, abs(value) <= 1000 else { throw invalid("\(name) must be a finite number up to ±1000 (got \(value)); the refiner was trained on 0–10") }
        }
        if case .tiles(let tile) = r.vaeTiling {
            guard tile >= 4 * f, tile <= GenerationRequest.maxSide, tile % (4 * f) == 0 else {
                throw invalid("a VAE tile must be a positive multiple of \(4 * f) pixels up to \(GenerationRequest.maxSide) (got \(tile))")
            }
        }
        for (name, value) in [("denoising start", r.denoisingStart), ("denoising end", r.denoisingEnd)] {
            if let value, !(value > 0 && value < 1) {
                throw invalid("\(name) must be in (0, 1), the fraction of the noise schedule (got \(value))")
            }
        }
        if let start = r.denoisingStart, let end = r.denoisingEnd, start >= end {
            throw invalid("denoising start \(start) must be below denoising end \(end)")
        }
        if r.denoisingStart != nil && r.initImage == nil && r.initLatents == nil {
            throw invalid("denoising start needs init latents (a first pass's) or an init image to continue from")
        }
        if let latents = r.initLatents {
            guard r.initImage == nil else { throw invalid("give init latents or an init image, not both") }
            let want: [Int] = [r.count, model.vaeConfig.latentChannels, h / f, w / f]
            guard latents.shape == want, latents.values.count == want.reduce(1, *) else {
                throw invalid("init latents are \(latents.shape); expected \(want) (count, latent channels, height / \(f), width / \(f))")
            }
            if r.denoisingStart == nil {
                guard r.strength.isFinite, r.strength > 0, r.strength <= 1 else {
                    throw invalid("strength must be in (0, 1] (got \(r.strength))")
                }
            }
            if latents.values.contains(where: { !$0.isFinite }) {
                throw invalid("the init latents hold NaN or infinite values")
            }
        }
        for (k, c) in r.controlNets.enumerated() {
            let what = "ControlNet \(k + 1) (\(c.path))"
            guard c.image.width == w, c.image.height == h, c.image.rgb.count == w * h * 3 else {
                throw invalid("\(what): the control image is \(c.image.width)x\(c.image.height); it must be the output's \(w)x\(h)")
            }
            guard c.image.rgb.allSatisfy({ $0.isFinite }) else { throw invalid("\(what): the control image holds non-finite values") }
            guard c.scale.isFinite, abs(c.scale) <= 10 else { throw invalid("\(what): scale \(c.scale); expected -10…10") }
            guard c.start >= 0, c.end <= 1, c.start < c.end else {
                throw invalid("\(what): start \(c.start) and end \(c.end) must satisfy 0 ≤ start < end ≤ 1")
            }
        }
        if model.isInstructPix2Pix {
            guard r.initImage != nil else {
                throw invalid("\(model.path) is an InstructPix2Pix model (its UNet takes latents and the image to edit): give an init image")
            }
            for (given, what) in [(r.mask != nil, "a mask"), (!r.controlNets.isEmpty, "ControlNets"), (r.hires != nil, "the hires fix"),
                                  (r.denoisingStart != nil || r.denoisingEnd != nil, "denoising start or end"),
                                  (r.initLatents != nil, "init latents")] where given {
                throw invalid("an InstructPix2Pix model edits a whole image: it cannot be combined with \(what)")
            }
            guard r.imageGuidanceScale.isFinite, r.imageGuidanceScale >= 0, r.imageGuidanceScale <= GenerationRequest.maxGuidanceScale else {
                throw invalid("image guidance scale \(r.imageGuidanceScale): expected 0…\(Int(GenerationRequest.maxGuidanceScale))")
            }
        }
        if model.isInpainting {
            guard r.mask != nil, r.initImage != nil else {
                throw invalid("\(model.path) is an inpainting model (its UNet takes latents, mask and masked image): give an init image and a mask")
            }
        }
        if let mask = r.mask {
            guard let image = r.initImage else { throw invalid("a mask needs an init image to repaint") }
            guard mask.width == image.width, mask.height == image.height else {
                throw invalid("the mask is \(mask.width)x\(mask.height) but the init image is \(image.width)x\(image.height); they must be the same size")
            }
            guard mask.rgb.count == mask.width * mask.height * 3, mask.rgb.allSatisfy({ $0.isFinite }) else {
                throw invalid("the mask has \(mask.rgb.count) values for \(mask.width)x\(mask.height), or values outside [0, 1]")
            }
            guard r.denoisingStart == nil else { throw invalid("a mask cannot be combined with denoising start") }
        }
        if let image = r.initImage {
            guard r.strength.isFinite, r.strength > 0, r.strength <= 1 else {
                throw invalid("strength must be in (0, 1] (got \(r.strength))")
            }
            guard image.width == w, image.height == h else {
                throw invalid("the init image is \(image.width)x\(image.height); resizing is not supported, so width and height must match it")
            }
            guard image.rgb.count == image.width * image.height * 3 else {
                throw invalid("the init image has \(image.rgb.count) values for \(image.width)x\(image.height)")
            }
            if let i = image.rgb.firstIndex(where: { !$0.isFinite }) {
                throw invalid("the init image's value \(i) is \(image.rgb[i]); expected values in [0, 1]")
            }
        }
    }
}

extension Pipeline {
    /// Refuses a run whose first step the scheduler cannot compute: with `rescale_betas_zero_snr`
    /// the last training timestep has ᾱ = 0, and DDIM, DDPM and LCM estimate the clean image from
    /// an epsilon prediction by dividing by √ᾱ (diffusers returns NaN latents there). "trailing"
    /// spacing, as zero-SNR models ship, starts at that timestep; "leading" and image-to-image
    /// below strength 1 do not, and run.
    func checkZeroSignalStart(_ config: SchedulerConfig, kind: SchedulerKind, scheduler: any Scheduler, first: Int) throws {
        guard [.ddim, .ddpm, .lcm, .tcd].contains(kind), kind.classDefaults.hasZeroSNRRescale, config.rescaleBetasZeroSnr == true,
              (config.predictionType ?? "epsilon") == PredictionType.epsilon.rawValue,
              first < scheduler.timesteps.count,
              Int(scheduler.timesteps[first]) == (config.numTrainTimesteps ?? 1000) - 1 else { return }
        throw GenerationError.invalidRequest(
            "\(kind.displayName) starts at timestep \(Int(scheduler.timesteps[first])), which rescale_betas_zero_snr leaves with no signal "
            + "(ᾱ = 0): an epsilon prediction cannot be turned into an image there (diffusers divides by 0 and returns NaN). "
            + "Zero-SNR models predict v: use --prediction-type v_prediction (or prediction_type in the scheduler config) "
            + "if the model was trained so, or a scheduler that starts below it (euler, euler-a, dpmpp-2m)")
    }
}
