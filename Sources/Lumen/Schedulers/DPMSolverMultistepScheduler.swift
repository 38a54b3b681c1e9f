import Foundation

/// DPM-Solver++ multistep (Lu et al.), diffusers' `DPMSolverMultistepScheduler` with
/// `algorithm_type` "dpmsolver++" ("DPM++ 2M": second order, first order on the first step and on the
/// last) or "sde-dpmsolver++" ("DPM++ 2M SDE": the same with fresh noise at every step); on the
/// timestep grid's sigmas, Karras', exponential ones or Lu's λ spacing; ending at sigma 0 or at the
/// smallest training sigma (`final_sigmas_type`).
public struct DPMSolverMultistepScheduler: Scheduler {
    public let timesteps: [Float]
    public let sigmas: [Float]
    public var initNoiseSigma: Float { 1 }

    let config: ResolvedSchedulerConfig
    let schedule: NoiseSchedule
    let solverOrder: Int
    let heun: Bool
    let stochastic: Bool
    /// Whether the last step is first order (diffusers' `lower_order_final` condition, fixed by
    /// the config and the step count).
    let lowerOrderAtEnd: Bool
    private var previousOutput: [Float]?
    private var lowerOrderCount = 0

    /// How the inference sigmas are spread (the config's `use_*` flags, at most one of them).
    enum Spacing {
        case grid, karras, exponential, lu

        /// The spacing a Karras/exponential/grid option names (Lu's λ is DPM-Solver++'s alone).
        init(_ option: SigmaSpacingOption) {
            switch option {
            case .grid: self = .grid
            case .karras: self = .karras
            case .exponential: self = .exponential
            }
        }
    }

    public init(config: SchedulerConfig = SchedulerConfig(), steps: Int) throws {
        let resolved = try ResolvedSchedulerConfig(config, for: .dpmpp2m, steps: steps)
        let algorithm = config.algorithmType ?? .dpmsolverPlusPlus
        guard algorithm == .dpmsolverPlusPlus || algorithm == .sdeDpmsolverPlusPlus else {
            throw SchedulerError.unsupported(option: "algorithm_type", value: algorithm.rawValue, supported: ["dpmsolver++", "sde-dpmsolver++"])
        }
        let order = config.solverOrder ?? 2
        guard order == 1 || order == 2 else {
            throw SchedulerError.unsupported(option: "solver_order", value: "\(order)", supported: ["1", "2"])
        }
        let solver = config.solverType ?? .midpoint
        guard solver == .midpoint || solver == .heun else {
            throw SchedulerError.unsupported(option: "solver_type", value: solver.rawValue, supported: ["midpoint", "heun"])
        }
        // diffusers refuses two of Karras, exponential and beta sigmas; with Karras and Lu's λ it takes Karras.
        let option = try SigmaSpacingOption(config, flowSigmas: true)
        let spacing: Spacing = option == .grid && config.useLuLambdas == true ? .lu : Spacing(option)
        let finalType = config.finalSigmasType ?? .zero
        self.config = resolved
        self.schedule = try NoiseSchedule(resolved)
        self.solverOrder = order
        self.heun = solver == .heun
        self.stochastic = algorithm == .sdeDpmsolverPlusPlus

        let lastTimestep = resolved.numTrainTimesteps - Self.clippedCount(schedule, below: config.lambdaMinClipped)
        let trainingSigmas = schedule.trainingSigmas
        func plan(_ k: Int) -> (timesteps: [Int], sigmas: [Double]) {
            Self.schedule(resolved, trainingSigmas: trainingSigmas, steps: k, spacing: spacing, lastTimestep: lastTimestep)
        }
        // Two equal sigmas make a step of size h = 0, and the second-order update divides by the
        // ratio of consecutive step sizes: NaN or infinite latents (in diffusers too). That happens
        // where the grid repeats a timestep (linspace rounding at 1000 steps, "leading" spacing of
        // 1000 steps) or passes the last one (np.interp holds its sigma: "leading" with
        // steps_offset 1 at 999 steps asks for timesteps 1000 and 999).
        if order == 2 { try refuseRepeatedSigmas("DPM-Solver++", resolved, steps: steps, plan: plan, suggestion: ", or dpmpp-2m-karras") }
        let (grid, sigmas) = plan(steps)
        let last: Float = finalType == .sigmaMin ? trainingSigmas[0] : 0
        self.sigmas = sigmas.map { Float($0) } + [last]
        self.timesteps = grid.map(Float.init)
        lowerOrderAtEnd = (config.eulerAtFinal ?? false) || ((config.lowerOrderFinal ?? true) && grid.count < 15) || finalType == .zero
    }

    /// diffusers' `clipped_idx`: how many training timesteps have λ = log √ᾱ − log √(1 − ᾱ) (float32)
    /// below `lambdaMin` (nil: −∞, none).
    static func clippedCount(_ schedule: NoiseSchedule, below lambdaMin: Double?) -> Int {
        guard let lambdaMin else { return 0 }
        return schedule.alphasCumprod.filter { a in
            Double(Foundation.log(a.squareRoot()) - Foundation.log((1 - a).squareRoot())) < lambdaMin
        }.count
    }

    /// diffusers' `set_timesteps`: the integer timesteps and their sigmas (without the final one).
    /// UniPC's copy of it (`roundsOnCosine`) rounds Karras timesteps on every schedule.
    static func schedule(_ resolved: ResolvedSchedulerConfig, trainingSigmas: [Float], steps: Int,
                         spacing: Spacing, lastTimestep: Int, roundsOnCosine: Bool = false) -> (timesteps: [Int], sigmas: [Double]) {
        let n = resolved.numTrainTimesteps
        var grid: [Int]
        switch resolved.timestepSpacing {
        case .linspace:
            grid = NumPy.linspace(0, Double(lastTimestep - 1), steps + 1).reversed().dropLast().map { Int(NumPy.round($0)) }
        case .leading:
            let ratio = lastTimestep / (steps + 1)
            grid = (1...steps).reversed().map { $0 * ratio + resolved.stepsOffset }
        case .trailing:
            grid = NumPy.arange(Double(lastTimestep), 0, -Double(n) / Double(steps)).map { Int(NumPy.round($0)) - 1 }
        }
        let logSigmas = SigmaSchedule.logSigmas(trainingSigmas)
        // Fractional timesteps are rounded except on the cosine schedule, where the int64 cast truncates.
        let rounds = roundsOnCosine || resolved.betaSchedule != .squaredcosCapV2
        func timesteps(_ sigmas: [Double], round: Bool) -> [Int] {
            sigmas.map { let t = SigmaSchedule.timestep(forSigma: $0, logSigmas: logSigmas); return Int(round ? NumPy.round(t) : t) }
        }
        let (smallest, largest) = (Double(trainingSigmas[0]), Double(trainingSigmas[n - 1]))
        switch spacing {
        case .grid:
            // np.interp holds the ends: "leading" with steps_offset can reach timestep n, which
            // gets the last training sigma, as in diffusers.
            return (grid, grid.map { Double(trainingSigmas[min(max($0, 0), n - 1)]) })
        case .karras:
            let sigmas = SigmaSchedule.karras(sigmaMin: smallest, sigmaMax: largest, count: steps)
            return (timesteps(sigmas, round: rounds), sigmas)
        case .exponential:
            let sigmas = NumPy.linspace(Foundation.log(largest), Foundation.log(smallest), steps).map { Foundation.exp($0) }
            return (timesteps(sigmas, round: false), sigmas)
        case .lu:
            // Lu et al.'s λ spacing as diffusers applies it: linear between the largest and the
            // smallest training log-sigma (ρ = 1), each exponentiated.
            let (high, low) = (logSigmas[n - 1], logSigmas[0])
            let sigmas = NumPy.linspace(0, 1, steps).map { Foundation.exp(high + $0 * (low - high)) }
            return (timesteps(sigmas, round: rounds), sigmas)
        }
    }

    /// The index of the first sigma equal to the next one, if any.
    static func firstRepeatedSigma(_ sigmas: [Double]) -> Int? {
        sigmas.indices.dropLast().first { Float(sigmas[$0]) == Float(sigmas[$0 + 1]) }
    }

    public func needsNoise(step: Int) -> Bool { stochastic }

    public mutating func step(modelOutput: [Float], sample: [Float], step: Int, noise: [Float]?) -> [Float] {
        let count = timesteps.count
        let lowerFinal = step == count - 1 && lowerOrderAtEnd
        // Convert to the data prediction x0.
        let s0 = alphaSigma(sigmas[step])
        let x0 = dataPrediction(config.predictionType, modelOutput: modelOutput, sample: sample, at: s0)
        let t = alphaSigma(sigmas[step + 1])
        let lambdaT = logSNR(t), lambdaS0 = logSNR(s0)
        let h = lambdaT - lambdaS0
        let expm = Foundation.exp(-h) - 1
        var result: [Float]
        let firstOrder = solverOrder == 1 || lowerOrderCount < 1 || lowerFinal
        if stochastic {
            // sde-dpmsolver++: x_t = (σ_t/σ_s · e^(−h)) x + α_t (1 − e^(−2h)) D0 [+ the D1 term] + σ_t √(1 − e^(−2h)) z
            let decay = Foundation.exp(-h), damp = 1 - Foundation.exp(-2 * h)
            result = plus(scaled(sample, t.sigma / s0.sigma * decay), scaled(x0, t.alpha * damp))
            if !firstOrder {
                let d1 = secondDifference(x0, step: step, lambdaS0: lambdaS0, h: h)
                result = plus(result, scaled(d1, heun ? t.alpha * (damp / (-2 * h) + 1) : 0.5 * (t.alpha * damp)))
            }
            if let noise { result = plus(result, scaled(noise, t.sigma * damp.squareRoot())) }
        } else {
            result = minus(scaled(sample, t.sigma / s0.sigma), scaled(x0, t.alpha * expm))
            if !firstOrder {
                let d1 = secondDifference(x0, step: step, lambdaS0: lambdaS0, h: h)
                result = heun ? plus(result, scaled(d1, t.alpha * (expm / h + 1))) : minus(result, scaled(d1, 0.5 * (t.alpha * expm)))
            }
        }
        previousOutput = x0
        if lowerOrderCount < solverOrder { lowerOrderCount += 1 }
        return result
    }

    /// D1 = (m0 − m1) / r0 with r0 = h0 / h, the second-order term's difference of the last two data predictions.
    private func secondDifference(_ x0: [Float], step: Int, lambdaS0: Float, h: Float) -> [Float] {
        let m1 = previousOutput ?? x0
        let h0 = lambdaS0 - logSNR(alphaSigma(sigmas[step - 1]))
        return scaled(minus(x0, m1), 1 / (h0 / h))
    }

    public func addNoise(original: [Float], noise: [Float], step: Int) -> [Float] {
        addNoiseAtSigma(sigmas[step], original: original, noise: noise)
    }
}
