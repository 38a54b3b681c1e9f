import Foundation

/// DEIS (Zhang & Chen 2023), diffusers' `DEISMultistepScheduler`: the exponential integrator with
/// log-ρ polynomial extrapolation (ρ = σ/α) of the noise prediction, order 2 by default (3 allowed),
/// first order on the first step and, below 15 steps, on the last ones. Its grid ends at the
/// smallest training sigma, not at 0, as diffusers' does.
public struct DEISMultistepScheduler: Scheduler {
    public let timesteps: [Float]
    public let sigmas: [Float]
    public var initNoiseSigma: Float { 1 }

    let config: ResolvedSchedulerConfig
    let schedule: NoiseSchedule
    let solverOrder: Int
    let lowerOrderFinal: Bool
    /// The last `solverOrder` noise predictions, oldest first.
    private var outputs: [[Float]] = []
    private var lowerOrderCount = 0

    public init(config: SchedulerConfig = SchedulerConfig(), steps: Int) throws {
        let resolved = try ResolvedSchedulerConfig(config, for: .deis, steps: steps)
        let order = config.solverOrder ?? 2
        guard (1...3).contains(order) else {
            throw SchedulerError.unsupported(option: "solver_order", value: "\(order)", supported: ["1", "2", "3"])
        }
        // diffusers registers DPM-Solver's algorithm types as "deis" and every solver type as "logrho".
        if let a = config.algorithmType, ![.deis, .dpmsolver, .dpmsolverPlusPlus].contains(a) {
            throw SchedulerError.unsupported(option: "algorithm_type", value: a.rawValue, supported: ["deis", "dpmsolver", "dpmsolver++"])
        }
        let option = try SigmaSpacingOption(config, flowSigmas: true)
        self.config = resolved
        self.schedule = try NoiseSchedule(resolved)
        solverOrder = order
        lowerOrderFinal = config.lowerOrderFinal ?? true
        let spacing = DPMSolverMultistepScheduler.Spacing(option)
        let trainingSigmas = schedule.trainingSigmas
        func plan(_ k: Int) -> (timesteps: [Int], sigmas: [Double]) {
            DPMSolverMultistepScheduler.schedule(resolved, trainingSigmas: trainingSigmas, steps: k, spacing: spacing,
                                                 lastTimestep: resolved.numTrainTimesteps, roundsOnCosine: true)
        }
        if order > 1 { try refuseRepeatedSigmas("DEIS", resolved, steps: steps, plan: plan) }
        let (grid, sigmas) = plan(steps)
        // The grid ends at the smallest training sigma; Karras and exponential lists repeat their last.
        let last = spacing == .grid ? trainingSigmas[0] : Float(sigmas[sigmas.count - 1])
        self.sigmas = sigmas.map { Float($0) } + [last]
        timesteps = grid.map(Float.init)
    }

    public mutating func step(modelOutput: [Float], sample: [Float], step: Int, noise: [Float]?) -> [Float] {
        let count = timesteps.count
        let lowerFinal = step == count - 1 && lowerOrderFinal && count < 15
        let lowerSecond = step == count - 2 && lowerOrderFinal && count < 15
        // The data prediction, then the noise it implies: (x − α x0) / σ.
        let s = alphaSigma(sigmas[step])
        let x0 = dataPrediction(config.predictionType, modelOutput: modelOutput, sample: sample, at: s)
        let epsilon = divided(minus(sample, scaled(x0, s.alpha)), s.sigma)
        outputs.append(epsilon)
        if outputs.count > solverOrder { outputs.removeFirst(outputs.count - solverOrder) }
        let t = alphaSigma(sigmas[step + 1])
        let result: [Float]
        if solverOrder == 1 || lowerOrderCount < 1 || lowerFinal {
            let lambdaT = Foundation.log(t.alpha) - Foundation.log(t.sigma), lambdaS = Foundation.log(s.alpha) - Foundation.log(s.sigma)
            let h = lambdaT - lambdaS
            result = minus(scaled(sample, t.alpha / s.alpha), scaled(epsilon, t.sigma * (Foundation.exp(h) - 1)))
        } else {
            // ρ = σ/α of the target and of the earlier steps; the coefficients integrate the
            // Lagrange polynomials through the earlier log-ρ points from ρ_s0 to ρ_t.
            let rho = { (p: (alpha: Float, sigma: Float)) in p.sigma / p.alpha }
            let rhoT = rho(t), rhoS0 = rho(s), rhoS1 = rho(alphaSigma(sigmas[step - 1]))
            func l(_ v: Float) -> Float { Foundation.log(v) }
            var x = divided(sample, s.alpha)
            if solverOrder == 2 || lowerOrderCount < 2 || lowerSecond {
                func ind(_ t: Float, _ b: Float, _ c: Float) -> Float { t * (-l(c) + l(t) - 1) / (l(b) - l(c)) }
                let coef1 = ind(rhoT, rhoS0, rhoS1) - ind(rhoS0, rhoS0, rhoS1)
                let coef2 = ind(rhoT, rhoS1, rhoS0) - ind(rhoS0, rhoS1, rhoS0)
                x = plus(plus(x, scaled(outputs[outputs.count - 1], coef1)), scaled(outputs[outputs.count - 2], coef2))
            } else {
                let rhoS2 = rho(alphaSigma(sigmas[step - 2]))
                func ind(_ t: Float, _ b: Float, _ c: Float, _ d: Float) -> Float {
                    let (lt, lb, lc, ld) = (l(t), l(b), l(c), l(d))
                    // Summed left to right, as diffusers' expression is.
                    var inner: Float = lc * (ld - lt + 1) - ld * lt
                    inner += ld
                    inner += lt * lt
                    inner -= 2 * lt
                    inner += 2
                    return t * inner / ((lb - lc) * (lb - ld))
                }
                let coef1 = ind(rhoT, rhoS0, rhoS1, rhoS2) - ind(rhoS0, rhoS0, rhoS1, rhoS2)
                let coef2 = ind(rhoT, rhoS1, rhoS2, rhoS0) - ind(rhoS0, rhoS1, rhoS2, rhoS0)
                let coef3 = ind(rhoT, rhoS2, rhoS0, rhoS1) - ind(rhoS0, rhoS2, rhoS0, rhoS1)
                x = plus(plus(plus(x, scaled(outputs[outputs.count - 1], coef1)), scaled(outputs[outputs.count - 2], coef2)),
                         scaled(outputs[outputs.count - 3], coef3))
            }
            result = scaled(x, t.alpha)
        }
        if lowerOrderCount < solverOrder { lowerOrderCount += 1 }
        return result
    }

    public func addNoise(original: [Float], noise: [Float], step: Int) -> [Float] {
        addNoiseAtSigma(sigmas[step], original: original, noise: noise)
    }
}
