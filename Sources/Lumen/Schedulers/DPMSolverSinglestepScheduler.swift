import Foundation

/// Single-step DPM-Solver++ (Lu et al.), diffusers' `DPMSolverSinglestepScheduler`: the steps go
/// in groups of `solver_order`; the first of a group is a first-order step to an intermediate
/// point, where the model is evaluated again, and the group's last step goes from the group's
/// start over its whole interval with both evaluations (order 2). Its grid is always "linspace"
/// (below `lambda_min_clipped`), as diffusers', whatever `timestep_spacing` says. "dpmsolver++" or
/// "sde-dpmsolver++" (fresh noise every step), order 1 or 2.
public struct DPMSolverSinglestepScheduler: Scheduler {
    public let timesteps: [Float]
    public let sigmas: [Float]
    public var initNoiseSigma: Float { 1 }

    let config: ResolvedSchedulerConfig
    let heun: Bool
    let stochastic: Bool
    /// The order of each step (diffusers' `order_list`).
    let orders: [Int]
    /// The data predictions of the last two steps, newest last (nil before a step has run).
    private var outputs: [[Float]?] = [nil, nil]
    /// The sample at the start of the current group (diffusers' `sample`).
    private var groupStart: [Float]?

    public init(config: SchedulerConfig = SchedulerConfig(), steps: Int) throws {
        var resolved = try ResolvedSchedulerConfig(config, for: .dpmppSinglestep, steps: steps)
        let algorithm = config.algorithmType ?? .dpmsolverPlusPlus
        // diffusers registers DEIS's algorithm type as dpmsolver++.
        guard [.dpmsolverPlusPlus, .sdeDpmsolverPlusPlus, .deis].contains(algorithm) else {
            throw SchedulerError.unsupported(option: "algorithm_type", value: algorithm.rawValue, supported: ["dpmsolver++", "sde-dpmsolver++"])
        }
        let order = config.solverOrder ?? 2
        guard order == 1 || order == 2 else {
            throw SchedulerError.unsupported(option: "solver_order", value: "\(order)", supported: ["1", "2"])
        }
        if let v = config.varianceType, v == .learned || v == .learnedRange {
            throw SchedulerError.unsupported(option: "variance_type", value: v.rawValue, supported: ["none"])
        }
        let option = try SigmaSpacingOption(config, flowSigmas: true)
        let spacing = DPMSolverMultistepScheduler.Spacing(option)
        let finalType = config.finalSigmasType ?? .zero
        resolved.timestepSpacing = .linspace  // set_timesteps ignores the config's spacing
        self.config = resolved
        let schedule = try NoiseSchedule(resolved)
        // diffusers registers DEIS's and UniPC's solver types as midpoint.
        heun = config.solverType == .heun
        stochastic = algorithm == .sdeDpmsolverPlusPlus
        let lastTimestep = resolved.numTrainTimesteps - DPMSolverMultistepScheduler.clippedCount(schedule, below: config.lambdaMinClipped)
        let trainingSigmas = schedule.trainingSigmas
        func plan(_ k: Int) -> (timesteps: [Int], sigmas: [Double]) {
            DPMSolverMultistepScheduler.schedule(resolved, trainingSigmas: trainingSigmas, steps: k, spacing: spacing,
                                                 lastTimestep: lastTimestep, roundsOnCosine: true)
        }
        if order == 2 { try refuseRepeatedSigmas("single-step DPM-Solver++", resolved, steps: steps, plan: plan) }
        let (grid, sigmas) = plan(steps)
        let last: Float = finalType == .sigmaMin ? trainingSigmas[0] : 0
        self.sigmas = sigmas.map { Float($0) } + [last]
        timesteps = grid.map(Float.init)
        // diffusers turns lower_order_final on for an uneven count and for a final sigma of 0.
        let lowerFinal = (config.lowerOrderFinal ?? false) || steps % order != 0 || finalType == .zero
        func pairs(_ k: Int) -> [Int] { (0..<max(k, 0)).flatMap { _ in [1, 2] } }
        var list: [Int]
        if order == 1 {
            list = Array(repeating: 1, count: steps)
        } else if lowerFinal {
            list = steps % 2 == 0 ? pairs(steps / 2 - 1) + [1, 1] : pairs(steps / 2) + [1]
        } else {
            list = pairs(steps / 2)
        }
        if finalType == .zero { list[list.count - 1] = 1 }
        orders = list
    }

    public func needsNoise(step: Int) -> Bool { stochastic }

    public mutating func step(modelOutput: [Float], sample: [Float], step: Int, noise: [Float]?) -> [Float] {
        let s0 = alphaSigma(sigmas[step])
        let x0 = dataPrediction(config.predictionType, modelOutput: modelOutput, sample: sample, at: s0)
        outputs = [outputs[1], x0]
        var order = orders[step]
        while order > 1 && outputs[2 - order] == nil { order -= 1 }  // an image-to-image start mid-group
        if order == 1 { groupStart = sample }
        let x = groupStart ?? sample
        let t = alphaSigma(sigmas[step + 1])
        // The step starts at the group's first sigma: this step's for order 1, the previous one's for 2.
        let s = order == 1 ? s0 : alphaSigma(sigmas[step - 1])
        let h = logSNR(t) - logSNR(s)
        let d0 = order == 1 ? x0 : outputs[0]!
        var result: [Float]
        let decay = Foundation.exp(-h)
        if stochastic {
            let damp = 1 - Foundation.exp(-2 * h)
            result = plus(scaled(x, t.sigma / s.sigma * decay), scaled(d0, t.alpha * damp))
        } else {
            result = minus(scaled(x, t.sigma / s.sigma), scaled(d0, t.alpha * (decay - 1)))
        }
        if order == 2 {
            let r0 = (logSNR(s0) - logSNR(s)) / h
            let d1 = scaled(minus(x0, d0), 1 / r0)
            if stochastic {
                let damp = 1 - Foundation.exp(-2 * h)
                result = plus(result, scaled(d1, heun ? t.alpha * (damp / (-2 * h) + 1) : 0.5 * (t.alpha * damp)))
            } else {
                result = heun ? plus(result, scaled(d1, t.alpha * ((decay - 1) / h + 1))) : minus(result, scaled(d1, 0.5 * (t.alpha * (decay - 1))))
            }
        }
        if stochastic, let noise { result = plus(result, scaled(noise, t.sigma * (1 - Foundation.exp(-2 * h)).squareRoot())) }
        return result
    }

    public func addNoise(original: [Float], noise: [Float], step: Int) -> [Float] {
        addNoiseAtSigma(sigmas[step], original: original, noise: noise)
    }
}
