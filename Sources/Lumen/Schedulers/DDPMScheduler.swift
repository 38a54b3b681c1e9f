/// Ancestral sampling of the original denoising diffusion model (Ho et al.), diffusers' `DDPMScheduler`
/// with fixed variances: each step but the one at timestep 0 adds noise the caller supplies.
public struct DDPMScheduler: Scheduler {
    public let timesteps: [Float]
    public var initNoiseSigma: Float { 1 }

    let config: ResolvedSchedulerConfig
    let schedule: NoiseSchedule
    let integerTimesteps: [Int]
    let largeVariance: Bool

    public init(config: SchedulerConfig = SchedulerConfig(), steps: Int) throws {
        let resolved = try ResolvedSchedulerConfig(config, for: .ddpm, steps: steps)
        let variance = config.varianceType ?? .fixedSmall
        guard variance == .fixedSmall || variance == .fixedLarge else {
            throw SchedulerError.unsupported(option: "variance_type", value: variance.rawValue,
                                             supported: [VarianceType.fixedSmall, .fixedLarge].map(\.rawValue))
        }
        self.largeVariance = variance == .fixedLarge
        self.config = resolved
        self.schedule = try NoiseSchedule(resolved)
        integerTimesteps = try resolved.discreteTimesteps(steps: steps, scheduler: "DDPM")
        timesteps = integerTimesteps.map(Float.init)
    }

    public func needsNoise(step: Int) -> Bool { integerTimesteps[step] > 0 }

    public mutating func step(modelOutput: [Float], sample: [Float], step: Int, noise: [Float]?) -> [Float] {
        let t = integerTimesteps[step]
        let prevT = step + 1 < integerTimesteps.count ? integerTimesteps[step + 1] : -1
        let a = schedule.alphasCumprod[t]
        let aPrev: Float = prevT >= 0 ? schedule.alphasCumprod[prevT] : 1
        let beta = 1 - a
        let betaPrev = 1 - aPrev
        let currentAlpha = a / aPrev
        let currentBeta = 1 - currentAlpha
        var x0 = predictOriginal(config.predictionType, modelOutput: modelOutput, sample: sample, alphaProduct: a)
        if config.clipSample {
            let r = config.clipSampleRange
            x0 = x0.map { min(max($0, -r), r) }
        }
        let x0Coefficient = aPrev.squareRoot() * currentBeta / beta
        let sampleCoefficient = currentAlpha.squareRoot() * betaPrev / beta
        var previous = plus(scaled(x0, x0Coefficient), scaled(sample, sampleCoefficient))
        if t > 0 {
            guard let noise else { preconditionFailure("DDPMScheduler.step needs noise above timestep 0") }
            var variance = max((1 - aPrev) / (1 - a) * currentBeta, 1e-20)
            if largeVariance { variance = currentBeta }
            previous = plus(previous, scaled(noise, variance.squareRoot()))
        }
        return previous
    }

    public func addNoise(original: [Float], noise: [Float], step: Int) -> [Float] {
        addNoiseDiscrete(schedule, original: original, noise: noise, timestep: integerTimesteps[step])
    }
}
