/// Linear multistep on the probability-flow ODE (Karras et al.), diffusers' `LMSDiscreteScheduler`:
/// each step integrates the polynomial through the last (up to 4) slopes over the step's sigma
/// interval. As in diffusers, the order is capped by the step's index rather than by the slopes
/// gathered, so an image-to-image run that starts mid-schedule uses the higher order's
/// coefficients for the slopes it has.
public struct LMSDiscreteScheduler: Scheduler {
    public let timesteps: [Float]
    public let sigmas: [Float]
    public let initNoiseSigma: Float

    let config: ResolvedSchedulerConfig
    static let maxOrder = 4
    /// The slopes so far, newest last.
    private var derivatives: [[Float]] = []

    public init(config: SchedulerConfig = SchedulerConfig(), steps: Int) throws {
        let resolved = try ResolvedSchedulerConfig(config, for: .lms, steps: steps)
        let spacing = try SigmaSpacingOption(config)
        let karras = spacing == .karras, exponential = spacing == .exponential
        self.config = resolved
        let schedule = try NoiseSchedule(resolved)
        func plan(_ k: Int) -> SigmaGrid { SigmaGrid(config: resolved, schedule: schedule, steps: k, karras: karras, exponential: exponential) }
        let grid = plan(steps)
        // Two equal sigmas are one Lagrange node twice: the coefficients divide by their difference, 0
        // (NaN in diffusers too). "leading" spacing with steps_offset reaches timestep n, whose sigma
        // np.interp holds at timestep n − 1's.
        let repeated = { (g: SigmaGrid) in g.sigmas.dropLast().indices.dropLast().first { g.sigmas[$0] == g.sigmas[$0 + 1] } }
        if let i = repeated(grid) {
            var detail = "LMS with timestep_spacing \"\(resolved.timestepSpacing.rawValue)\" and steps_offset \(resolved.stepsOffset) "
                + "puts timesteps \(grid.timesteps[i]) and \(grid.timesteps[i + 1]) at the same sigma, and its coefficients divide by "
                + "their difference, 0 (diffusers returns NaN latents there)"
            if let most = (1..<steps).reversed().first(where: { repeated(plan($0)) == nil }) { detail += "; use at most \(most) steps" }
            throw SchedulerError.unsupportedSteps(steps: steps, detail: detail)
        }
        timesteps = grid.timesteps
        sigmas = grid.sigmas
        initNoiseSigma = grid.initNoiseSigma(resolved.timestepSpacing)
    }

    public func scaleModelInput(_ sample: [Float], step: Int) -> [Float] {
        karrasScaled(sample, sigma: sigmas[step])
    }

    /// diffusers' `get_lms_coefficient`: ∫ from σ_t to σ_(t+1) of the Lagrange basis polynomial of
    /// node `current` among σ_t, σ_(t−1), … (`order` nodes), exactly (4-point Gauss–Legendre
    /// integrates the degree ≤ 3 polynomial without error; diffusers' quad agrees to its tolerance).
    func coefficient(order: Int, step t: Int, current: Int) -> Double {
        func basis(_ tau: Double) -> Double {
            var product = 1.0
            for k in 0..<order where k != current {
                product *= (tau - Double(sigmas[t - k])) / (Double(sigmas[t - current]) - Double(sigmas[t - k]))
            }
            return product
        }
        let (a, b) = (Double(sigmas[t]), Double(sigmas[t + 1]))
        let nodes = [(-0.8611363115940526, 0.3478548451374538), (-0.3399810435848563, 0.6521451548625461),
                     (0.3399810435848563, 0.6521451548625461), (0.8611363115940526, 0.3478548451374538)]
        let half = (b - a) / 2, mid = (a + b) / 2
        return half * nodes.reduce(0) { $0 + $1.1 * basis(mid + half * $1.0) }
    }

    public mutating func step(modelOutput: [Float], sample: [Float], step: Int, noise: [Float]?) -> [Float] {
        let sigma = sigmas[step]
        let x0 = eulerOriginal(config.predictionType, modelOutput: modelOutput, sample: sample, sigma: sigma)
        derivatives.append(divided(minus(sample, x0), sigma))
        if derivatives.count > Self.maxOrder { derivatives.removeFirst() }
        let order = min(step + 1, Self.maxOrder)
        var sum: [Float]?
        for (current, derivative) in zip(0..<order, derivatives.reversed()) {
            let term = scaled(derivative, Float(coefficient(order: order, step: step, current: current)))
            sum = sum.map { plus($0, term) } ?? term
        }
        return plus(sample, sum!)
    }

    public func addNoise(original: [Float], noise: [Float], step: Int) -> [Float] {
        plus(original, scaled(noise, sigmas[step]))
    }
}
