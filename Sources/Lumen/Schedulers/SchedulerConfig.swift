import Foundation
import LumenRuntime

/// A failure to read or use a scheduler configuration.
public enum SchedulerError: Error, CustomStringConvertible, Equatable, Sendable {
    case unreadable(path: String, reason: String)
    case malformed(path: String, reason: String)
    /// A value the scheduler does not implement (a beta schedule, spacing, prediction type, …).
    case unsupported(option: String, value: String, supported: [String])
    /// A `_class_name` that is neither a Lumen scheduler nor one diffusers has (see
    /// `SchedulerKind.resolve(className:path:useKarrasSigmas:)`).
    case unknownScheduler(name: String, path: String?)
    case invalidSteps(Int)
    /// A step count the scheduler cannot run with this config (diffusers refuses it too, or
    /// fails on it with an index error).
    case unsupportedSteps(steps: Int, detail: String)
    /// A config value outside the range the scheduler can compute with, naming the file (nil for
    /// a config built in code), the field and what is expected.
    case invalidValue(path: String?, field: String, value: String, expected: String)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): return "cannot read scheduler config \(path): \(reason)"
        case .malformed(let path, let reason): return "malformed scheduler config \(path): \(reason)"
        case .unsupported(let option, let value, let supported):
            return "unsupported scheduler \(option) \"\(value)\"; supported: \(supported.joined(separator: ", "))"
        case .unknownScheduler(let name, let path):
            return (path.map { "\($0): " } ?? "") + "unknown scheduler class \"\(name)\"; supported: "
                + SchedulerKind.supportedClassNames.joined(separator: ", ")
                + " (or pass --scheduler \(SchedulerKind.allCases.map(\.rawValue).joined(separator: "|")))"
        case .invalidSteps(let n): return "the number of inference steps must be at least 1 (got \(n))"
        case .unsupportedSteps(let steps, let detail): return "\(steps) inference steps: \(detail)"
        case .invalidValue(let path, let field, let value, let expected):
            return (path.map { "\($0): " } ?? "scheduler config: ") + "field \(field): \(value); expected \(expected)"
        }
    }
}

/// `scheduler/scheduler_config.json` as diffusers writes it. Every field is optional: a missing one
/// takes the default of the scheduler class that reads it (diffusers' defaults differ per class, e.g.
/// `timestep_spacing` is "leading" for DDIM but "linspace" for Euler), which `resolved(for:)` applies.
public struct SchedulerConfig: Codable, Sendable, Hashable {
    public var className: String?
    public var numTrainTimesteps: Int?
    public var betaStart: Double?
    public var betaEnd: Double?
    public var betaSchedule: BetaSchedule?
    public var trainedBetas: [Double]?
    public var predictionType: String?
    public var timestepSpacing: String?
    public var stepsOffset: Int?
    public var setAlphaToOne: Bool?
    public var clipSample: Bool?
    public var clipSampleRange: Double?
    public var skipPrkSteps: Bool?
    public var useKarrasSigmas: Bool?
    public var solverOrder: Int?
    public var algorithmType: AlgorithmType?
    public var solverType: SolverType?
    public var lowerOrderFinal: Bool?
    public var eulerAtFinal: Bool?
    public var finalSigmasType: FinalSigmasType?
    public var interpolationType: InterpolationType?
    public var timestepType: TimestepType?
    public var sigmaMin: Double?
    public var sigmaMax: Double?
    public var originalInferenceSteps: Int?
    public var timestepScaling: Double?
    public var varianceType: VarianceType?
    public var thresholding: Bool?
    public var rescaleBetasZeroSnr: Bool?
    public var useExponentialSigmas: Bool?
    public var useBetaSigmas: Bool?
    public var useLuLambdas: Bool?
    public var useFlowSigmas: Bool?
    /// DPM-Solver's lowest λ: timesteps whose λ = log(α/σ) lies below it are not used. Python's
    /// json writes the default, -inf, as a bare `-Infinity`, read as nil.
    public var lambdaMinClipped: Double?
    /// UniPC: whether it solves for the data prediction (diffusers' default) or the noise.
    public var predictX0: Bool?
    /// UniPC: the steps (indices) after which the corrector is not applied.
    public var disableCorrector: [Int]?
    /// EDM schedulers: the data's standard deviation in the preconditioning (0.5 in the paper).
    public var sigmaData: Double?
    /// EDM schedulers: Karras' or exponential sigmas between `sigma_max` and `sigma_min`.
    public var sigmaSchedule: EDMSigmaSchedule?
    /// EDM schedulers: the exponent of Karras' schedule (7 in the paper).
    public var rho: Double?

    enum CodingKeys: String, CodingKey {
        case className = "_class_name"
        case numTrainTimesteps = "num_train_timesteps"
        case betaStart = "beta_start"
        case betaEnd = "beta_end"
        case betaSchedule = "beta_schedule"
        case trainedBetas = "trained_betas"
        case predictionType = "prediction_type"
        case timestepSpacing = "timestep_spacing"
        case stepsOffset = "steps_offset"
        case setAlphaToOne = "set_alpha_to_one"
        case clipSample = "clip_sample"
        case clipSampleRange = "clip_sample_range"
        case skipPrkSteps = "skip_prk_steps"
        case useKarrasSigmas = "use_karras_sigmas"
        case solverOrder = "solver_order"
        case algorithmType = "algorithm_type"
        case solverType = "solver_type"
        case lowerOrderFinal = "lower_order_final"
        case eulerAtFinal = "euler_at_final"
        case finalSigmasType = "final_sigmas_type"
        case interpolationType = "interpolation_type"
        case timestepType = "timestep_type"
        case sigmaMin = "sigma_min"
        case sigmaMax = "sigma_max"
        case originalInferenceSteps = "original_inference_steps"
        case timestepScaling = "timestep_scaling"
        case varianceType = "variance_type"
        case thresholding
        case rescaleBetasZeroSnr = "rescale_betas_zero_snr"
        case useExponentialSigmas = "use_exponential_sigmas", useBetaSigmas = "use_beta_sigmas"
        case useLuLambdas = "use_lu_lambdas", useFlowSigmas = "use_flow_sigmas"
        case lambdaMinClipped = "lambda_min_clipped"
        case predictX0 = "predict_x0", disableCorrector = "disable_corrector"
        case sigmaData = "sigma_data", sigmaSchedule = "sigma_schedule", rho
    }

    public init() {}

    /// Reads a diffusers `scheduler_config.json`.
    public init(path: String) throws {
        let data: Data
        do { data = try RegularFile.read(path, limit: 16 << 20) } catch {
            throw SchedulerError.unreadable(path: path, reason: error.localizedDescription)
        }
        do { self = try decodeConfigJSON(SchedulerConfig.self, from: data) } catch {
            throw SchedulerError.malformed(path: path, reason: describeDecodingError(error, decoding: SchedulerConfig.self, data: data))
        }
        try checkRanges(path: path)
    }

}

/// How a model's output is read.
public enum PredictionType: String, Sendable, Hashable, CaseIterable {
    case epsilon
    case vPrediction = "v_prediction"
    case sample
}

/// How the inference timesteps are spread over the training ones (diffusers' `timestep_spacing`).
public enum TimestepSpacing: String, Sendable, Hashable, CaseIterable {
    case linspace, leading, trailing
}

/// The values every scheduler shares, with a class's defaults filled in.
struct ResolvedSchedulerConfig: Sendable, Hashable {
    var numTrainTimesteps: Int
    var betaStart: Double
    var betaEnd: Double
    var betaSchedule: BetaSchedule
    var trainedBetas: [Double]?
    var predictionType: PredictionType
    var timestepSpacing: TimestepSpacing
    var stepsOffset: Int
    var setAlphaToOne: Bool
    var clipSample: Bool
    var clipSampleRange: Float
    /// `rescale_betas_zero_snr`: the betas rescaled so that the last training timestep has zero
    /// signal (Lin et al. 2023), where the class has the option.
    var rescaleZeroTerminalSNR: Bool
    /// What the last ᾱ (0 after that rescale) is replaced by: the sigma-parameterised classes put
    /// 2⁻²⁴ there so that their first sigma is finite; nil keeps 0.
    var zeroTerminalAlphaProduct: Float?

    /// Class defaults: diffusers' `__init__` defaults of the class named, and which of the shared
    /// options its `__init__` has at all (`from_config` ignores a value the class lacks, so PNDM
    /// runs a zero-SNR model's config without the rescale).
    struct Defaults {
        var betaStart = 0.0001
        var betaEnd = 0.02
        var betaSchedule = BetaSchedule.linear
        var timestepSpacing = TimestepSpacing.linspace
        var setAlphaToOne = false
        var clipSample = false
        var hasThresholding = true
        var hasZeroSNRRescale = true
        var zeroTerminalAlphaProduct: Float? = nil
    }

    init(_ c: SchedulerConfig, defaults d: Defaults, supportedPredictions: [PredictionType]) throws {
        numTrainTimesteps = c.numTrainTimesteps ?? 1000
        betaStart = c.betaStart ?? d.betaStart
        betaEnd = c.betaEnd ?? d.betaEnd
        betaSchedule = c.betaSchedule ?? d.betaSchedule
        trainedBetas = c.trainedBetas
        let prediction = c.predictionType ?? "epsilon"
        guard let p = PredictionType(rawValue: prediction), supportedPredictions.contains(p) else {
            throw SchedulerError.unsupported(option: "prediction_type", value: prediction,
                                             supported: supportedPredictions.map(\.rawValue))
        }
        predictionType = p
        let spacing = c.timestepSpacing ?? d.timestepSpacing.rawValue
        guard let s = TimestepSpacing(rawValue: spacing) else {
            throw SchedulerError.unsupported(option: "timestep_spacing", value: spacing,
                                             supported: TimestepSpacing.allCases.map(\.rawValue))
        }
        timestepSpacing = s
        stepsOffset = c.stepsOffset ?? 0
        setAlphaToOne = c.setAlphaToOne ?? d.setAlphaToOne
        clipSample = c.clipSample ?? d.clipSample
        clipSampleRange = Float(c.clipSampleRange ?? 1.0)
        if c.thresholding == true && d.hasThresholding {
            throw SchedulerError.unsupported(option: "thresholding", value: "true", supported: ["false"])
        }
        rescaleZeroTerminalSNR = d.hasZeroSNRRescale && c.rescaleBetasZeroSnr == true
        zeroTerminalAlphaProduct = rescaleZeroTerminalSNR ? d.zeroTerminalAlphaProduct : nil
        // A config built in code gets the same range checks as a file.
        try c.checkRanges(path: nil)
    }
}
