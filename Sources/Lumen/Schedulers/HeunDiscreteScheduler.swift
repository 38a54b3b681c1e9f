/// Heun's method on the probability-flow ODE (Karras et al. 2022, algorithm 1 without churn),
/// diffusers' `HeunDiscreteScheduler`: each step but the last is an Euler step followed by a
/// correction that averages its slope with the slope at the point it reached, so every step costs
/// two model evaluations: `timesteps` holds the grid's first timestep once and every later one
/// twice (2n − 1 entries), `sigmas` likewise. The last step is a plain Euler step to sigma 0.
public struct HeunDiscreteScheduler: Scheduler {
    public let timesteps: [Float]
    public let sigmas: [Float]
    public let initNoiseSigma: Float
    public var order: Int { 2 }

    let config: ResolvedSchedulerConfig
    /// The first evaluation's slope, step and sample while the correction is pending (diffusers'
    /// `prev_derivative`, `dt`, `sample`).
    private var pending: (derivative: [Float], dt: Float, sample: [Float])?

    public init(config: SchedulerConfig = SchedulerConfig(), steps: Int) throws {
        let resolved = try ResolvedSchedulerConfig(config, for: .heun, steps: steps)
        let spacing = try SigmaSpacingOption(config)
        let karras = spacing == .karras, exponential = spacing == .exponential
        self.config = resolved
        // The class has no sigma_min/sigma_max options: Karras and exponential lists span the grid's sigmas.
        let grid = SigmaGrid(config: resolved, schedule: try NoiseSchedule(resolved), steps: steps, karras: karras, exponential: exponential)
        // [σ0, σ1, σ1, …, σ(n−1), σ(n−1), 0] and [t0, t1, t1, …, t(n−1), t(n−1)].
        sigmas = [grid.sigmas[0]] + grid.sigmas.dropFirst().dropLast().flatMap { [$0, $0] } + [0]
        timesteps = [grid.timesteps[0]] + grid.timesteps.dropFirst().flatMap { [$0, $0] }
        initNoiseSigma = karrasInitNoiseSigma(sigmas, resolved.timestepSpacing)
    }

    public func scaleModelInput(_ sample: [Float], step: Int) -> [Float] {
        karrasScaled(sample, sigma: sigmas[step])
    }

    public mutating func step(modelOutput: [Float], sample: [Float], step: Int, noise: [Float]?) -> [Float] {
        let firstHalf = pending == nil
        let sigma = firstHalf ? sigmas[step] : sigmas[step - 1]
        let next = firstHalf ? sigmas[step + 1] : sigmas[step]
        // The model saw the sample at σ on the Euler step and at the next σ on the correction.
        var x0 = eulerOriginal(config.predictionType, modelOutput: modelOutput, sample: sample, sigma: firstHalf ? sigma : next)
        if config.clipSample {
            let r = config.clipSampleRange
            x0 = x0.map { min(max($0, -r), r) }
        }
        if let (previous, dt, start) = pending {
            let slope = divided(plus(previous, divided(minus(sample, x0), next)), 2)
            pending = nil
            return plus(start, scaled(slope, dt))
        }
        let derivative = divided(minus(sample, x0), sigma)
        let dt = next - sigma
        pending = (derivative, dt, sample)
        return plus(sample, scaled(derivative, dt))
    }

    public func addNoise(original: [Float], noise: [Float], step: Int) -> [Float] {
        plus(original, scaled(noise, sigmas[step]))
    }
}
