/// Euler ancestral sampling, diffusers' `EulerAncestralDiscreteScheduler`: an Euler step down to
/// `sigma_down`, then fresh noise of `sigma_up` (every step draws noise, the last one included).
public struct EulerAncestralDiscreteScheduler: Scheduler {
    public let timesteps: [Float]
    public let sigmas: [Float]
    public let initNoiseSigma: Float
    let config: ResolvedSchedulerConfig

    public init(config: SchedulerConfig = SchedulerConfig(), steps: Int) throws {
        let resolved = try ResolvedSchedulerConfig(config, for: .eulerAncestral, steps: steps)
        self.config = resolved
        let grid = SigmaGrid(config: resolved, schedule: try NoiseSchedule(resolved), steps: steps, karras: false)
        timesteps = grid.timesteps
        sigmas = grid.sigmas
        initNoiseSigma = grid.initNoiseSigma(resolved.timestepSpacing)
    }

    public func scaleModelInput(_ sample: [Float], step: Int) -> [Float] {
        karrasScaled(sample, sigma: sigmas[step])
    }

    public func needsNoise(step: Int) -> Bool { true }

    public mutating func step(modelOutput: [Float], sample: [Float], step: Int, noise: [Float]?) -> [Float] {
        let sigma = sigmas[step]
        let x0 = eulerOriginal(config.predictionType, modelOutput: modelOutput, sample: sample, sigma: sigma)
        let from = sigma, to = sigmas[step + 1]
        let up = (to * to * (from * from - to * to) / (from * from)).squareRoot()
        let down = (to * to - up * up).squareRoot()
        let derivative = divided(minus(sample, x0), sigma)
        var previous = plus(sample, scaled(derivative, down - sigma))
        guard let noise else { preconditionFailure("EulerAncestralDiscreteScheduler.step needs noise") }
        previous = plus(previous, scaled(noise, up))
        return previous
    }

    public func addNoise(original: [Float], noise: [Float], step: Int) -> [Float] {
        plus(original, scaled(noise, sigmas[step]))
    }
}
