/// Latent consistency models' multistep sampler, diffusers' `LCMScheduler`: each step predicts the clean
/// latents through the consistency boundary condition, then (except on the last step) re-noises them to
/// the next timestep with noise the caller supplies. The last step returns the denoised latents.
public struct LCMScheduler: Scheduler {
    public let timesteps: [Float]
    public var initNoiseSigma: Float { 1 }

    let config: ResolvedSchedulerConfig
    let schedule: NoiseSchedule
    let integerTimesteps: [Int]
    let finalAlphaProduct: Float
    let timestepScaling: Float

    /// `strength` below 1 keeps only the timesteps of an image-to-image run, as diffusers'
    /// `set_timesteps(…, strength:)` does for LCM.
    public init(config: SchedulerConfig = SchedulerConfig(), steps: Int, strength: Double = 1) throws {
        let resolved = try ResolvedSchedulerConfig(config, for: .lcm, steps: steps)
        self.config = resolved
        self.schedule = try NoiseSchedule(resolved)
        integerTimesteps = try Self.consistencyTimesteps(resolved, original: config.originalInferenceSteps ?? 50, steps: steps, strength: strength)
        timesteps = integerTimesteps.map(Float.init)
        finalAlphaProduct = resolved.setAlphaToOne ? 1 : schedule.alphasCumprod[0]
        timestepScaling = Float(config.timestepScaling ?? 10)
    }

    /// diffusers' LCM (and TCD) grid: `original` training timesteps k − 1, 2k − 1, … (k = n / original,
    /// the first `original · strength` of them), reversed, and `steps` of them at evenly spaced
    /// indices; refused where diffusers refuses it, in its words.
    static func consistencyTimesteps(_ resolved: ResolvedSchedulerConfig, original: Int, steps: Int, strength: Double = 1) throws -> [Int] {
        let n = resolved.numTrainTimesteps
        guard original <= n else {
            throw SchedulerError.unsupported(option: "original_inference_steps", value: "\(original)",
                                             supported: ["at most num_train_timesteps"])
        }
        let k = n / original
        let originCount = Int(Double(original) * strength)
        let origin = (1...max(originCount, 1)).map { $0 * k - 1 }.reversed().map { $0 }
        try checkStepsWithinTraining(steps, resolved)
        // diffusers' own refusals, in its words.
        guard originCount / steps >= 1 else {
            throw SchedulerError.unsupportedSteps(
                steps: steps, detail: "The combination of `original_steps x strength`: \(original) x \(strength) is smaller than "
                    + "`num_inference_steps`: \(steps). Make sure to either reduce `num_inference_steps` to a value smaller than "
                    + "\(originCount) or increase `strength` to a value higher than \(Double(steps) / Double(original)).")
        }
        guard steps <= original else {
            throw SchedulerError.unsupportedSteps(
                steps: steps, detail: "`num_inference_steps`: \(steps) cannot be larger than `original_inference_steps`: \(original) "
                    + "because the final timestep schedule will be a subset of the `original_inference_steps`-sized initial timestep schedule.")
        }
        let indices = NumPy.linspace(0, Double(origin.count), steps, endpoint: false).map { Int($0.rounded(.down)) }
        return indices.map { origin[$0] }
    }

    public func needsNoise(step: Int) -> Bool { step != integerTimesteps.count - 1 }

    public mutating func step(modelOutput: [Float], sample: [Float], step: Int, noise: [Float]?) -> [Float] {
        let t = integerTimesteps[step]
        let prevT = step + 1 < integerTimesteps.count ? integerTimesteps[step + 1] : t
        let a = schedule.alphasCumprod[t]
        let aPrev = alphaProduct(schedule, prevT, final: finalAlphaProduct)
        // Boundary-condition scalings with sigma_data 0.5.
        let scaledT = Float(t) * timestepScaling
        let cSkip = 0.25 / (scaledT * scaledT + 0.25)
        let cOut = scaledT / (scaledT * scaledT + 0.25).squareRoot()
        var x0 = predictOriginal(config.predictionType, modelOutput: modelOutput, sample: sample, alphaProduct: a)
        if config.clipSample {
            let r = config.clipSampleRange
            x0 = x0.map { min(max($0, -r), r) }
        }
        let denoised = plus(scaled(x0, cOut), scaled(sample, cSkip))
        guard needsNoise(step: step) else { return denoised }
        guard let noise else { preconditionFailure("LCMScheduler.step needs noise before the last step") }
        return plus(scaled(denoised, aPrev.squareRoot()), scaled(noise, (1 - aPrev).squareRoot()))
    }

    public func addNoise(original: [Float], noise: [Float], step: Int) -> [Float] {
        addNoiseDiscrete(schedule, original: original, noise: noise, timestep: integerTimesteps[step])
    }
}
