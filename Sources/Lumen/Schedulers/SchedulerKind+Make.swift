// `SchedulerKind` itself is declared with the generation request (Pipeline/GenerationRequest.swift);
// this file ties its cases to the scheduler implementations.

extension SchedulerKind {
    /// The kind diffusers' `_class_name` names, if Lumen implements it (DPM-Solver++ with Karras sigmas
    /// is `DPMSolverMultistepScheduler` with `use_karras_sigmas`).
    public init?(diffusersClassName className: String, useKarrasSigmas: Bool = false) {
        switch className {
        case "DDIMScheduler": self = .ddim
        case "PNDMScheduler": self = .pndm
        case "EulerDiscreteScheduler": self = .euler
        case "EulerAncestralDiscreteScheduler": self = .eulerAncestral
        case "DPMSolverMultistepScheduler": self = useKarrasSigmas ? .dpmpp2mKarras : .dpmpp2m
        case "LCMScheduler": self = .lcm
        case "DDPMScheduler": self = .ddpm
        default: return nil
        }
    }

    /// A scheduler of this kind for `steps` inference steps, with the shared values (betas, prediction
    /// type, spacing, offset…) from `config`, as diffusers' `XScheduler.from_config(model_config)` does;
    /// values the config lacks take the class's own defaults.
    public func make(config: SchedulerConfig = SchedulerConfig(), steps: Int) throws -> any Scheduler {
        switch self {
        case .ddim: return try DDIMScheduler(config: config, steps: steps)
        case .pndm: return try PNDMScheduler(config: config, steps: steps)
        case .euler: return try EulerDiscreteScheduler(config: config, steps: steps)
        case .eulerAncestral: return try EulerAncestralDiscreteScheduler(config: config, steps: steps)
        case .dpmpp2m:
            var c = config
            c.useKarrasSigmas = false
            return try DPMSolverMultistepScheduler(config: c, steps: steps)
        case .dpmpp2mKarras:
            var c = config
            c.useKarrasSigmas = true
            return try DPMSolverMultistepScheduler(config: c, steps: steps)
        case .lcm: return try LCMScheduler(config: config, steps: steps)
        case .ddpm: return try DDPMScheduler(config: config, steps: steps)
        }
    }
}
