import Foundation

/// DPM-Solver-2 in Karras et al.'s form ("DPM2"), diffusers' `KDPM2DiscreteScheduler`: each step
/// takes an Euler step to the geometric midpoint of its two sigmas, evaluates the model there and
/// steps the whole interval with that slope: two evaluations a step. `timesteps` is the grid's
/// first timestep, then each midpoint's (fractional) timestep followed by the next grid timestep
/// (2n − 1 entries); the last step is one Euler step to sigma 0.
public struct KDPM2DiscreteScheduler: Scheduler {
    public let timesteps: [Float]
    /// diffusers' `sigmas`: [σ0, σ1, σ1, …, σn, σn, σn] with σn = 0.
    public let sigmas: [Float]
    /// diffusers' `sigmas_interpol`, the midpoints laid out as `sigmas` (entry 0 unused).
    let midpoints: [Float]
    public let initNoiseSigma: Float
    public var order: Int { 2 }

    let config: ResolvedSchedulerConfig
    /// The sample at the start of the pending step (diffusers' `sample`; nil in the first half).
    private var start: [Float]?

    public init(config: SchedulerConfig = SchedulerConfig(), steps: Int) throws {
        let resolved = try ResolvedSchedulerConfig(config, for: .kdpm2, steps: steps, supportedPredictions: [.epsilon, .vPrediction])
        let spacing = try SigmaSpacingOption(config)
        let karras = spacing == .karras, exponential = spacing == .exponential
        self.config = resolved
        let schedule = try NoiseSchedule(resolved)
        let grid = SigmaGrid(config: resolved, schedule: schedule, steps: steps, karras: karras, exponential: exponential)
        // diffusers rounds the Karras timesteps of this class (not the exponential ones).
        let gridTimesteps = karras ? grid.timesteps.map { Float(NumPy.round(Double($0))) } : grid.timesteps
        let s = grid.sigmas  // n + 1, the last 0
        // exp(lerp(log σ_i, log σ_(i−1), ½)) in float32: torch's lerp at weight ½ is end − (end − start)·½.
        var mid = [Float](repeating: .nan, count: s.count)
        for i in 1..<s.count {
            let a = Foundation.log(s[i]), b = Foundation.log(s[i - 1])
            mid[i] = Foundation.exp(b - (b - a) * 0.5)
        }
        sigmas = doubledAfterFirst(s)
        midpoints = doubledAfterFirst(mid)
        let logSigmas = SigmaSchedule.logSigmas(schedule.trainingSigmas)
        let midTimesteps = mid.map { Float(SigmaSchedule.timestep(forSigma: Double($0), logSigmas: logSigmas)) }
        var t = [gridTimesteps[0]]
        for i in 1..<gridTimesteps.count { t += [midTimesteps[i], gridTimesteps[i]] }
        timesteps = t
        initNoiseSigma = karrasInitNoiseSigma(sigmas, resolved.timestepSpacing)
    }

    public func scaleModelInput(_ sample: [Float], step: Int) -> [Float] {
        karrasScaled(sample, sigma: start == nil ? sigmas[step] : midpoints[step])
    }

    public mutating func step(modelOutput: [Float], sample: [Float], step: Int, noise: [Float]?) -> [Float] {
        if let first = start {
            // Second half: the slope at the midpoint, over the whole interval from the step's start.
            let sigma = sigmas[step - 1], mid = midpoints[step], next = sigmas[step]
            let x0 = eulerOriginal(config.predictionType, modelOutput: modelOutput, sample: sample, sigma: mid)
            let derivative = divided(minus(sample, x0), mid)
            start = nil
            return plus(first, scaled(derivative, next - sigma))
        }
        let sigma = sigmas[step], mid = midpoints[step + 1]
        let x0 = eulerOriginal(config.predictionType, modelOutput: modelOutput, sample: sample, sigma: sigma)
        let derivative = divided(minus(sample, x0), sigma)
        start = sample
        return plus(sample, scaled(derivative, mid - sigma))
    }

    public func addNoise(original: [Float], noise: [Float], step: Int) -> [Float] {
        plus(original, scaled(noise, sigmas[step]))
    }
}
