/// The closed sets of a scheduler config's string fields: every value diffusers' schedulers accept,
/// so that a misspelt value fails when the config is read, naming the field and listing the cases.
/// Which of them a Lumen scheduler computes is checked when the scheduler is made
/// (`SchedulerError.unsupported`): a config is shared by every scheduler a user may pick, and one
/// scheduler's option must not stop the others from running.

/// `beta_schedule`: how the training betas are spaced.
public enum BetaSchedule: String, Sendable, Hashable, CaseIterable, Codable {
    case linear
    case scaledLinear = "scaled_linear"
    case squaredcosCapV2 = "squaredcos_cap_v2"
    case sigmoid, laplace, exp

    public init(from decoder: Decoder) throws { self = try decodeClosedSet(decoder, what: "beta_schedule") }
}

/// `final_sigmas_type`: the sigma after the last step.
public enum FinalSigmasType: String, Sendable, Hashable, CaseIterable, Codable {
    case zero
    case sigmaMin = "sigma_min"

    public init(from decoder: Decoder) throws { self = try decodeClosedSet(decoder, what: "final_sigmas_type") }
}

/// `solver_type`: the second-order update of the multistep solvers (DPM-Solver, DEIS, UniPC).
public enum SolverType: String, Sendable, Hashable, CaseIterable, Codable {
    case midpoint, heun, logrho, bh1, bh2

    public init(from decoder: Decoder) throws { self = try decodeClosedSet(decoder, what: "solver_type") }
}

/// `algorithm_type`: what the multistep solvers predict.
public enum AlgorithmType: String, Sendable, Hashable, CaseIterable, Codable {
    case dpmsolver
    case dpmsolverPlusPlus = "dpmsolver++"
    case sdeDpmsolver = "sde-dpmsolver"
    case sdeDpmsolverPlusPlus = "sde-dpmsolver++"
    case deis
    case dataPrediction = "data_prediction"
    case noisePrediction = "noise_prediction"

    public init(from decoder: Decoder) throws { self = try decodeClosedSet(decoder, what: "algorithm_type") }
}

/// `interpolation_type`: how Euler interpolates sigmas between training timesteps.
public enum InterpolationType: String, Sendable, Hashable, CaseIterable, Codable {
    case linear
    case logLinear = "log_linear"

    public init(from decoder: Decoder) throws { self = try decodeClosedSet(decoder, what: "interpolation_type") }
}

/// `timestep_type`: discrete training timesteps, or continuous ones (v-prediction EDM-style models).
public enum TimestepType: String, Sendable, Hashable, CaseIterable, Codable {
    case discrete, continuous

    public init(from decoder: Decoder) throws { self = try decodeClosedSet(decoder, what: "timestep_type") }
}

/// `sigma_schedule`: how the EDM schedulers spread their sigmas between `sigma_max` and `sigma_min`.
public enum EDMSigmaSchedule: String, Sendable, Hashable, CaseIterable, Codable {
    case karras, exponential

    public init(from decoder: Decoder) throws { self = try decodeClosedSet(decoder, what: "sigma_schedule") }
}

/// `variance_type`: DDPM's posterior variance.
public enum VarianceType: String, Sendable, Hashable, CaseIterable, Codable {
    case fixedSmall = "fixed_small"
    case fixedSmallLog = "fixed_small_log"
    case fixedLarge = "fixed_large"
    case fixedLargeLog = "fixed_large_log"
    case learned
    case learnedRange = "learned_range"

    public init(from decoder: Decoder) throws { self = try decodeClosedSet(decoder, what: "variance_type") }
}
