import Foundation

/// Trajectory consistency distillation's sampler (Zheng et al. 2024), diffusers' `TCDScheduler`,
/// for TCD-distilled models and LoRAs: LCM's timesteps (a subset of `original_inference_steps`
/// evenly spaced training timesteps); each step predicts the clean latents and noise, moves them to
/// the earlier timestep s = ⌊(1 − γ) t_prev⌋, and with γ > 0 noises the result forward to t_prev
/// with fresh noise (not after the last step). γ is the pipeline's `eta` (0 unless the request
/// says: diffusers' pipelines pass their own `eta`, 0.0 by default, not the step's 0.3).
public struct TCDScheduler: Scheduler {
    public let timesteps: [Float]
    public var initNoiseSigma: Float { 1 }
    /// γ, the stochasticity: 0 is deterministic (s = t_prev).
    public let gamma: Float

    let config: ResolvedSchedulerConfig
    let schedule: NoiseSchedule
    let integerTimesteps: [Int]

    public init(config: SchedulerConfig = SchedulerConfig(), steps: Int, eta: Float = 0) throws {
        guard eta.isFinite, (0...1).contains(eta) else {  // diffusers asserts it
            throw SchedulerError.invalidValue(path: nil, field: "eta", value: "\(eta)", expected: "0…1 (TCD's gamma)")
        }
        let resolved = try ResolvedSchedulerConfig(config, for: .tcd, steps: steps)
        self.config = resolved
        self.schedule = try NoiseSchedule(resolved)
        self.gamma = eta
        // The same grid as LCM's (the pipelines do not pass a strength to set_timesteps).
        integerTimesteps = try LCMScheduler.consistencyTimesteps(resolved, original: config.originalInferenceSteps ?? 50, steps: steps)
        timesteps = integerTimesteps.map(Float.init)
    }

    public func needsNoise(step: Int) -> Bool { gamma > 0 && step != integerTimesteps.count - 1 }

    public mutating func step(modelOutput: [Float], sample: [Float], step: Int, noise: [Float]?) -> [Float] {
        let t = integerTimesteps[step]
        let prevT = step + 1 < integerTimesteps.count ? integerTimesteps[step + 1] : 0
        // floor((1 − γ) · t_prev) as torch computes it: a Python float times an int64 tensor, in float32.
        let s = Int((Float(1 - Double(gamma)) * Float(prevT)).rounded(.down))
        let a = schedule.alphasCumprod[t], aPrev = schedule.alphasCumprod[prevT], aS = schedule.alphasCumprod[s]
        let x0: [Float], epsilon: [Float]
        switch config.predictionType {
        case .epsilon:
            x0 = predictOriginal(.epsilon, modelOutput: modelOutput, sample: sample, alphaProduct: a)
            epsilon = modelOutput
        case .sample:
            x0 = modelOutput
            epsilon = divided(minus(sample, scaled(x0, a.squareRoot())), (1 - a).squareRoot())
        case .vPrediction:
            x0 = predictOriginal(.vPrediction, modelOutput: modelOutput, sample: sample, alphaProduct: a)
            epsilon = plus(scaled(modelOutput, a.squareRoot()), scaled(sample, (1 - a).squareRoot()))
        }
        let noised = plus(scaled(x0, aS.squareRoot()), scaled(epsilon, (1 - aS).squareRoot()))
        guard needsNoise(step: step), let noise else { return noised }
        let ratio = aPrev / aS
        return plus(scaled(noised, ratio.squareRoot()), scaled(noise, (1 - ratio).squareRoot()))
    }

    public func addNoise(original: [Float], noise: [Float], step: Int) -> [Float] {
        addNoiseDiscrete(schedule, original: original, noise: noise, timestep: integerTimesteps[step])
    }
}
