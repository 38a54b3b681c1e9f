/// PNDM (Liu et al.), diffusers' `PNDMScheduler`. With `skip_prk_steps` (how Stable Diffusion's
/// own config runs it) only the pseudo linear multistep part (PLMS): the first step is taken twice
/// (once to estimate the slope, once to correct it), so `timesteps` has one entry more than the
/// steps asked for. Without it (the class's default) three pseudo Runge-Kutta steps of four model
/// evaluations each start the run at the last four timesteps and their midpoints (diffusers'
/// `prk_timesteps`), then PLMS continues from the fourth: `timesteps` has 9 entries more.
public struct PNDMScheduler: Scheduler {
    public let timesteps: [Float]
    public var initNoiseSigma: Float { 1 }

    let config: ResolvedSchedulerConfig
    let schedule: NoiseSchedule
    let integerTimesteps: [Int]
    /// The Runge-Kutta part's timesteps (empty with `skip_prk_steps`), the first of `integerTimesteps`.
    let prkTimesteps: [Int]
    let finalAlphaProduct: Float
    let stride: Int
    private var ets: [[Float]] = []
    private var counter = 0
    private var currentSample: [Float]?
    /// The Runge-Kutta step's weighted sum of model outputs so far (diffusers' `cur_model_output`).
    private var runningOutput: [Float]?

    public init(config: SchedulerConfig = SchedulerConfig(), steps: Int) throws {
        let resolved = try ResolvedSchedulerConfig(config, for: .pndm, steps: steps, supportedPredictions: [.epsilon, .vPrediction])
        self.config = resolved
        self.schedule = try NoiseSchedule(resolved)
        let n = resolved.numTrainTimesteps
        // Ascending training steps, as diffusers' `_timesteps`.
        func ascendingGrid(_ k: Int) -> [Int] {
            SigmaSchedule.grid(resolved.timestepSpacing, steps: k, trainSteps: n, stepsOffset: resolved.stepsOffset)
                .reversed().map { Int(NumPy.round($0)) }
        }
        let skipPRK = config.skipPrkSteps ?? false
        // The timesteps each mode asks for, the Runge-Kutta midpoints included.
        func plan(_ k: Int) -> (prk: [Int], plms: [Int]) {
            let ascending = ascendingGrid(k)
            if skipPRK {
                // diffusers' plms_timesteps: [t0 … t(n-2), t(n-2), t(n-1)] reversed, so the first step repeats.
                var plms = Array(ascending.dropLast())
                if ascending.count >= 2 { plms.append(ascending[ascending.count - 2]) }
                plms.append(ascending[ascending.count - 1])
                return ([], plms.reversed())
            }
            // prk_timesteps: the last 4 timesteps each with its midpoint (+ n/k/2), every entry but
            // the last doubled, the ends dropped, reversed; plms_timesteps: the rest, reversed.
            let half = n / k / 2
            let pairs = ascending.suffix(4).flatMap { [$0, $0 + half] }.dropLast()
            let doubled = pairs.flatMap { [$0, $0] }
            return (Array(doubled.dropFirst().dropLast().reversed()), Array(ascending.dropLast(3).reversed()))
        }
        // diffusers' Runge-Kutta start takes the last 4 timesteps (and fails with fewer).
        guard skipPRK || steps >= 4 else {
            throw SchedulerError.unsupportedSteps(steps: steps, detail: "PNDM without skip_prk_steps starts with Runge-Kutta steps over the last 4 "
                + "timesteps, so it needs at least 4 (diffusers fails with fewer); use 4 or more steps, or skip_prk_steps true in the scheduler config")
        }
        try checkGrid(ascendingGrid(steps), steps: steps, config: resolved, scheduler: "PNDM", largestValid: { ascendingGrid($0).max() })
        // The midpoints lie between grid timesteps (the last one's is dropped), so the grid's check covers them.
        let (prk, plms) = plan(steps)
        prkTimesteps = prk
        integerTimesteps = prk + plms
        timesteps = integerTimesteps.map(Float.init)
        finalAlphaProduct = resolved.setAlphaToOne ? 1 : schedule.alphasCumprod[0]
        stride = n / steps
    }

    public mutating func step(modelOutput: [Float], sample: [Float], step: Int, noise: [Float]?) -> [Float] {
        if counter < prkTimesteps.count { return rungeKuttaStep(modelOutput: modelOutput, sample: sample, timestep: integerTimesteps[step]) }
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

    /// diffusers' `step_prk`: four evaluations per step, weighted 1/6, 1/3, 1/3, 1/6, each moving
    /// from the step's first sample (to the midpoint, the midpoint, the end, the end).
    private mutating func rungeKuttaStep(modelOutput: [Float], sample: [Float], timestep: Int) -> [Float] {
        let previous = timestep - (counter % 2 == 1 ? 0 : stride / 2)
        let start = prkTimesteps[counter / 4 * 4]
        var output = modelOutput
        switch counter % 4 {
        case 0:
            runningOutput = scaled(modelOutput, Float(1.0 / 6.0))
            ets.append(modelOutput)
            currentSample = sample
        case 1, 2:
            runningOutput = plus(runningOutput ?? [Float](repeating: 0, count: modelOutput.count), scaled(modelOutput, Float(1.0 / 3.0)))
        default:
            output = plus(runningOutput ?? [Float](repeating: 0, count: modelOutput.count), scaled(modelOutput, Float(1.0 / 6.0)))
            runningOutput = nil
        }
        counter += 1
        return previousSample(currentSample ?? sample, timestep: start, previous: previous, modelOutput: output)
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
