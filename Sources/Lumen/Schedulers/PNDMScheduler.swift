/// PNDM's pseudo linear multistep part (PLMS), diffusers' `PNDMScheduler` with `skip_prk_steps`
/// (how Stable Diffusion's own config runs it): the first step is taken twice (once to estimate the
/// slope, once to correct it), so `timesteps` has one entry more than the steps asked for.
public struct PNDMScheduler: Scheduler {
    public let timesteps: [Float]
    public var initNoiseSigma: Float { 1 }

    let config: ResolvedSchedulerConfig
    let schedule: NoiseSchedule
    let integerTimesteps: [Int]
    let finalAlphaProduct: Float
    let stride: Int
    private var ets: [[Float]] = []
    private var counter = 0
    private var currentSample: [Float]?

    public init(config: SchedulerConfig = SchedulerConfig(), steps: Int) throws {
        let resolved = try ResolvedSchedulerConfig(config, for: .pndm, steps: steps, supportedPredictions: [.epsilon, .vPrediction])
        if config.skipPrkSteps == false {
            throw SchedulerError.unsupported(option: "skip_prk_steps", value: "false", supported: ["true"])
        }
        self.config = resolved
        self.schedule = try NoiseSchedule(resolved)
        // Ascending training steps, as diffusers' `_timesteps`.
        let ascending = SigmaSchedule.grid(resolved.timestepSpacing, steps: steps,
                                           trainSteps: resolved.numTrainTimesteps,
                                           stepsOffset: resolved.stepsOffset).reversed().map { Int(NumPy.round($0)) }
        try checkGrid(ascending, steps: steps, config: resolved, scheduler: "PNDM", largestValid: { k in
            SigmaSchedule.grid(resolved.timestepSpacing, steps: k, trainSteps: resolved.numTrainTimesteps,
                               stepsOffset: resolved.stepsOffset).map { Int(NumPy.round($0)) }.max() })
        // diffusers' plms_timesteps: [t0 … t(n-2), t(n-2), t(n-1)] reversed, so the first step repeats.
        var plms = Array(ascending.dropLast())
        if ascending.count >= 2 { plms.append(ascending[ascending.count - 2]) }
        plms.append(ascending[ascending.count - 1])
        integerTimesteps = plms.reversed()
        timesteps = integerTimesteps.map(Float.init)
        finalAlphaProduct = resolved.setAlphaToOne ? 1 : schedule.alphasCumprod[0]
        stride = resolved.numTrainTimesteps / steps
    }

    public mutating func step(modelOutput: [Float], sample: [Float], step: Int, noise: [Float]?) -> [Float] {
        var timestep = integerTimesteps[step]
        var prevTimestep = timestep - stride
        if counter != 1 {
            ets = Array(ets.suffix(3))
            ets.append(modelOutput)
        } else {
            prevTimestep = timestep
            timestep += stride
        }
        var output = modelOutput
        var x = sample
        let n = ets.count
        if n == 1 && counter == 0 {
            currentSample = sample
        } else if n == 1 && counter == 1 {
            output = divided(plus(modelOutput, ets[0]), 2)
            x = currentSample ?? sample
            currentSample = nil
        } else if n == 2 {
            output = divided(minus(scaled(ets[1], 3), ets[0]), 2)
        } else if n == 3 {
            output = divided(plus(minus(scaled(ets[2], 23), scaled(ets[1], 16)), scaled(ets[0], 5)), 12)
        } else {
            let sum = minus(plus(minus(scaled(ets[3], 55), scaled(ets[2], 59)), scaled(ets[1], 37)), scaled(ets[0], 9))
            output = scaled(sum, Float(1.0 / 24.0))
        }
        counter += 1
        return previousSample(x, timestep: timestep, previous: prevTimestep, modelOutput: output)
    }

    private func previousSample(_ sample: [Float], timestep: Int, previous: Int, modelOutput: [Float]) -> [Float] {
        let a = schedule.alphasCumprod[timestep]
        let aPrev = alphaProduct(schedule, previous, final: finalAlphaProduct)
        let beta = 1 - a
        let betaPrev = 1 - aPrev
        var epsilon = modelOutput
        if config.predictionType == .vPrediction {
            epsilon = plus(scaled(modelOutput, a.squareRoot()), scaled(sample, beta.squareRoot()))
        }
        let sampleCoefficient = (aPrev / a).squareRoot()
        let denominator = a * betaPrev.squareRoot() + (a * beta * aPrev).squareRoot()
        // sample_coeff * sample - (ᾱ_prev - ᾱ_t) * eps / denom, one torch op at a time.
        let numerator = scaled(epsilon, aPrev - a)
        return minus(scaled(sample, sampleCoefficient), divided(numerator, denominator))
    }

    public func addNoise(original: [Float], noise: [Float], step: Int) -> [Float] {
        addNoiseDiscrete(schedule, original: original, noise: noise, timestep: integerTimesteps[step])
    }
}
