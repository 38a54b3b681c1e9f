// `SchedulerKind` itself is declared with the generation request (Pipeline/GenerationRequest.swift);
// this file ties its cases to the scheduler implementations.

extension SchedulerKind {
    /// The kind diffusers' `_class_name` names, if Lumen implements it (DPM-Solver++ with Karras sigmas
    /// is `DPMSolverMultistepScheduler` with `use_karras_sigmas`).
    /// `stochastic`: the config's `algorithm_type` is "sde-dpmsolver++" (DPM++ 2M SDE).
    public init?(diffusersClassName className: String, useKarrasSigmas: Bool = false, stochastic: Bool = false) {
        switch className {
        case "DDIMScheduler": self = .ddim
        case "PNDMScheduler": self = .pndm
        case "EulerDiscreteScheduler": self = .euler
        case "EulerAncestralDiscreteScheduler": self = .eulerAncestral
        case "DPMSolverMultistepScheduler":
            self = stochastic ? (useKarrasSigmas ? .dpmpp2mSdeKarras : .dpmpp2mSde) : (useKarrasSigmas ? .dpmpp2mKarras : .dpmpp2m)
        case "UniPCMultistepScheduler": self = .unipc
        case "DEISMultistepScheduler": self = .deis
        case "HeunDiscreteScheduler": self = .heun
        case "LMSDiscreteScheduler": self = .lms
        case "KDPM2DiscreteScheduler": self = .kdpm2
        case "KDPM2AncestralDiscreteScheduler": self = .kdpm2Ancestral
        case "DPMSolverSinglestepScheduler": self = .dpmppSinglestep
        case "LCMScheduler": self = .lcm
        case "DDPMScheduler": self = .ddpm
        case "EDMEulerScheduler": self = .edmEuler
        case "EDMDPMSolverMultistepScheduler": self = .edmDpmpp2m
        case "TCDScheduler": self = .tcd
        default: return nil
        }
    }

    /// A scheduler of this kind for `steps` inference steps, with the shared values (betas, prediction
    /// type, spacing, offset…) from `config`, as diffusers' `XScheduler.from_config(model_config)` does;
    /// values the config lacks take the class's own defaults. `eta` is the pipeline's (DDIM's and
    /// TCD's; the others have none).
    public func make(config: SchedulerConfig = SchedulerConfig(), steps: Int, eta: Float = 0) throws -> any Scheduler {
        switch self {
        case .ddim: return try DDIMScheduler(config: config, steps: steps, eta: eta)
        case .pndm: return try PNDMScheduler(config: config, steps: steps)
        case .euler: return try EulerDiscreteScheduler(config: config, steps: steps)
        case .eulerAncestral: return try EulerAncestralDiscreteScheduler(config: config, steps: steps)
        case .dpmpp2m, .dpmpp2mKarras, .dpmpp2mSde, .dpmpp2mSdeKarras:
            // The kind fixes the solver's noise and sigma spacing; the config's other options stay.
            var c = config
            c.useKarrasSigmas = self == .dpmpp2mKarras || self == .dpmpp2mSdeKarras
            if c.useKarrasSigmas == true { c.useExponentialSigmas = nil; c.useLuLambdas = nil }
            let sde = self == .dpmpp2mSde || self == .dpmpp2mSdeKarras
            if sde || c.algorithmType == .sdeDpmsolverPlusPlus { c.algorithmType = sde ? .sdeDpmsolverPlusPlus : .dpmsolverPlusPlus }
            return try DPMSolverMultistepScheduler(config: c, steps: steps)
        case .unipc: return try UniPCMultistepScheduler(config: config, steps: steps)
        case .deis: return try DEISMultistepScheduler(config: config, steps: steps)
        case .heun: return try HeunDiscreteScheduler(config: config, steps: steps)
        case .lms: return try LMSDiscreteScheduler(config: config, steps: steps)
        case .kdpm2: return try KDPM2DiscreteScheduler(config: config, steps: steps)
        case .kdpm2Ancestral: return try KDPM2AncestralDiscreteScheduler(config: config, steps: steps)
        case .dpmppSinglestep: return try DPMSolverSinglestepScheduler(config: config, steps: steps)
        case .lcm: return try LCMScheduler(config: config, steps: steps)
        case .ddpm: return try DDPMScheduler(config: config, steps: steps)
        case .edmEuler: return try EDMEulerScheduler(config: config, steps: steps)
        case .edmDpmpp2m: return try EDMDPMSolverMultistepScheduler(config: config, steps: steps)
        case .tcd: return try TCDScheduler(config: config, steps: steps, eta: eta)
        }
    }
}
