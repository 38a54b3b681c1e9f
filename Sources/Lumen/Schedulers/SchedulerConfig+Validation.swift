/// Range checks of a scheduler config, run when it is read (and again when a scheduler is built
/// from a config made in code), so that a hostile or mistyped value is a typed error naming the
/// field instead of an index trap, a NaN image or an allocation that cannot succeed.
extension SchedulerConfig {
    /// The most training timesteps a config may declare. The schedule is held as arrays of this
    /// length (and the Karras/Euler sigma lookup scans them), so 10⁹ would ask for gigabytes before the
    /// first step; every published model trains on 1000, and 100,000 keeps the arrays under a megabyte.
    public static let maxTrainTimesteps = 100_000

    /// Throws `SchedulerError.invalidValue` for the first field outside its range.
    public func checkRanges(path: String?) throws {
        func fail(_ field: String, _ value: Any, _ expected: String) -> SchedulerError {
            .invalidValue(path: path, field: field, value: "\(value)", expected: expected)
        }
        let n = numTrainTimesteps ?? 1000
        guard n >= 2, n <= Self.maxTrainTimesteps else {
            throw fail("num_train_timesteps", n, "2…\(Self.maxTrainTimesteps) (a schedule needs two timesteps; the cap bounds its memory)")
        }
        // A beta is a per-step noise variance: at 0 or below the schedule never adds noise, at 1 or
        // above 1 - β is not a probability and √ᾱ is NaN.
        for (field, value) in [("beta_start", betaStart), ("beta_end", betaEnd)] {
            if let value, !(value > 0 && value < 1) {
                throw fail(field, value, "a number in (0, 1)")
            }
        }
        if let trained = trainedBetas {
            guard trained.count == n else {
                throw fail("trained_betas", "\(trained.count) values", "num_train_timesteps (\(n)) values")
            }
            if let i = trained.firstIndex(where: { !($0 > 0 && $0 < 1) }) {
                throw fail("trained_betas[\(i)]", trained[i], "a number in (0, 1)")
            }
        }
        if let offset = stepsOffset, !(0..<n).contains(offset) {
            throw fail("steps_offset", offset, "0…\(n - 1) (a training timestep)")
        }
        if let r = clipSampleRange, !(r.isFinite && r > 0) {
            throw fail("clip_sample_range", r, "a finite number above 0")
        }
        for (field, value) in [("sigma_min", sigmaMin), ("sigma_max", sigmaMax)] {
            if let value, !(value.isFinite && value > 0) {
                throw fail(field, value, "a finite number above 0")
            }
        }
        for (field, value) in [("sigma_data", sigmaData), ("rho", rho)] {
            if let value, !(value.isFinite && value > 0) {
                throw fail(field, value, "a finite number above 0")
            }
        }
        if let original = originalInferenceSteps, !(1...n).contains(original) {
            throw fail("original_inference_steps", original, "1…num_train_timesteps (\(n))")
        }
        if let s = timestepScaling, !s.isFinite {
            throw fail("timestep_scaling", s, "a finite number")
        }
    }
}

/// Checks that every training timestep a scheduler's grid asks for exists, and refuses the step
/// count with a message that says why and what would run otherwise. diffusers fails on these grids
/// with an `IndexError` (e.g. "leading" spacing with `steps_offset` 1 at as many steps as
/// training timesteps reaches timestep 1000 of 0…999).
func checkGrid(_ timesteps: [Int], steps: Int, config: ResolvedSchedulerConfig, scheduler: String,
               largestValid: (Int) -> Int?) throws {
    let n = config.numTrainTimesteps
    guard let bad = timesteps.first(where: { !(0..<n).contains($0) }) else { return }
    var detail = "\(scheduler) with timestep_spacing \"\(config.timestepSpacing.rawValue)\" and steps_offset \(config.stepsOffset) "
        + "asks for training timestep \(bad), outside the schedule's 0…\(n - 1) (diffusers fails there with an IndexError)"
    if let most = (1..<steps).reversed().first(where: { largestValid($0).map { $0 < n } ?? false }) {
        detail += "; use at most \(most) steps"
    }
    if config.timestepSpacing == .leading { detail += ", or timestep_spacing \"trailing\" in the scheduler config" }
    throw SchedulerError.unsupportedSteps(steps: steps, detail: detail)
}

/// diffusers' refusal of more inference steps than training timesteps (DDIM, DDPM, LCM), in its words.
func checkStepsWithinTraining(_ steps: Int, _ config: ResolvedSchedulerConfig) throws {
    let n = config.numTrainTimesteps
    guard steps <= n else {
        throw SchedulerError.unsupportedSteps(
            steps: steps, detail: "`num_inference_steps`: \(steps) cannot be larger than `self.config.train_timesteps`: \(n) "
                + "as the unet model trained with this scheduler can only handle maximal \(n) timesteps.")
    }
}

extension ResolvedSchedulerConfig {
    /// The opening of every scheduler's `init`: at least one step, and the config resolved with
    /// the defaults of the class that runs (`kind`).
    init(_ config: SchedulerConfig, for kind: SchedulerKind, steps: Int,
         supportedPredictions: [PredictionType] = PredictionType.allCases) throws {
        guard steps >= 1 else { throw SchedulerError.invalidSteps(steps) }
        try self.init(config, defaults: kind.classDefaults, supportedPredictions: supportedPredictions)
    }

    /// The integer timesteps of the ᾱ-parameterised schedulers (DDIM, DDPM): the spacing's grid
    /// rounded as numpy rounds, refused where diffusers refuses it or fails on it.
    func discreteTimesteps(steps: Int, scheduler: String) throws -> [Int] {
        func grid(_ k: Int) -> [Int] {
            SigmaSchedule.grid(timestepSpacing, steps: k, trainSteps: numTrainTimesteps, stepsOffset: stepsOffset)
                .map { Int(NumPy.round($0)) }
        }
        try checkStepsWithinTraining(steps, self)
        let timesteps = grid(steps)
        try checkGrid(timesteps, steps: steps, config: self, scheduler: scheduler, largestValid: { grid($0).max() })
        return timesteps
    }
}
