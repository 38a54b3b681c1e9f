import Foundation

/// Ancestral DPM-Solver-2 ("DPM2 a"), diffusers' `KDPM2AncestralDiscreteScheduler`: each step goes
/// from σ to the ancestral step's σ_down by way of their geometric midpoint (two evaluations), then
/// adds fresh noise of σ_up, drawn from the caller's generator after the second evaluation.
/// `timesteps`: the grid's first, then each step's midpoint timestep followed by the next grid
/// timestep (2n − 1 entries); the last step is one Euler step to sigma 0.
public struct KDPM2AncestralDiscreteScheduler: Scheduler {
    public let timesteps: [Float]
    /// diffusers' `sigmas`, `sigmas_interpol`, `sigmas_up` and `sigmas_down`: [x0, x1, x1, …, xn, xn, xn].
    public let sigmas: [Float]
    let midpoints: [Float], ups: [Float], downs: [Float]
    public let initNoiseSigma: Float
    public var order: Int { 2 }

    let config: ResolvedSchedulerConfig
    /// The sample at the start of the pending step (diffusers' `sample`; nil in the first half).
    private var start: [Float]?

    public init(config: SchedulerConfig = SchedulerConfig(), steps: Int) throws {
        let resolved = try ResolvedSchedulerConfig(config, for: .kdpm2Ancestral, steps: steps, supportedPredictions: [.epsilon, .vPrediction])
        let spacing = try SigmaSpacingOption(config)
        let karras = spacing == .karras, exponential = spacing == .exponential
        self.config = resolved
        let schedule = try NoiseSchedule(resolved)
        let grid = SigmaGrid(config: resolved, schedule: schedule, steps: steps, karras: karras, exponential: exponential)
        let gridTimesteps = karras ? grid.timesteps.map { Float(NumPy.round(Double($0))) } : grid.timesteps
        let s = grid.sigmas  // n + 1, the last 0
        let n = s.count - 1
        var up = [Float](repeating: 0, count: s.count), down = up, mid = up
        for i in 0...n {
            let next: Float = i < n ? s[i + 1] : 0
            up[i] = (next * next * (s[i] * s[i] - next * next) / (s[i] * s[i])).squareRoot()  // NaN at i = n, unused
            down[i] = i < n ? (next * next - up[i] * up[i]).squareRoot() : 0
            // exp(lerp(log σ, log σ_down, ½)), torch's lerp at ½ being end − (end − start)·½; the last two 0.
            let a = Foundation.log(s[i]), b = Foundation.log(down[i])
            mid[i] = i >= n - 1 ? 0 : Foundation.exp(b - (b - a) * 0.5)
        }
        sigmas = doubledAfterFirst(s)
        midpoints = doubledAfterFirst(mid)
        ups = doubledAfterFirst(up)
        downs = doubledAfterFirst(down)
        let logSigmas = SigmaSchedule.logSigmas(schedule.trainingSigmas)
        var t = [gridTimesteps[0]]
        for i in 1..<gridTimesteps.count {
            t += [Float(SigmaSchedule.timestep(forSigma: Double(mid[i - 1]), logSigmas: logSigmas)), gridTimesteps[i]]
        }
        timesteps = t
        initNoiseSigma = karrasInitNoiseSigma(sigmas, resolved.timestepSpacing)
    }

    public func scaleModelInput(_ sample: [Float], step: Int) -> [Float] {
        karrasScaled(sample, sigma: start == nil ? sigmas[step] : midpoints[step - 1])
    }

    /// The second half ends with fresh noise.
    public func needsNoise(step: Int) -> Bool { start != nil }

    public mutating func step(modelOutput: [Float], sample: [Float], step: Int, noise: [Float]?) -> [Float] {
        if let first = start {
            let sigma = sigmas[step - 1], mid = midpoints[step - 1]
            let x0 = eulerOriginal(config.predictionType, modelOutput: modelOutput, sample: sample, sigma: mid)
            let derivative = divided(minus(sample, x0), mid)
            start = nil
            let moved = plus(first, scaled(derivative, downs[step - 1] - sigma))
            return noise.map { plus(moved, scaled($0, ups[step - 1])) } ?? moved
        }
        let sigma = sigmas[step], mid = midpoints[step]
        let x0 = eulerOriginal(config.predictionType, modelOutput: modelOutput, sample: sample, sigma: sigma)
        let derivative = divided(minus(sample, x0), sigma)
        start = sample
        return plus(sample, scaled(derivative, mid - sigma))
    }

    public func addNoise(original: [Float], noise: [Float], step: Int) -> [Float] {
        plus(original, scaled(noise, sigmas[step]))
    }
}
