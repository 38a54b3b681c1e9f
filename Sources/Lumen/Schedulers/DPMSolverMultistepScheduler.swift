import Foundation

/// DPM-Solver++ multistep (Lu et al.), diffusers' `DPMSolverMultistepScheduler` with
/// `algorithm_type="dpmsolver++"`: second order by default ("DPM++ 2M"), first order on the first step
/// and on the last (diffusers' `final_sigmas_type="zero"`), optionally on Karras sigmas.
public struct DPMSolverMultistepScheduler: Scheduler {
    public let timesteps: [Float]
    public let sigmas: [Float]
    public var initNoiseSigma: Float { 1 }

    let config: ResolvedSchedulerConfig
    let schedule: NoiseSchedule
    let solverOrder: Int
    let heun: Bool
    private var previousOutput: [Float]?
    private var lowerOrderCount = 0

    public init(config: SchedulerConfig = SchedulerConfig(), steps: Int) throws {
        let resolved = try ResolvedSchedulerConfig(config, for: .dpmpp2m, steps: steps)
        let algorithm = config.algorithmType ?? .dpmsolverPlusPlus
        guard algorithm == .dpmsolverPlusPlus else {
            throw SchedulerError.unsupported(option: "algorithm_type", value: algorithm.rawValue, supported: ["dpmsolver++"])
        }
        let order = config.solverOrder ?? 2
        guard order == 1 || order == 2 else {
            throw SchedulerError.unsupported(option: "solver_order", value: "\(order)", supported: ["1", "2"])
        }
        let solver = config.solverType ?? .midpoint
        guard solver == .midpoint || solver == .heun else {
            throw SchedulerError.unsupported(option: "solver_type", value: solver.rawValue, supported: ["midpoint", "heun"])
        }
        let finalType = config.finalSigmasType ?? .zero
        guard finalType == .zero else {
            throw SchedulerError.unsupported(option: "final_sigmas_type", value: finalType.rawValue, supported: ["zero"])
        }
        self.config = resolved
        self.schedule = try NoiseSchedule(resolved)
        self.solverOrder = order
        self.heun = solver == .heun

        let karras = config.useKarrasSigmas ?? false
        let trainingSigmas = schedule.trainingSigmas
        let (grid, sigmas) = Self.schedule(resolved, trainingSigmas: trainingSigmas, steps: steps, karras: karras)
        // Two equal sigmas make a step of size h = 0, and the second-order update divides by the
        // ratio of consecutive step sizes: NaN or infinite latents (in diffusers too). That happens
        // where the grid repeats a timestep (linspace rounding at 1000 steps, "leading" spacing of
        // 1000 steps) or passes the last one (np.interp holds its sigma: "leading" with
        // steps_offset 1 at 999 steps asks for timesteps 1000 and 999).
        if order == 2, let repeated = Self.firstRepeatedSigma(sigmas) {
            var detail = "DPM-Solver++ with timestep_spacing \"\(resolved.timestepSpacing.rawValue)\" and steps_offset \(resolved.stepsOffset) "
                + "puts timesteps \(grid[repeated]) and \(grid[repeated + 1]) at the same sigma, so the second-order step divides by a "
                + "step of size 0 (diffusers returns NaN latents there)"
            if let most = (1..<steps).reversed().first(where: {
                Self.firstRepeatedSigma(Self.schedule(resolved, trainingSigmas: trainingSigmas, steps: $0, karras: karras).sigmas) == nil
            }) {
                detail += "; use at most \(most) steps"
            }
            throw SchedulerError.unsupportedSteps(steps: steps, detail: detail + ", or dpmpp-2m-karras")
        }
        self.sigmas = sigmas.map { Float($0) } + [0]
        self.timesteps = grid.map(Float.init)
    }

    /// diffusers' `set_timesteps`: the integer timesteps and their sigmas (without the final 0).
    static func schedule(_ resolved: ResolvedSchedulerConfig, trainingSigmas: [Float], steps: Int,
                         karras: Bool) -> (timesteps: [Int], sigmas: [Double]) {
        let n = resolved.numTrainTimesteps
        // lambda_min_clipped is -inf by default, so the last timestep is the number of training steps.
        var grid: [Int]
        switch resolved.timestepSpacing {
        case .linspace:
            grid = NumPy.linspace(0, Double(n - 1), steps + 1).reversed().dropLast().map { Int(NumPy.round($0)) }
        case .leading:
            let ratio = n / (steps + 1)
            grid = (1...steps).reversed().map { $0 * ratio + resolved.stepsOffset }
        case .trailing:
            grid = NumPy.arange(Double(n), 0, -Double(n) / Double(steps)).map { Int(NumPy.round($0)) - 1 }
        }
        var sigmas: [Double]
        if karras {
            sigmas = SigmaSchedule.karras(sigmaMin: Double(trainingSigmas[0]),
                                          sigmaMax: Double(trainingSigmas[n - 1]), count: steps)
            let logSigmas = SigmaSchedule.logSigmas(trainingSigmas)
            grid = sigmas.map { Int(NumPy.round(SigmaSchedule.timestep(forSigma: $0, logSigmas: logSigmas))) }
        } else {
            // np.interp holds the ends: "leading" with steps_offset can reach timestep n, which
            // gets the last training sigma, as in diffusers.
            sigmas = grid.map { Double(trainingSigmas[min(max($0, 0), n - 1)]) }
        }
        return (grid, sigmas)
    }

    /// The index of the first sigma equal to the next one, if any.
    static func firstRepeatedSigma(_ sigmas: [Double]) -> Int? {
        sigmas.indices.dropLast().first { Float(sigmas[$0]) == Float(sigmas[$0 + 1]) }
    }

    /// `(alpha_t, sigma_t)` of a Karras sigma: `1/sqrt(σ² + 1)` and `σ · alpha_t`.
    private func alphaSigma(_ sigma: Float) -> (alpha: Float, sigma: Float) {
        let alpha = 1 / (sigma * sigma + 1).squareRoot()
        return (alpha, sigma * alpha)
    }

    private func lambda(_ p: (alpha: Float, sigma: Float)) -> Float { Foundation.log(p.alpha) - Foundation.log(p.sigma) }

    public mutating func step(modelOutput: [Float], sample: [Float], step: Int, noise: [Float]?) -> [Float] {
        let count = timesteps.count
        // diffusers drops to first order on the last step whenever the final sigma is zero (always here).
        let lowerFinal = step == count - 1
        // Convert to the data prediction x0.
        let s0 = alphaSigma(sigmas[step])
        let x0: [Float]
        switch config.predictionType {
        case .epsilon: x0 = divided(minus(sample, scaled(modelOutput, s0.sigma)), s0.alpha)
        case .vPrediction: x0 = minus(scaled(sample, s0.alpha), scaled(modelOutput, s0.sigma))
        case .sample: x0 = modelOutput
        }
        let t = alphaSigma(sigmas[step + 1])
        let lambdaT = lambda(t), lambdaS0 = lambda(s0)
        let h = lambdaT - lambdaS0
        let expm = Foundation.exp(-h) - 1
        let result: [Float]
        if solverOrder == 1 || lowerOrderCount < 1 || lowerFinal {
            result = minus(scaled(sample, t.sigma / s0.sigma), scaled(x0, t.alpha * expm))
        } else {
            let m1 = previousOutput ?? x0
            let s1 = alphaSigma(sigmas[step - 1])
            let h0 = lambdaS0 - lambda(s1)
            let r0 = h0 / h
            let d1 = scaled(minus(x0, m1), 1 / r0)
            let first = minus(scaled(sample, t.sigma / s0.sigma), scaled(x0, t.alpha * expm))
            if heun {
                result = plus(first, scaled(d1, t.alpha * (expm / h + 1)))
            } else {
                result = minus(first, scaled(d1, 0.5 * (t.alpha * expm)))
            }
        }
        previousOutput = x0
        if lowerOrderCount < solverOrder { lowerOrderCount += 1 }
        return result
    }

    public func addNoise(original: [Float], noise: [Float], step: Int) -> [Float] {
        let p = alphaSigma(sigmas[step])
        return plus(scaled(original, p.alpha), scaled(noise, p.sigma))
    }
}
