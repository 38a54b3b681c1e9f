import Foundation

/// What the EDM schedulers (Karras et al. 2022, diffusers' `EDMEulerScheduler` and
/// `EDMDPMSolverMultistepScheduler`, the schedulers of Playground v2.5 and CosXL) share: sigmas
/// spread between `sigma_max` and `sigma_min` with no beta schedule at all, and the paper's
/// preconditioning: the UNet sees `c_in · x` at the continuous timestep `c_noise = ¼ ln σ`, and its
/// output F becomes the denoised sample `c_skip · x + c_out · F`. Every value is float32 as torch
/// computes it (σ is a float32 tensor, the config's numbers Python floats).
struct EDMFormulation: Sendable {
    let sigmaMin: Double, sigmaMax: Double, sigmaData: Double, rho: Double
    let schedule: EDMSigmaSchedule
    let prediction: PredictionType
    let finalSigmasType: FinalSigmasType

    init(_ config: SchedulerConfig, className: String) throws {
        try config.checkRanges(path: nil)
        sigmaMin = config.sigmaMin ?? 0.002
        sigmaMax = config.sigmaMax ?? 80
        sigmaData = config.sigmaData ?? 0.5
        rho = config.rho ?? 7
        schedule = config.sigmaSchedule ?? .karras
        finalSigmasType = config.finalSigmasType ?? .zero
        // diffusers' precondition_outputs has these two; "sample" fails there.
        let name = config.predictionType ?? "epsilon"
        guard let p = PredictionType(rawValue: name), p != .sample else {
            throw SchedulerError.unsupported(option: "prediction_type", value: name, supported: ["epsilon", "v_prediction"])
        }
        prediction = p
        if config.thresholding == true && className == "EDMDPMSolverMultistepScheduler" {
            throw SchedulerError.unsupported(option: "thresholding", value: "true", supported: ["false"])
        }
    }

    /// `init_noise_sigma`: `sqrt(sigma_max² + 1)` in double, whatever the first sigma is.
    var initNoiseSigma: Float { Float((sigmaMax * sigmaMax + 1).squareRoot()) }

    /// Karras' schedule over `ramp` (0 → σ_max, 1 → σ_min): `(max^(1/ρ) + ramp (min^(1/ρ) − max^(1/ρ)))^ρ`.
    func karras(_ ramp: [Double]) -> [Double] {
        let minInv = pow(sigmaMin, 1 / rho), maxInv = pow(sigmaMax, 1 / rho)
        return ramp.map { pow(maxInv + $0 * (minInv - maxInv), rho) }
    }

    /// The same in float32 (the ramp a float32 tensor, the constants Python floats).
    func karras(_ ramp: [Float]) -> [Float] {
        let minInv = pow(sigmaMin, 1 / rho), maxInv = pow(sigmaMax, 1 / rho)
        let span = Float(minInv - maxInv), start = Float(maxInv), exponent = Float(rho)
        return ramp.map { powf(start + $0 * span, exponent) }
    }

    /// The exponential schedule: `torch.linspace(ln σ_min, ln σ_max, count)` (float32) exponentiated
    /// and reversed. Both classes compute it so, whatever their ramp's precision.
    func exponential(count: Int) -> [Float] {
        NoiseSchedule.torchLinspace(Float(Foundation.log(sigmaMin)), Float(Foundation.log(sigmaMax)), count)
            .map { Foundation.exp($0) }.reversed()
    }

    /// `c_noise = 0.25 · ln σ`: the timestep the UNet sees.
    func timestep(_ sigma: Float) -> Float { 0.25 * Foundation.log(sigma) }

    /// `c_in = 1 / sqrt(σ² + σ_data²)`.
    func inputScale(_ sigma: Float) -> Float { 1 / (sigma * sigma + Float(sigmaData * sigmaData)).squareRoot() }

    /// The denoised sample `c_skip · x + c_out · F`, with `c_skip = σ_data² / (σ² + σ_data²)` and
    /// `c_out = ±σ σ_data / sqrt(σ² + σ_data²)` (negative for v-prediction).
    func denoised(modelOutput: [Float], sample: [Float], sigma: Float) -> [Float] {
        let variance = sigma * sigma + Float(sigmaData * sigmaData)
        let skip = Float(sigmaData * sigmaData) / variance
        let out = (prediction == .vPrediction ? -sigma : sigma) * Float(sigmaData) / variance.squareRoot()
        return plus(scaled(sample, skip), scaled(modelOutput, out))
    }
}

/// Euler's method in the EDM formulation, diffusers' `EDMEulerScheduler` (without churn, which
/// the pipelines never pass).
public struct EDMEulerScheduler: Scheduler {
    public let timesteps: [Float]
    public let sigmas: [Float]
    public let initNoiseSigma: Float
    let edm: EDMFormulation

    public init(config: SchedulerConfig = SchedulerConfig(), steps: Int) throws {
        guard steps >= 1 else { throw SchedulerError.invalidSteps(steps) }
        edm = try EDMFormulation(config, className: "EDMEulerScheduler")
        // The ramp is float64 here (float32 in the DPM-Solver class); the exponential schedule
        // ignores its values.
        let sigmas: [Float]
        switch edm.schedule {
        case .karras: sigmas = edm.karras(NoiseSchedule.torchLinspace64(0, 1, steps)).map { Float($0) }
        case .exponential: sigmas = edm.exponential(count: steps)
        }
        timesteps = sigmas.map(edm.timestep)
        self.sigmas = sigmas + [edm.finalSigmasType == .sigmaMin ? sigmas[sigmas.count - 1] : 0]
        initNoiseSigma = edm.initNoiseSigma
    }

    public func scaleModelInput(_ sample: [Float], step: Int) -> [Float] {
        scaled(sample, edm.inputScale(sigmas[step]))
    }

    public mutating func step(modelOutput: [Float], sample: [Float], step: Int, noise: [Float]?) -> [Float] {
        let sigma = sigmas[step]
        let x0 = edm.denoised(modelOutput: modelOutput, sample: sample, sigma: sigma)
        let derivative = divided(minus(sample, x0), sigma)
        return plus(sample, scaled(derivative, sigmas[step + 1] - sigma))
    }

    public func addNoise(original: [Float], noise: [Float], step: Int) -> [Float] {
        plus(original, scaled(noise, sigmas[step]))
    }
}

/// DPM-Solver++ multistep in the EDM formulation, diffusers' `EDMDPMSolverMultistepScheduler`
/// (Playground v2.5's scheduler): orders 1 to 3, "dpmsolver++" or "sde-dpmsolver++" (fresh noise
/// at every step), midpoint or Heun second-order updates. The inputs are preconditioned before
/// the UNet, so α = 1 and λ = −ln σ throughout.
public struct EDMDPMSolverMultistepScheduler: Scheduler {
    public let timesteps: [Float]
    public let sigmas: [Float]
    public let initNoiseSigma: Float
    let edm: EDMFormulation
    let solverOrder: Int
    let heun: Bool
    let stochastic: Bool
    let lowerOrderFinal: Bool, eulerAtFinal: Bool
    /// The data predictions of the last steps, newest last (diffusers' `model_outputs`).
    private var outputs: [[Float]] = []
    private var lowerOrderCount = 0

    public init(config: SchedulerConfig = SchedulerConfig(), steps: Int) throws {
        guard steps >= 1 else { throw SchedulerError.invalidSteps(steps) }
        edm = try EDMFormulation(config, className: "EDMDPMSolverMultistepScheduler")
        // diffusers registers "deis" as "dpmsolver++", and the other solvers' solver types as midpoint.
        let algorithm = config.algorithmType ?? .dpmsolverPlusPlus
        switch algorithm {
        case .dpmsolverPlusPlus, .deis: stochastic = false
        case .sdeDpmsolverPlusPlus: stochastic = true
        default:
            throw SchedulerError.unsupported(option: "algorithm_type", value: algorithm.rawValue, supported: ["dpmsolver++", "sde-dpmsolver++"])
        }
        let order = config.solverOrder ?? 2
        guard (1...3).contains(order) else {
            throw SchedulerError.unsupported(option: "solver_order", value: "\(order)", supported: ["1", "2", "3"])
        }
        if order == 3 && stochastic {  // diffusers' third-order update has no SDE form: it fails
            throw SchedulerError.unsupported(option: "solver_order", value: "3 with sde-dpmsolver++", supported: ["1", "2"])
        }
        solverOrder = order
        heun = config.solverType == .heun
        lowerOrderFinal = config.lowerOrderFinal ?? true
        eulerAtFinal = config.eulerAtFinal ?? false
        let sigmas: [Float]
        switch edm.schedule {
        case .karras: sigmas = edm.karras(NoiseSchedule.torchLinspace(0, 1, steps))
        case .exponential: sigmas = edm.exponential(count: steps)
        }
        if order > 1, let i = sigmas.indices.dropLast().first(where: { sigmas[$0] == sigmas[$0 + 1] }) {
            throw SchedulerError.unsupportedSteps(steps: steps, detail: "sigmas \(i) and \(i + 1) are both \(sigmas[i]), so the "
                + "higher-order update divides by a step of size 0 (diffusers returns NaN latents there)")
        }
        let final: Float = edm.finalSigmasType == .sigmaMin ? Float(edm.sigmaMin) : 0
        // "sigma_min" ends at the config's sigma_min, where both schedules already end: the last
        // step's size is 0 but for float32 rounding (λ moves by about 1e-7). Its first-order and
        // midpoint updates leave the sample as it is; the third-order and Heun updates divide by
        // that size (NaN latents in diffusers).
        let lastOrder = min(order, steps)
        let lastIsFirstOrder = eulerAtFinal || (lowerOrderFinal && steps < 15) || edm.finalSigmasType == .zero
        if !lastIsFirstOrder && (lastOrder == 3 || (lastOrder == 2 && heun)) {
            throw SchedulerError.unsupportedSteps(steps: steps, detail: "EDM DPM-Solver++ with final_sigmas_type \"sigma_min\" ends at "
                + "\(final), where its sigmas already end, and its \(lastOrder == 3 ? "third-order" : "Heun") update divides by that "
                + "step's size, about 0 (diffusers returns NaN latents there); use fewer than 15 steps, or euler_at_final, "
                + "final_sigmas_type \"zero\" or solver_order 2 with solver_type \"midpoint\" in the scheduler config")
        }
        timesteps = sigmas.map(edm.timestep)
        self.sigmas = sigmas + [final]
        initNoiseSigma = edm.initNoiseSigma
    }

    public func scaleModelInput(_ sample: [Float], step: Int) -> [Float] {
        scaled(sample, edm.inputScale(sigmas[step]))
    }

    public func needsNoise(step: Int) -> Bool { stochastic }

    /// λ = ln α − ln σ with α = 1.
    private func lambda(_ i: Int) -> Float { 0 - Foundation.log(sigmas[i]) }

    public mutating func step(modelOutput: [Float], sample: [Float], step: Int, noise: [Float]?) -> [Float] {
        let count = timesteps.count
        let lowerFinal = step == count - 1 && (eulerAtFinal || (lowerOrderFinal && count < 15) || edm.finalSigmasType == .zero)
        let lowerSecond = step == count - 2 && lowerOrderFinal && count < 15
        let x0 = edm.denoised(modelOutput: modelOutput, sample: sample, sigma: sigmas[step])
        outputs.append(x0)
        if outputs.count > solverOrder { outputs.removeFirst() }

        let (sigmaT, sigmaS0) = (sigmas[step + 1], sigmas[step])
        let lambdaT = lambda(step + 1), lambdaS0 = lambda(step)
        let h = lambdaT - lambdaS0
        var result: [Float]
        if solverOrder == 1 || lowerOrderCount < 1 || lowerFinal {
            if stochastic {
                result = plus(scaled(sample, sigmaT / sigmaS0 * Foundation.exp(-h)), scaled(x0, 1 - Foundation.exp(-2 * h)))
            } else {
                result = minus(scaled(sample, sigmaT / sigmaS0), scaled(x0, Foundation.exp(-h) - 1))
            }
        } else if solverOrder == 2 || lowerOrderCount < 2 || lowerSecond {
            let h0 = lambdaS0 - lambda(step - 1)
            let d1 = scaled(minus(x0, outputs[outputs.count - 2]), 1 / (h0 / h))
            if stochastic {
                let damp = 1 - Foundation.exp(-2 * h)
                result = plus(scaled(sample, sigmaT / sigmaS0 * Foundation.exp(-h)), scaled(x0, damp))
                result = plus(result, scaled(d1, heun ? damp / (-2 * h) + 1 : 0.5 * damp))
            } else {
                let expm = Foundation.exp(-h) - 1
                result = minus(scaled(sample, sigmaT / sigmaS0), scaled(x0, expm))
                result = heun ? plus(result, scaled(d1, expm / h + 1)) : minus(result, scaled(d1, 0.5 * expm))
            }
        } else {
            let (m0, m1, m2) = (x0, outputs[outputs.count - 2], outputs[outputs.count - 3])
            let h0 = lambdaS0 - lambda(step - 1), h1 = lambda(step - 1) - lambda(step - 2)
            let r0 = h0 / h, r1 = h1 / h
            let d10 = scaled(minus(m0, m1), 1 / r0), d11 = scaled(minus(m1, m2), 1 / r1)
            let d1 = plus(d10, scaled(minus(d10, d11), r0 / (r0 + r1)))
            let d2 = scaled(minus(d10, d11), 1 / (r0 + r1))
            let expm = Foundation.exp(-h) - 1
            result = minus(scaled(sample, sigmaT / sigmaS0), scaled(x0, expm))
            result = plus(result, scaled(d1, expm / h + 1))
            result = minus(result, scaled(d2, (expm + h) / (h * h) - 0.5))
        }
        if stochastic, let noise {
            result = plus(result, scaled(noise, sigmaT * (1 - Foundation.exp(-2 * h)).squareRoot()))
        }
        if lowerOrderCount < solverOrder { lowerOrderCount += 1 }
        return result
    }

    public func addNoise(original: [Float], noise: [Float], step: Int) -> [Float] {
        plus(original, scaled(noise, sigmas[step]))
    }
}
