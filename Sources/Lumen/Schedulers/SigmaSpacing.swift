import Foundation

/// How a Karras-family or multistep scheduler spreads its inference sigmas, from a config's
/// `use_karras_sigmas` / `use_exponential_sigmas`, with the options Lumen lacks refused by name.
enum SigmaSpacingOption: Equatable {
    case grid, karras, exponential

    /// `flowSigmas`: whether the class has `use_flow_sigmas` (the multistep solvers do).
    init(_ config: SchedulerConfig, flowSigmas: Bool = false) throws {
        var refused = [("use_beta_sigmas", config.useBetaSigmas)]
        if flowSigmas { refused.append(("use_flow_sigmas", config.useFlowSigmas)) }
        for (option, on) in refused where on == true {
            throw SchedulerError.unsupported(option: option, value: "true", supported: ["false"])
        }
        let karras = config.useKarrasSigmas ?? false, exponential = config.useExponentialSigmas ?? false
        if karras && exponential {  // diffusers refuses the pair too
            throw SchedulerError.unsupported(option: "use_karras_sigmas and use_exponential_sigmas", value: "both true", supported: ["one of them"])
        }
        self = karras ? .karras : exponential ? .exponential : .grid
    }
}

/// The Karras-family model input: the sample over `sqrt(σ² + 1)`.
func karrasScaled(_ sample: [Float], sigma: Float) -> [Float] {
    divided(sample, (sigma * sigma + 1).squareRoot())
}

/// diffusers' `init_noise_sigma` of the Karras-family schedulers: the largest sigma, or
/// `sqrt(max² + 1)` with "leading" spacing.
func karrasInitNoiseSigma(_ sigmas: [Float], _ spacing: TimestepSpacing) -> Float {
    let m = sigmas.max() ?? 1
    return spacing == .leading ? (m * m + 1).squareRoot() : m
}

/// The two-evaluation schedulers' layout of a per-step list: the first entry once, every later
/// one twice, and the last once more ([x0, x1, x1, …, xn, xn, xn]).
func doubledAfterFirst(_ x: [Float]) -> [Float] {
    [x[0]] + x.dropFirst().flatMap { [$0, $0] } + [x[x.count - 1]]
}

/// Refuses a grid whose consecutive sigmas repeat, which the multistep solvers' higher-order
/// terms divide by (diffusers returns NaN latents there), naming the largest count that works.
func refuseRepeatedSigmas(_ scheduler: String, _ config: ResolvedSchedulerConfig, steps: Int,
                          plan: (Int) -> (timesteps: [Int], sigmas: [Double]), suggestion: String = "") throws {
    let (grid, sigmas) = plan(steps)
    guard let repeated = DPMSolverMultistepScheduler.firstRepeatedSigma(sigmas) else { return }
    var detail = "\(scheduler) with timestep_spacing \"\(config.timestepSpacing.rawValue)\" and steps_offset \(config.stepsOffset) "
        + "puts timesteps \(grid[repeated]) and \(grid[repeated + 1]) at the same sigma, so its higher-order update divides by a "
        + "step of size 0 (diffusers returns NaN latents there)"
    if let most = (1..<steps).reversed().first(where: { DPMSolverMultistepScheduler.firstRepeatedSigma(plan($0).sigmas) == nil }) {
        detail += "; use at most \(most) steps"
    }
    throw SchedulerError.unsupportedSteps(steps: steps, detail: detail + suggestion)
}

/// `(α_t, σ_t)` of a Karras sigma σ (variance-preserving form): `1/sqrt(σ² + 1)` and `σ · α_t`,
/// in float32 as diffusers' `_sigma_to_alpha_sigma_t`.
func alphaSigma(_ sigma: Float) -> (alpha: Float, sigma: Float) {
    let alpha = 1 / (sigma * sigma + 1).squareRoot()
    return (alpha, sigma * alpha)
}

/// λ = log α_t − log σ_t, the log signal-to-noise ratio the DPM-Solver family steps in.
func logSNR(_ p: (alpha: Float, sigma: Float)) -> Float { Foundation.log(p.alpha) - Foundation.log(p.sigma) }

/// The data prediction x0 of the model output at `p` (diffusers' `convert_model_output` with
/// `dpmsolver++` / `predict_x0`).
func dataPrediction(_ prediction: PredictionType, modelOutput: [Float], sample: [Float], at p: (alpha: Float, sigma: Float)) -> [Float] {
    switch prediction {
    case .epsilon: return divided(minus(sample, scaled(modelOutput, p.sigma)), p.alpha)
    case .vPrediction: return minus(scaled(sample, p.alpha), scaled(modelOutput, p.sigma))
    case .sample: return modelOutput
    }
}

/// `α_t x0 + σ_t noise` at a Karras sigma: the forward process of the sigma-indexed multistep solvers.
func addNoiseAtSigma(_ sigma: Float, original: [Float], noise: [Float]) -> [Float] {
    let p = alphaSigma(sigma)
    return plus(scaled(original, p.alpha), scaled(noise, p.sigma))
}
