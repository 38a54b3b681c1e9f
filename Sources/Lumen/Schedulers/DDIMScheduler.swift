/// DDIM (Song et al.), diffusers' `DDIMScheduler`: deterministic with `eta` 0, as Stable Diffusion uses it.
public struct DDIMScheduler: Scheduler {
    public let timesteps: [Float]
    public var initNoiseSigma: Float { 1 }
    /// DDIM's η: 0 is deterministic; above 0 each step adds `η σ_t` noise.
    public let eta: Float

    let config: ResolvedSchedulerConfig
    let schedule: NoiseSchedule
    let integerTimesteps: [Int]
    let finalAlphaProduct: Float
    let stride: Int

    public init(config: SchedulerConfig = SchedulerConfig(), steps: Int, eta: Float = 0) throws {
        let resolved = try ResolvedSchedulerConfig(config, for: .ddim, steps: steps)
        self.config = resolved
        self.schedule = try NoiseSchedule(resolved)
        self.eta = eta
        integerTimesteps = try resolved.discreteTimesteps(steps: steps, scheduler: "DDIM")
        timesteps = integerTimesteps.map(Float.init)
        finalAlphaProduct = resolved.setAlphaToOne ? 1 : schedule.alphasCumprod[0]
        // diffusers steps back by this stride whatever the spacing.
        stride = resolved.numTrainTimesteps / steps
    }

    public func needsNoise(step: Int) -> Bool { eta > 0 }

    /// The training schedule's cumulative products ᾱ, index = training timestep.
    public var alphasCumprod: [Float] { schedule.alphasCumprod }

    public mutating func step(modelOutput: [Float], sample: [Float], step: Int, noise: [Float]?) -> [Float] {
        let t = integerTimesteps[step]
        let prevT = t - stride
        let a = schedule.alphasCumprod[t]
        let aPrev = alphaProduct(schedule, prevT, final: finalAlphaProduct)
        let beta = 1 - a
        var x0 = predictOriginal(config.predictionType, modelOutput: modelOutput, sample: sample, alphaProduct: a)
        let epsilon: [Float]
        switch config.predictionType {
        case .epsilon: epsilon = modelOutput
        case .vPrediction: epsilon = plus(scaled(modelOutput, a.squareRoot()), scaled(sample, beta.squareRoot()))
        case .sample: epsilon = divided(minus(sample, scaled(x0, a.squareRoot())), beta.squareRoot())
        }
        if config.clipSample {
            let r = config.clipSampleRange
            x0 = x0.map { min(max($0, -r), r) }
        }
        let variance = (1 - aPrev) / beta * (1 - a / aPrev)
        let stdDev = eta * variance.squareRoot()
        let direction = scaled(epsilon, (1 - aPrev - stdDev * stdDev).squareRoot())
        var previous = plus(scaled(x0, aPrev.squareRoot()), direction)
        if eta > 0, let noise {
            previous = plus(previous, scaled(noise, stdDev))
        }
        return previous
    }

    public func addNoise(original: [Float], noise: [Float], step: Int) -> [Float] {
        addNoiseDiscrete(schedule, original: original, noise: noise, timestep: integerTimesteps[step])
    }
}
