import Foundation

/// The training noise schedule (betas and their cumulative products), computed with the same float32
/// roundings as diffusers' torch code so that every scheduler starts from the same numbers.
struct NoiseSchedule: Sendable, Hashable {
    let betas: [Float]
    let alphasCumprod: [Float]

    init(_ config: ResolvedSchedulerConfig) throws {
        let n = config.numTrainTimesteps
        var betas: [Float]
        if let trained = config.trainedBetas {
            betas = trained.map { Float($0) }
        } else {
            switch config.betaSchedule {
            case .linear:
                betas = Self.torchLinspace(Float(config.betaStart), Float(config.betaEnd), n)
            case .scaledLinear:
                // torch.linspace(start**0.5, end**0.5) ** 2, squared in float32.
                betas = Self.torchLinspace(Float(config.betaStart.squareRoot()), Float(config.betaEnd.squareRoot()), n)
                    .map { $0 * $0 }
            case .squaredcosCapV2:
                betas = Self.squaredCosine(n)
            case .sigmoid, .laplace, .exp:
                throw SchedulerError.unsupported(option: "beta_schedule", value: config.betaSchedule.rawValue,
                                                 supported: ["linear", "scaled_linear", "squaredcos_cap_v2"])
            }
        }
        if config.rescaleZeroTerminalSNR { betas = Self.rescaledToZeroTerminalSNR(betas) }
        self.betas = betas
        var products = Self.cumulativeProducts(betas)
        if let last = config.zeroTerminalAlphaProduct, !products.isEmpty { products[products.count - 1] = last }
        alphasCumprod = products
    }

    /// ᾱ of `betas`: torch.cumprod on float32 accumulates in double and rounds each partial product.
    static func cumulativeProducts(_ betas: [Float]) -> [Float] {
        var product = 1.0
        return betas.map { beta in
            product *= Double(1 - beta)
            return Float(product)
        }
    }

    /// diffusers' `rescale_zero_terminal_snr` (Lin et al. 2023, algorithm 1) in float32 as torch
    /// computes it: √ᾱ shifted so that the last timestep's is 0 and scaled so that the first
    /// timestep's is unchanged, then turned back into betas (the last one is 1).
    static func rescaledToZeroTerminalSNR(_ betas: [Float]) -> [Float] {
        var roots = cumulativeProducts(betas).map { $0.squareRoot() }
        guard let first = roots.first, let last = roots.last, first != last else { return betas }
        let scale = first / (first - last)
        roots = roots.map { ($0 - last) * scale }
        let products = roots.map { $0 * $0 }
        return products.indices.map { i in 1 - (i == 0 ? products[0] : products[i] / products[i - 1]) }
    }

    /// `torch.linspace(start, end, steps, dtype=float32)` on the CPU: the first half counts up from
    /// `start`, the second down from `end`, each value one fused multiply-add (GCC contracts it).
    static func torchLinspace(_ start: Float, _ end: Float, _ steps: Int) -> [Float] {
        guard steps > 1 else { return steps == 1 ? [start] : [] }
        let step = (end - start) / Float(steps - 1)
        let halfway = steps / 2
        return (0..<steps).map { i in
            i < halfway ? start.addingProduct(step, Float(i)) : end.addingProduct(-step, Float(steps - i - 1))
        }
    }

    /// The same in float64 (`torch.linspace(…, dtype=torch.float64)`).
    static func torchLinspace64(_ start: Double, _ end: Double, _ steps: Int) -> [Double] {
        guard steps > 1 else { return steps == 1 ? [start] : [] }
        let step = (end - start) / Double(steps - 1)
        let halfway = steps / 2
        return (0..<steps).map { i in
            i < halfway ? start.addingProduct(step, Double(i)) : end.addingProduct(-step, Double(steps - i - 1))
        }
    }

    /// diffusers' `betas_for_alpha_bar` with the cosine schedule (computed in double, stored as float32).
    static func squaredCosine(_ n: Int, maxBeta: Double = 0.999) -> [Float] {
        func alphaBar(_ t: Double) -> Double {
            let c = cos((t + 0.008) / 1.008 * Double.pi / 2)
            return c * c
        }
        return (0..<n).map { i in
            let t1 = Double(i) / Double(n), t2 = Double(i + 1) / Double(n)
            return Float(min(1 - alphaBar(t2) / alphaBar(t1), maxBeta))
        }
    }

    /// The Karras/Euler sigma of every training timestep, `sqrt((1 - ᾱ) / ᾱ)` in float32, index = timestep.
    var trainingSigmas: [Float] {
        alphasCumprod.map { (((1 - $0) / $0)).squareRoot() }
    }
}

/// numpy's behaviour where the schedulers use numpy (timestep grids, interpolation), in double.
enum NumPy {
    /// `np.linspace(start, stop, num)` (endpoint included; the last value is exactly `stop`).
    static func linspace(_ start: Double, _ stop: Double, _ num: Int, endpoint: Bool = true) -> [Double] {
        guard num > 0 else { return [] }
        let div = endpoint ? num - 1 : num
        if div == 0 { return [start] }
        let step = (stop - start) / Double(div)
        var y = (0..<num).map { Double($0) * step + start }
        if endpoint && num > 1 { y[num - 1] = stop }
        return y
    }

    /// `np.arange(start, stop, step)` for float arguments.
    static func arange(_ start: Double, _ stop: Double, _ step: Double) -> [Double] {
        let count = max(Int(((stop - start) / step).rounded(.up)), 0)
        return (0..<count).map { start + Double($0) * step }
    }

    /// `np.round`: halves go to the even neighbour.
    static func round(_ x: Double) -> Double { x.rounded(.toNearestOrEven) }

    /// `np.interp(x, arange(len(fp)), fp)`.
    static func interp(_ x: Double, _ fp: [Float]) -> Double {
        let last = fp.count - 1
        if x <= 0 { return Double(fp[0]) }
        if x >= Double(last) { return Double(fp[last]) }
        let j = Int(x.rounded(.down))
        if x == Double(j) { return Double(fp[j]) }
        let slope = (Double(fp[j + 1]) - Double(fp[j])) / 1.0
        return slope * (x - Double(j)) + Double(fp[j])
    }
}

/// Conversions between sigmas and (fractional) timesteps shared by the sigma-based schedulers.
enum SigmaSchedule {
    /// diffusers' `_sigma_to_t`: the fractional timestep whose log-sigma interpolates to `sigma`.
    static func timestep(forSigma sigma: Double, logSigmas: [Double]) -> Double {
        let logSigma = Foundation.log(max(sigma, 1e-10))
        // Index of the last training log-sigma not above logSigma, clipped to leave a neighbour.
        var low = 0
        var count = 0
        for (i, value) in logSigmas.enumerated() where logSigma - value >= 0 { count += 1; low = i }
        if count == 0 { low = 0 }
        low = min(low, logSigmas.count - 2)
        let lo = logSigmas[low], hi = logSigmas[low + 1]
        var w = (lo - logSigma) / (lo - hi)
        w = min(max(w, 0), 1)
        return (1 - w) * Double(low) + w * Double(low + 1)
    }

    /// Karras et al.'s schedule: `rho = 7` interpolation between `sigmaMax` and `sigmaMin`.
    static func karras(sigmaMin: Double, sigmaMax: Double, count: Int) -> [Double] {
        let rho = 7.0
        let minInv = pow(sigmaMin, 1 / rho), maxInv = pow(sigmaMax, 1 / rho)
        return NumPy.linspace(0, 1, count).map { pow(maxInv + $0 * (minInv - maxInv), rho) }
    }

    /// The log of each training sigma as numpy gives it for a float32 array.
    static func logSigmas(_ sigmas: [Float]) -> [Double] {
        sigmas.map { Double(Foundation.log($0)) }
    }

    /// The training-step grid for `steps` inference steps (diffusers' `timestep_spacing`), as doubles,
    /// highest first.
    static func grid(_ spacing: TimestepSpacing, steps: Int, trainSteps: Int, stepsOffset: Int) -> [Double] {
        switch spacing {
        case .linspace:
            return NumPy.linspace(0, Double(trainSteps - 1), steps).reversed()
        case .leading:
            let ratio = trainSteps / steps
            return (0..<steps).reversed().map { Double($0 * ratio + stepsOffset) }
        case .trailing:
            let ratio = Double(trainSteps) / Double(steps)
            return NumPy.arange(Double(trainSteps), 0, -ratio).map { NumPy.round($0) - 1 }
        }
    }
}
