// diffusers' `__init__` defaults of each scheduler class for the values all of them share, in one
// place: each scheduler resolves its config with its own class's defaults, and a config file is
// completed with the defaults of the class it names (what `pipe.scheduler.config` holds in diffusers).

extension SchedulerKind {
    /// The class's defaults for the shared values.
    var classDefaults: ResolvedSchedulerConfig.Defaults {
        switch self {
        case .ddim: return .init(timestepSpacing: .leading, setAlphaToOne: true, clipSample: true)
        case .pndm: return .init(timestepSpacing: .leading, setAlphaToOne: false)
        case .ddpm: return .init(timestepSpacing: .leading, clipSample: true)
        case .euler, .eulerAncestral, .dpmpp2m, .dpmpp2mKarras: return .init(timestepSpacing: .linspace)
        case .lcm:
            return .init(betaStart: 0.00085, betaEnd: 0.012, betaSchedule: "scaled_linear", timestepSpacing: .leading,
                         setAlphaToOne: true, clipSample: false)
        }
    }

    /// Whether the class's `__init__` takes `set_alpha_to_one` / `clip_sample` (and `clip_sample_range`).
    private var takesAlphaToOne: Bool { [.ddim, .pndm, .lcm].contains(self) }
    private var takesClipSample: Bool { [.ddim, .ddpm, .lcm].contains(self) }

    /// `config` as an instance of this class holds it: every shared value the file leaves out
    /// set to this class's default.
    func completing(_ config: SchedulerConfig) -> SchedulerConfig {
        let d = classDefaults
        var c = config
        c.numTrainTimesteps = c.numTrainTimesteps ?? 1000
        if c.trainedBetas == nil {
            c.betaStart = c.betaStart ?? d.betaStart
            c.betaEnd = c.betaEnd ?? d.betaEnd
            c.betaSchedule = c.betaSchedule ?? d.betaSchedule
        }
        c.predictionType = c.predictionType ?? PredictionType.epsilon.rawValue
        c.timestepSpacing = c.timestepSpacing ?? d.timestepSpacing.rawValue
        c.stepsOffset = c.stepsOffset ?? 0
        if takesAlphaToOne { c.setAlphaToOne = c.setAlphaToOne ?? d.setAlphaToOne }
        if takesClipSample {
            c.clipSample = c.clipSample ?? d.clipSample
            c.clipSampleRange = c.clipSampleRange ?? 1
        }
        return c
    }
}

extension SchedulerConfig {
    /// This config as diffusers holds it once the class it names has loaded it
    /// (`pipe.scheduler.config`): the shared values the file leaves out take that class's defaults.
    /// `OtherScheduler.from_config(pipe.scheduler.config)` passes them on, so a model whose file
    /// leaves out `timestep_spacing` (Stable Diffusion 1.5's, written by diffusers 0.6) keeps
    /// PNDM's "leading" when another scheduler is chosen, as in diffusers. Unknown classes are
    /// returned as they are.
    public var completedWithItsClassDefaults: SchedulerConfig {
        guard let name = className, let kind = SchedulerKind(diffusersClassName: name) else { return self }
        return kind.completing(self)
    }
}
