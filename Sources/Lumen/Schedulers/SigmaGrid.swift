import Foundation

/// The timesteps and sigmas of diffusers' Euler-type schedulers (`EulerDiscreteScheduler`,
/// `EulerAncestralDiscreteScheduler`): the spacing's grid as float32, each sigma interpolated from the
/// training sigmas in double, optionally re-spaced after Karras et al., then a final sigma of 0.
struct SigmaGrid: Sendable, Hashable {
    var timesteps: [Float]
    var sigmas: [Float]

    init(config: ResolvedSchedulerConfig, schedule: NoiseSchedule, steps: Int, karras: Bool, exponential: Bool = false,
         sigmaMin: Double? = nil, sigmaMax: Double? = nil, finalSigmaIsMinimum: Bool = false) {
        let trainingSigmas = schedule.trainingSigmas
        let grid = SigmaSchedule.grid(config.timestepSpacing, steps: steps,
                                      trainSteps: config.numTrainTimesteps, stepsOffset: config.stepsOffset)
        // numpy makes the grid float32 before interpolating.
        let grid32 = grid.map { Double(Float($0)) }
        var sigmas = grid32.map { NumPy.interp($0, trainingSigmas) }
        var timesteps = grid32
        if karras {
            let minimum = sigmaMin ?? sigmas[sigmas.count - 1]
            let maximum = sigmaMax ?? sigmas[0]
            sigmas = SigmaSchedule.karras(sigmaMin: minimum, sigmaMax: maximum, count: steps)
            let logSigmas = SigmaSchedule.logSigmas(trainingSigmas)
            timesteps = sigmas.map { SigmaSchedule.timestep(forSigma: $0, logSigmas: logSigmas) }
        } else if exponential {
            // diffusers' `_convert_to_exponential`: log-linear from the largest sigma to the smallest.
            let minimum = sigmaMin ?? sigmas[sigmas.count - 1]
            let maximum = sigmaMax ?? sigmas[0]
            sigmas = NumPy.linspace(Foundation.log(maximum), Foundation.log(minimum), steps).map { Foundation.exp($0) }
            let logSigmas = SigmaSchedule.logSigmas(trainingSigmas)
            timesteps = sigmas.map { SigmaSchedule.timestep(forSigma: $0, logSigmas: logSigmas) }
        }
        let last: Float = finalSigmaIsMinimum ? trainingSigmas[0] : 0
        self.sigmas = sigmas.map { Float($0) } + [last]
        self.timesteps = timesteps.map { Float($0) }
    }

    /// diffusers' `init_noise_sigma`: the largest sigma, or `sqrt(max² + 1)` with "leading" spacing.
    func initNoiseSigma(_ spacing: TimestepSpacing) -> Float { karrasInitNoiseSigma(sigmas, spacing) }
}
