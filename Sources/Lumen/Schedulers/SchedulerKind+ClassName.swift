extension SchedulerKind {
    /// The diffusers classes Lumen implements.
    public static let supportedClassNames = [
        "DDIMScheduler", "PNDMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
        "DPMSolverMultistepScheduler", "LCMScheduler", "DDPMScheduler", "UniPCMultistepScheduler", "DEISMultistepScheduler",
        "HeunDiscreteScheduler", "LMSDiscreteScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
        "DPMSolverSinglestepScheduler", "EDMEulerScheduler", "EDMDPMSolverMultistepScheduler",
        "TCDScheduler",
    ]

    /// diffusers schedulers Lumen lacks, and the one it runs in their place. The substitute solves the
    /// same ODE (or SDE) on the same noise schedule with a method of the same kind, so a folder that
    /// ships one still gives a picture of the intended quality rather than an error: the
    /// Brownian-tree SDE solver (its noise comes from torchsde's Brownian interval, not the
    /// pipeline's generator) → Euler a.
    static let substitutes: [String: SchedulerKind] = [
        "DPMSolverSDEScheduler": .eulerAncestral,
    ]

    /// The scheduler a config's `_class_name` asks for, with a one-line notice when Lumen runs
    /// another in its place (or the config names none). A name that is neither implemented nor a
    /// known diffusers scheduler throws `SchedulerError.unknownScheduler`, listing the supported ones.
    public static func resolve(className: String?, path: String?, useKarrasSigmas: Bool = false,
                               stochastic: Bool = false) throws -> (kind: SchedulerKind, notice: String?) {
        let source = path ?? "the scheduler config"
        guard let className else {
            return (.pndm, "\(source) names no _class_name: using PNDM (PLMS), Stable Diffusion 1.x's scheduler")
        }
        if let kind = SchedulerKind(diffusersClassName: className, useKarrasSigmas: useKarrasSigmas, stochastic: stochastic) {
            return (kind, nil)
        }
        if var kind = substitutes[className] {
            if kind == .dpmpp2m && useKarrasSigmas { kind = .dpmpp2mKarras }
            return (kind, "\(source) names \(className), which Lumen does not implement: using \(kind.displayName) (\(kind.rawValue)) "
                          + "instead, on the same noise schedule; --scheduler chooses another")
        }
        throw SchedulerError.unknownScheduler(name: className, path: path)
    }
}
