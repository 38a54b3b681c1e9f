import Foundation

/// UniPC (Zhao et al. 2023), diffusers' `UniPCMultistepScheduler`: a multistep predictor (UniP) on
/// the data prediction, and after every step but the first a corrector (UniC) that reuses the next
/// step's model output, so the correction costs no extra evaluation. B(h) = e^h − 1 ("bh2", the
/// default) or h ("bh1"); order 2 by default, lowered on the first steps and, with
/// `lower_order_final`, on the last ones; on the grid's sigmas, Karras' or exponential ones.
public struct UniPCMultistepScheduler: Scheduler {
    public let timesteps: [Float]
    public let sigmas: [Float]
    public var initNoiseSigma: Float { 1 }

    let config: ResolvedSchedulerConfig
    let schedule: NoiseSchedule
    let solverOrder: Int
    let bh1: Bool
    let predictX0: Bool
    let lowerOrderFinal: Bool
    let disableCorrector: Set<Int>
    /// The last `solverOrder` converted model outputs, oldest first.
    private var outputs: [[Float]] = []
    private var lastSample: [Float]?
    private var lowerOrderCount = 0
    private var thisOrder = 1

    public init(config: SchedulerConfig = SchedulerConfig(), steps: Int) throws {
        let resolved = try ResolvedSchedulerConfig(config, for: .unipc, steps: steps)
        let order = config.solverOrder ?? 2
        guard (1...3).contains(order) else {
            throw SchedulerError.unsupported(option: "solver_order", value: "\(order)", supported: ["1", "2", "3"])
        }
        let option = try SigmaSpacingOption(config, flowSigmas: true)
        // The last step to sigma 0 has h = ∞; three options turn that into 0 · ∞ (diffusers returns NaN there).
        if (config.finalSigmasType ?? .zero) == .zero {
            let why = "the last step, to sigma 0, has an infinite step size h"
            let fix = ", or final_sigmas_type \"sigma_min\" (diffusers returns NaN latents there)"
            if config.solverType == .bh1 {
                throw SchedulerError.invalidValue(path: nil, field: "solver_type", value: "bh1",
                                                  expected: "bh2" + fix + ": \(why), and bh1's B(h) = h multiplies it by 0")
            }
            if config.predictX0 == false {
                throw SchedulerError.invalidValue(path: nil, field: "predict_x0", value: "false",
                                                  expected: "true" + fix + ": \(why), and the noise form multiplies e^h − 1 by σ = 0")
            }
            if config.lowerOrderFinal == false && order > 1 && steps > 1 {
                throw SchedulerError.invalidValue(path: nil, field: "lower_order_final", value: "false",
                                                  expected: "true" + fix + ": \(why), and a higher-order last step divides by r = 0")
            }
        }
        self.config = resolved
        self.schedule = try NoiseSchedule(resolved)
        solverOrder = order
        // diffusers registers DPM-Solver's solver types (midpoint, heun, logrho) as bh2.
        bh1 = config.solverType == .bh1
        predictX0 = config.predictX0 ?? true
        lowerOrderFinal = config.lowerOrderFinal ?? true
        disableCorrector = Set(config.disableCorrector ?? [])

        let spacing = DPMSolverMultistepScheduler.Spacing(option)
        let trainingSigmas = schedule.trainingSigmas
        func plan(_ k: Int) -> (timesteps: [Int], sigmas: [Double]) {
            DPMSolverMultistepScheduler.schedule(resolved, trainingSigmas: trainingSigmas, steps: k, spacing: spacing,
                                                 lastTimestep: resolved.numTrainTimesteps, roundsOnCosine: true)
        }
        if order > 1 { try refuseRepeatedSigmas("UniPC", resolved, steps: steps, plan: plan) }
        let (grid, sigmas) = plan(steps)
        // "sigma_min" ends at the last sigma of a Karras or exponential list, else at the smallest training sigma.
        let last: Float
        switch config.finalSigmasType ?? .zero {
        case .zero: last = 0
        case .sigmaMin: last = spacing == .grid ? trainingSigmas[0] : Float(sigmas[sigmas.count - 1])
        }
        self.sigmas = sigmas.map { Float($0) } + [last]
        timesteps = grid.map(Float.init)
    }

    /// λ at sigma index `step`.
    private func lambda(atStep step: Int) -> Float { logSNR(alphaSigma(sigmas[step])) }

    /// The model output as the solver's variable: the data prediction, or the noise with `predict_x0` false.
    private func converted(_ output: [Float], sample: [Float], step: Int) -> [Float] {
        let p = alphaSigma(sigmas[step])
        if predictX0 { return dataPrediction(config.predictionType, modelOutput: output, sample: sample, at: p) }
        switch config.predictionType {
        case .epsilon: return output
        case .sample: return divided(minus(sample, scaled(output, p.alpha)), p.sigma)
        case .vPrediction: return plus(scaled(output, p.alpha), scaled(sample, p.sigma))
        }
    }

    /// The scalars of one UniP or UniC update (all float32, as diffusers' 0-dim tensors).
    struct Coefficients {
        /// h·φ₁(h) = e^hh − 1 and B(h), with hh = −h when predicting x0.
        var hPhi1: Float, bh: Float
        /// The right-hand sides of the order conditions, and r_k (the earlier steps' λ relative to
        /// the start, over h) with a last entry of 1.
        var b: [Float], rks: [Float]
        var alphaT: Float, sigmaT: Float, sigmaRatio: Float, alphaRatio: Float
    }

    /// The shared part of UniP and UniC from sigma index `from` to `to`, with the earlier steps `earlier`.
    private func coefficients(from: Int, to: Int, earlier: [Int], order: Int) -> Coefficients {
        let t = alphaSigma(sigmas[to]), s0 = alphaSigma(sigmas[from])
        let lambdaS0 = logSNR(s0)
        let h = logSNR(t) - lambdaS0
        let rks = earlier.map { (lambda(atStep: $0) - lambdaS0) / h } + [1]
        let hh = predictX0 ? -h : h
        let hPhi1 = Foundation.expm1(hh)
        var hPhiK = hPhi1 / hh - 1
        var factorial: Float = 1
        let bh = bh1 ? hh : Foundation.expm1(hh)
        var b: [Float] = []
        for i in 1...order {
            b.append(hPhiK * factorial / bh)
            factorial *= Float(i + 1)
            hPhiK = hPhiK / hh - 1 / factorial
        }
        return Coefficients(hPhi1: hPhi1, bh: bh, b: b, rks: rks, alphaT: t.alpha, sigmaT: t.sigma,
                            sigmaRatio: t.sigma / s0.sigma, alphaRatio: t.alpha / s0.alpha)
    }

    /// x_t_ of both updates: the first-order step from `x` with the newest output `m0`.
    private func firstOrder(_ x: [Float], _ m0: [Float], _ c: Coefficients) -> [Float] {
        predictX0 ? minus(scaled(x, c.sigmaRatio), scaled(m0, c.alphaT * c.hPhi1))
                  : minus(scaled(x, c.alphaRatio), scaled(m0, c.sigmaT * c.hPhi1))
    }

    public mutating func step(modelOutput: [Float], sample: [Float], step: Int, noise: [Float]?) -> [Float] {
        var sample = sample
        let m = converted(modelOutput, sample: sample, step: step)
        // UniC: correct this step's sample with its own model output, before it is used.
        if step > 0, !disableCorrector.contains(step - 1), let last = lastSample, let m0 = outputs.last {
            let order = thisOrder
            let earlier = (1..<max(order, 1)).map { step - ($0 + 1) }
            let c = coefficients(from: step - 1, to: step, earlier: earlier, order: order)
            let d1s = earlier.indices.map { k in divided(minus(outputs[outputs.count - (k + 2)], m0), c.rks[k]) }
            let rhos = order == 1 ? [0.5] : Self.solve(powers(c.rks, order), c.b)
            var correction = scaled(minus(m, m0), rhos[rhos.count - 1])
            for (k, d) in d1s.enumerated() { correction = plus(scaled(d, rhos[k]), correction) }
            let xt = firstOrder(last, m0, c)
            sample = minus(xt, scaled(correction, (predictX0 ? c.alphaT : c.sigmaT) * c.bh))
        }
        outputs.append(m)
        if outputs.count > solverOrder { outputs.removeFirst(outputs.count - solverOrder) }
        let cap = lowerOrderFinal ? min(solverOrder, timesteps.count - step) : solverOrder
        thisOrder = min(cap, lowerOrderCount + 1)
        lastSample = sample
        // UniP: the next sample from the newest outputs.
        let order = thisOrder
        let m0 = outputs[outputs.count - 1]
        let earlier = (1..<max(order, 1)).map { step - $0 }
        let c = coefficients(from: step, to: step + 1, earlier: earlier, order: order)
        var result = firstOrder(sample, m0, c)
        if !earlier.isEmpty {
            let d1s = earlier.indices.map { k in divided(minus(outputs[outputs.count - (k + 2)], m0), c.rks[k]) }
            let rhos = order == 2 ? [0.5] : Self.solve(powers(Array(c.rks.dropLast()), order - 1), Array(c.b.dropLast()))
            var prediction = scaled(d1s[0], rhos[0])
            for k in 1..<d1s.count { prediction = plus(prediction, scaled(d1s[k], rhos[k])) }
            result = minus(result, scaled(prediction, (predictX0 ? c.alphaT : c.sigmaT) * c.bh))
        }
        if lowerOrderCount < solverOrder { lowerOrderCount += 1 }
        return result
    }

    /// R with R[i][k] = r_k^i for i < `order` (diffusers' stacked `torch.pow(rks, i)`).
    private func powers(_ rks: [Float], _ order: Int) -> [[Float]] {
        (0..<order).map { i in rks.map { Float(pow(Double($0), Double(i))) } }
    }

    /// The solution of R ρ = b (at most 3×3) by Gaussian elimination with partial pivoting, in double.
    static func solve(_ r: [[Float]], _ b: [Float]) -> [Float] {
        let n = b.count
        var a = r.map { $0.map(Double.init) }, y = b.map(Double.init)
        for col in 0..<n {
            let pivot = (col..<n).max { abs(a[$0][col]) < abs(a[$1][col]) } ?? col
            a.swapAt(col, pivot)
            y.swapAt(col, pivot)
            for row in col + 1..<n where a[col][col] != 0 {
                let f = a[row][col] / a[col][col]
                for k in col..<n { a[row][k] -= f * a[col][k] }
                y[row] -= f * y[col]
            }
        }
        var x = [Double](repeating: 0, count: n)
        for row in (0..<n).reversed() {
            var s = y[row]
            for k in row + 1..<n { s -= a[row][k] * x[k] }
            x[row] = s / a[row][row]
        }
        return x.map { Float($0) }
    }

    public func addNoise(original: [Float], noise: [Float], step: Int) -> [Float] {
        addNoiseAtSigma(sigmas[step], original: original, noise: noise)
    }
}
