// diffusers' `__init__` defaults of each scheduler class for the values all of them share, in one
// place. A value a config file leaves out takes the defaults of the class that runs, even when the
// file names another class: diffusers' `from_config` drops the values the file's own class filled
// in (`_use_default_values`), so SD 1.5's PNDM config gives DPM-Solver its own "linspace" spacing.

extension SchedulerKind {
    /// The last ᾱ of a zero-terminal-SNR schedule in the sigma-parameterised classes: close to 0
    /// without being 0, so that the first sigma is finite (diffusers' `2**-24`, f16's smallest
    /// subnormal; σ = √((1 − ᾱ) / ᾱ) ≈ 4096).
    static let zeroSNRFloor: Float = 0x1p-24

    /// The class's defaults for the shared values.
    var classDefaults: ResolvedSchedulerConfig.Defaults {
        switch self {
        case .ddim: return .init(timestepSpacing: .leading, setAlphaToOne: true, clipSample: true)
        case .pndm:
            return .init(timestepSpacing: .leading, setAlphaToOne: false, hasThresholding: false, hasZeroSNRRescale: false)
        case .ddpm: return .init(timestepSpacing: .leading, clipSample: true)
        case .deis, .dpmppSinglestep: return .init(timestepSpacing: .linspace, hasZeroSNRRescale: false)
        case .lms: return .init(timestepSpacing: .linspace, hasThresholding: false, hasZeroSNRRescale: false)
        case .heun, .kdpm2, .kdpm2Ancestral:
            return .init(betaStart: 0.00085, betaEnd: 0.012, timestepSpacing: .linspace, hasThresholding: false, hasZeroSNRRescale: false)
        case .euler, .eulerAncestral:
            return .init(timestepSpacing: .linspace, hasThresholding: false, zeroTerminalAlphaProduct: Self.zeroSNRFloor)
        case .dpmpp2m, .dpmpp2mKarras, .dpmpp2mSde, .dpmpp2mSdeKarras, .unipc:
            return .init(timestepSpacing: .linspace, zeroTerminalAlphaProduct: Self.zeroSNRFloor)
        case .edmEuler, .edmDpmpp2m:  // no beta schedule at all: these values are never read
            return .init(hasThresholding: false, hasZeroSNRRescale: false)
        case .tcd:  // LCM's values; its step never thresholds (diffusers' TCD has the option unused)
            return .init(betaStart: 0.00085, betaEnd: 0.012, betaSchedule: .scaledLinear, timestepSpacing: .leading,
                         setAlphaToOne: true, clipSample: false, hasThresholding: false)
        case .lcm:
            return .init(betaStart: 0.00085, betaEnd: 0.012, betaSchedule: .scaledLinear, timestepSpacing: .leading,
                         setAlphaToOne: true, clipSample: false)
        }
    }
}
