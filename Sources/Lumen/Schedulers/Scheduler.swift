/// A diffusion sampler in the manner of diffusers' schedulers, on flat float32 latents.
///
/// The caller runs, for `i` in `0..<timesteps.count`: `x = scaleModelInput(latents, step: i)`, the
/// model at `timesteps[i]`, then `latents = step(modelOutput:sample:step:noise:)`. Steps that draw
/// noise (ancestral, DDPM, LCM) take it from the caller, who draws it from its own generator in the
/// order diffusers does (`needsNoise(step:)` says when): so the random stream stays the caller's.
public protocol Scheduler: Sendable {
    /// The model timestep of each step (diffusers' `scheduler.timesteps`).
    var timesteps: [Float] { get }
    /// The standard deviation of the initial noise: initial latents are `randn * initNoiseSigma`.
    var initNoiseSigma: Float { get }
    /// The sigmas of the sigma-based schedulers (one more than `timesteps`), empty for the others.
    var sigmas: [Float] { get }
    /// Steps per model evaluation in diffusers' `get_timesteps` (1 for all schedulers here).
    var order: Int { get }

    /// The model input for step `step` (Euler-type schedulers divide by `sqrt(sigma² + 1)`).
    func scaleModelInput(_ sample: [Float], step: Int) -> [Float]

    /// Whether `step(…, step: step, …)` consumes a noise array the size of the sample.
    func needsNoise(step: Int) -> Bool

    /// One denoising step from step `step` to the next; `noise` is required when `needsNoise`.
    mutating func step(modelOutput: [Float], sample: [Float], step: Int, noise: [Float]?) -> [Float]

    /// `original` noised to the level of step `step` (diffusers' `add_noise` at `timesteps[step]`),
    /// for image-to-image.
    func addNoise(original: [Float], noise: [Float], step: Int) -> [Float]
}

extension Scheduler {
    public var order: Int { 1 }
    public var sigmas: [Float] { [] }
    public func scaleModelInput(_ sample: [Float], step: Int) -> [Float] { sample }
    public func needsNoise(step: Int) -> Bool { false }

    /// diffusers' img2img `get_timesteps`: with `strength` of `steps` steps, the index of the first step
    /// to run (0.8 of 50 runs the last 40, starting at index 10); `strength` 1 starts at 0.
    public static func firstStep(steps: Int, strength: Double, order: Int = 1) -> Int {
        let initTimestep = min(Int(Double(steps) * strength), steps)
        return max(steps - initTimestep, 0) * order
    }
}

// Element-wise helpers: each is one torch op, rounding once per element as torch does.
@inline(__always) func scaled(_ a: [Float], _ s: Float) -> [Float] { a.map { $0 * s } }
@inline(__always) func divided(_ a: [Float], _ s: Float) -> [Float] { a.map { $0 / s } }
@inline(__always) func plus(_ a: [Float], _ b: [Float]) -> [Float] { zip(a, b).map { $0 + $1 } }
@inline(__always) func minus(_ a: [Float], _ b: [Float]) -> [Float] { zip(a, b).map { $0 - $1 } }

/// Reads `ᾱ` at an integer timestep, or `final` below zero (diffusers' `final_alpha_cumprod`).
@inline(__always) func alphaProduct(_ schedule: NoiseSchedule, _ t: Int, final: Float) -> Float {
    t >= 0 ? schedule.alphasCumprod[t] : final
}

/// `sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) noise`: the forward process at integer timestep `t`.
func addNoiseDiscrete(_ schedule: NoiseSchedule, original: [Float], noise: [Float], timestep t: Int) -> [Float] {
    let a = schedule.alphasCumprod[t]
    return plus(scaled(original, a.squareRoot()), scaled(noise, (1 - a).squareRoot()))
}

/// The clean-sample estimate of the ᾱ-parameterised schedulers (DDIM, DDPM, LCM).
func predictOriginal(_ prediction: PredictionType, modelOutput: [Float], sample: [Float], alphaProduct a: Float) -> [Float] {
    let beta = 1 - a
    switch prediction {
    case .epsilon:
        return divided(minus(sample, scaled(modelOutput, beta.squareRoot())), a.squareRoot())
    case .vPrediction:
        return minus(scaled(sample, a.squareRoot()), scaled(modelOutput, beta.squareRoot()))
    case .sample:
        return modelOutput
    }
}
