import Foundation

/// What a single-file checkpoint read without `--config` gets beyond what its tensor shapes show,
/// per family: the settings diffusers' `from_single_file` takes from the diffusers repository it
/// maps that family to (`DIFFUSERS_DEFAULT_PIPELINE_PATHS`), so that the same file and seed give
/// diffusers' image. A family's scheduler is the whole `scheduler_config.json` of that repository,
/// never a scheduler class's own defaults (which for SD 1.x would be the wrong noise schedule).
public struct SingleFileDefaults: Sendable, Hashable {
    /// The family these defaults are for.
    public let family: ModelFamily
    /// The diffusers repository whose configs diffusers' `from_single_file` uses for this family.
    public let repository: String
    /// Its `scheduler/scheduler_config.json`, every field.
    public let scheduler: SchedulerConfig
    /// UNet `sample_size` (latents): the default image is this × the VAE's scale factor.
    public let unetSampleSize: Int
    /// VAE `sample_size` (pixels).
    public let vaeSampleSize: Int
    public let vaeScalingFactor: Float
    /// Attention heads: a fixed count at every level (SD 1.x: 8), or heads of a fixed width (SD 2.x: 64).
    public let attentionHeads: AttentionHeads
    public let upcastAttention: Bool
    /// The text encoder's activation (as transformers names it).
    public let textActivation: CLIPActivation
    /// The tokenizer's padding token, when not CLIP's `<|endoftext|>`.
    public let tokenizerPadToken: String?

    public enum AttentionHeads: Sendable, Hashable {
        case count(Int)
        case width(Int)
    }

    /// Stable Diffusion 1.x (`cond_stage_model.transformer.*`): stable-diffusion-v1-5's configs.
    public static let sd1 = SingleFileDefaults(
        family: .sd1, repository: "stable-diffusion-v1-5/stable-diffusion-v1-5",
        scheduler: .stableDiffusion(className: "PNDMScheduler", prediction: nil),
        unetSampleSize: 64, vaeSampleSize: 512, vaeScalingFactor: 0.18215, attentionHeads: .count(8),
        upcastAttention: false, textActivation: .quickGelu, tokenizerPadToken: nil)

    /// Stable Diffusion 2.x (OpenCLIP, `cond_stage_model.model.*`): stable-diffusion-2-1's configs,
    /// which diffusers uses for every 2.x file, 2.x-base (512, epsilon) included: such a file
    /// needs `--prediction-type epsilon` and a size, or `--config`, as it does in diffusers.
    public static let sd2 = SingleFileDefaults(
        family: .sd2, repository: "stabilityai/stable-diffusion-2-1",
        scheduler: .stableDiffusion(className: "DDIMScheduler", prediction: "v_prediction"),
        unetSampleSize: 96, vaeSampleSize: 768, vaeScalingFactor: 0.18215, attentionHeads: .width(64),
        upcastAttention: true, textActivation: .gelu, tokenizerPadToken: "!")

    /// Stable Diffusion XL base (`conditioner.embedders.*`): stable-diffusion-xl-base-1.0's configs
    /// (Euler, `leading` spacing, 64-wide heads, 1024×1024, VAE scaling 0.13025 with `force_upcast`).
    /// The first encoder is CLIP ViT-L (quick GELU, padded with `<|endoftext|>`); the second,
    /// OpenCLIP bigG, is GELU and padded with "!" (`sdxlSecondEncoder*`).
    public static let sdxl = SingleFileDefaults(
        family: .sdxl, repository: "stabilityai/stable-diffusion-xl-base-1.0",
        scheduler: .sdxlBase, unetSampleSize: 128, vaeSampleSize: 1024, vaeScalingFactor: 0.13025,
        attentionHeads: .width(64), upcastAttention: false, textActivation: .quickGelu, tokenizerPadToken: nil)

    /// Stable Diffusion XL refiner (OpenCLIP bigG alone as `conditioner.embedders.0.model.*`):
    /// stable-diffusion-xl-refiner-1.0's configs: the base's scheduler, heads, size and VAE; its one
    /// text encoder is bigG (GELU, padded with "!"); `requires_aesthetics_score` true and
    /// `force_zeros_for_empty_prompt` false (its model_index.json).
    public static let sdxlRefiner = SingleFileDefaults(
        family: .sdxl, repository: "stabilityai/stable-diffusion-xl-refiner-1.0",
        scheduler: .sdxlBase, unetSampleSize: 128, vaeSampleSize: 1024, vaeScalingFactor: 0.13025,
        attentionHeads: .width(64), upcastAttention: false, textActivation: .gelu, tokenizerPadToken: "!")

    /// Playground v2.5 (an SDXL base file that also holds `edm_mean` and `edm_std`, diffusers'
    /// "playground-v2-5"): playground-v2.5-1024px-aesthetic's configs, SDXL base's but for its
    /// EDM DPM-Solver++ scheduler and a VAE scaling factor of 0.5; the latents' per-channel mean and
    /// deviation are the file's `edm_mean`/`edm_std` (the repository's `latents_mean`/`latents_std`).
    public static let playground = SingleFileDefaults(
        family: .sdxl, repository: "playgroundai/playground-v2.5-1024px-aesthetic",
        scheduler: .playground, unetSampleSize: 128, vaeSampleSize: 1024, vaeScalingFactor: 0.5,
        attentionHeads: .width(64), upcastAttention: false, textActivation: .quickGelu, tokenizerPadToken: nil)

    /// SDXL's second text encoder and tokenizer (OpenCLIP bigG as diffusers converts it).
    static let sdxlSecondEncoderActivation = CLIPActivation.gelu
    static let sdxlSecondTokenizerPadToken = "!"

    /// `unet` with the fields the weights cannot show set as the repository has them.
    func apply(to unet: UNet2DConditionConfig) -> UNet2DConditionConfig {
        var u = unet
        switch attentionHeads {
        case .count(let n): u.attentionHeadDim = .all(n)
        case .width(let w): u.attentionHeadDim = .each(u.blockOutChannels.map { max(1, $0 / w) })
        }
        u.upcastAttention = upcastAttention
        u.sampleSize = unetSampleSize
        return u
    }

    func apply(to vae: AutoencoderKLConfig) -> AutoencoderKLConfig {
        var v = vae
        v.sampleSize = vaeSampleSize
        v.scalingFactor = vaeScalingFactor
        return v
    }

    /// One line for `lumen info`: where the defaults come from and what they are.
    public var summary: String {
        let s = scheduler
        var fields = s.noiseScheduleSummary
        if s.skipPrkSteps == true, s.className == "PNDMScheduler" { fields.append("skip_prk_steps") }
        fields.append("\(s.predictionType ?? "epsilon") prediction")
        let heads: String
        switch attentionHeads {
        case .count(let n): heads = "\(n) attention heads"
        case .width(let w): heads = "\(w)-wide attention heads"
        }
        let size = unetSampleSize * 8
        if s.timestepSpacing != nil { fields.insert("\(s.timestepSpacing!) spacing", at: 1) }
        let second = self == .sdxlRefiner
            ? " (OpenCLIP bigG, the only one), requires_aesthetics_score (aesthetic score 6, negative 2.5 unless the request says), no force_zeros_for_empty_prompt, VAE force_upcast"
            : family == .sdxl
            ? ", \(SingleFileDefaults.sdxlSecondEncoderActivation.rawValue) second text encoder padded with \"\(SingleFileDefaults.sdxlSecondTokenizerPadToken)\", force_zeros_for_empty_prompt, VAE force_upcast"
            : ""
        return "no --config: the configs diffusers' from_single_file uses for \(family.rawValue) (those of \(repository)): "
            + "\(s.className ?? "?") (\(fields.joined(separator: ", "))), \(heads)\(upcastAttention ? " (upcast)" : ""), "
            + "\(size)×\(size), VAE scaling \(vaeScalingFactor), \(textActivation.rawValue) text encoder, "
            + "tokenizer padded with \"\(tokenizerPadToken ?? "<|endoftext|>")\"" + second
    }
}

extension SchedulerConfig {
    /// The noise schedule in a few words: the β schedule, its range and `steps_offset` (absent
    /// values as the Stable Diffusion classes default them), or the EDM classes' sigma range.
    public var noiseScheduleSummary: [String] {
        className?.hasPrefix("EDM") == true
            ? ["\(sigmaSchedule?.rawValue ?? "karras") σ \(sigmaMax ?? 80)→\(sigmaMin ?? 0.002) (ρ \(rho ?? 7))", "σ_data \(sigmaData ?? 0.5)"]
            : ["\(betaSchedule?.rawValue ?? "linear") β \(betaStart ?? 0.0001)→\(betaEnd ?? 0.02)", "steps_offset \(stepsOffset ?? 0)"]
    }

    /// playground-v2.5-1024px-aesthetic's `scheduler_config.json`: EDM DPM-Solver++ (order 2,
    /// midpoint, Karras sigmas 80 → 0.002 with ρ 7, σ_data 0.5, epsilon, ending at 0).
    static var playground: SchedulerConfig {
        var s = SchedulerConfig()
        s.className = "EDMDPMSolverMultistepScheduler"
        s.numTrainTimesteps = 1000
        (s.sigmaMin, s.sigmaMax, s.sigmaData, s.rho, s.sigmaSchedule) = (0.002, 80, 0.5, 7, .karras)
        s.predictionType = "epsilon"
        (s.solverOrder, s.algorithmType, s.solverType) = (2, .dpmsolverPlusPlus, .midpoint)
        (s.lowerOrderFinal, s.eulerAtFinal, s.finalSigmasType, s.thresholding) = (true, false, .zero, false)
        return s
    }

    /// stable-diffusion-xl-base-1.0's `scheduler_config.json`: Euler, `leading` spacing.
    static var sdxlBase: SchedulerConfig {
        var s = stableDiffusion(className: "EulerDiscreteScheduler", prediction: "epsilon")
        s.timestepSpacing = "leading"
        s.interpolationType = .linear
        s.useKarrasSigmas = false
        return s
    }

    /// The `scheduler_config.json` Stable Diffusion 1.x and 2.x repositories ship (scaled-linear
    /// betas 0.00085→0.012 over 1000 steps, `steps_offset` 1, `skip_prk_steps`, no clipping, ᾱ₀
    /// not set to one), with their class and prediction type.
    static func stableDiffusion(className: String, prediction: String?) -> SchedulerConfig {
        var s = SchedulerConfig()
        s.className = className
        s.numTrainTimesteps = 1000
        s.betaStart = 0.00085
        s.betaEnd = 0.012
        s.betaSchedule = .scaledLinear
        s.setAlphaToOne = false
        s.skipPrkSteps = true
        s.stepsOffset = 1
        s.clipSample = false
        s.predictionType = prediction
        return s
    }
}
