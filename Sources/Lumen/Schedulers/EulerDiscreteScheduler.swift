import Foundation

/// Euler's method on the probability-flow ODE (Karras et al.), diffusers' `EulerDiscreteScheduler`
/// (without churn), optionally on Karras or exponential sigmas, with discrete or continuous timesteps.
public struct EulerDiscreteScheduler: Scheduler {
    public let timesteps: [Float]
    public let sigmas: [Float]
    public let initNoiseSigma: Float
    let config: ResolvedSchedulerConfig

    public init(config: SchedulerConfig = SchedulerConfig(), steps: Int) throws {
        let resolved = try ResolvedSchedulerConfig(config, for: .euler, steps: steps)
        if let t = config.interpolationType, t != .linear {
            throw SchedulerError.unsupported(option: "interpolation_type", value: t.rawValue, supported: ["linear"])
        }
        let spacing = try SigmaSpacingOption(config)
        let karras = spacing == .karras, exponential = spacing == .exponential
        let finalType = config.finalSigmasType ?? .zero
        self.config = resolved
        let grid = SigmaGrid(config: resolved, schedule: try NoiseSchedule(resolved), steps: steps,
                             karras: karras, exponential: exponential, sigmaMin: config.sigmaMin,
                             sigmaMax: config.sigmaMax, finalSigmaIsMinimum: finalType == .sigmaMin)
        sigmas = grid.sigmas
        // diffusers' continuous timesteps (EDM-style v-prediction models): the UNet sees ¼ ln σ
        // instead of the training timestep; with other prediction types the option does nothing.
        if config.timestepType == .continuous && resolved.predictionType == .vPrediction {
            timesteps = grid.sigmas.dropLast().map { 0.25 * Foundation.log($0) }
        } else {
            timesteps = grid.timesteps
        }
        initNoiseSigma = grid.initNoiseSigma(resolved.timestepSpacing)
    }

    public func scaleModelInput(_ sample: [Float], step: Int) -> [Float] {
        karrasScaled(sample, sigma: sigmas[step])
    }

    public mutating func step(modelOutput: [Float], sample: [Float], step: Int, noise: [Float]?) -> [Float] {
        let sigma = sigmas[step]
        let x0 = eulerOriginal(config.predictionType, modelOutput: modelOutput, sample: sample, sigma: sigma)
        let derivative = divided(minus(sample, x0), sigma)
        let dt = sigmas[step + 1] - sigma
        return plus(sample, scaled(derivative, dt))
    }

    public func addNoise(original: [Float], noise: [Float], step: Int) -> [Float] {
        plus(original, scaled(noise, sigmas[step]))
    }
}

/// The clean-sample estimate of the sigma-parameterised (Karras) schedulers.
func eulerOriginal(_ prediction: PredictionType, modelOutput: [Float], sample: [Float], sigma: Float) -> [Float] {
    switch prediction {
    case .epsilon:
        return minus(sample, scaled(modelOutput, sigma))
    case .vPrediction:
        let s2 = sigma * sigma + 1
        return plus(scaled(modelOutput, -sigma / s2.squareRoot()), divided(sample, s2))
    case .sample:
        return modelOutput
    }
}
