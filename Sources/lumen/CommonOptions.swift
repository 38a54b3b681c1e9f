import ArgumentParser
import Foundation
import Lumen

// The arguments `generate` and `eval` share, parsed once: ArgumentParser rejects a value outside
// the cases with a message that names the flag and lists the valid values.

extension SchedulerKind: ExpressibleByArgument {}

/// `--backend`: which executor runs the graph.
enum BackendArgument: String, CaseIterable, ExpressibleByArgument {
    case auto, cpu, vulkan

    /// The pipeline's backend, with the Vulkan device `--device` names (auto with a device means
    /// that Vulkan device).
    func backend(device: Int?) -> Backend {
        switch self {
        case .cpu: return .cpu
        case .vulkan: return .vulkan(device: device)
        case .auto: return device.map { .vulkan(device: $0) } ?? .auto
        }
    }

    /// Rejects `--device` with `--backend cpu`, and a negative index.
    func validate(device: Int?) throws {
        guard let device else { return }
        if device < 0 { throw ValidationError("--device \(device): expected a device index from `lumen devices` (0 or more)") }
        if self == .cpu { throw ValidationError("--device \(device): a Vulkan device index, not valid with --backend cpu") }
    }
}

extension SchedulerKind {
    static let argumentHelp = "Scheduler: \(allCases.map(\.rawValue).joined(separator: ", ")) (default: the model's)."
}

extension WeightPrecision: ExpressibleByArgument {}

extension PredictionType: ExpressibleByArgument {}

extension PromptSyntax: ExpressibleByArgument {}

/// `WIDTHxHEIGHT`, e.g. `512x512`.
extension SDXLMicroConditioning.Size: ExpressibleByArgument {
    public init?(argument: String) {
        let parts = argument.lowercased().split(separator: "x", omittingEmptySubsequences: false)
        guard parts.count == 2, let w = Int(parts[0]), let h = Int(parts[1]) else { return nil }
        self.init(width: w, height: h)
    }
}

/// `TOP,LEFT`, e.g. `0,0`.
extension SDXLMicroConditioning.Crop: ExpressibleByArgument {
    public init?(argument: String) {
        let parts = argument.split(separator: ",", omittingEmptySubsequences: false)
        guard parts.count == 2, let top = Int(parts[0]), let left = Int(parts[1]) else { return nil }
        self.init(top: top, left: left)
    }
}

/// `--lora PATH` or `PATH:STRENGTH` (the last colon splits when what follows is a number). When
/// what follows the colon is no number but what precedes it is a file, the strength is NaN and the
/// path the whole argument, so that `validateNumbers` can say that the strength is not a number
/// rather than that "FILE:abc" cannot be opened.
extension LoRAWeight: ExpressibleByArgument {
    public init?(argument: String) {
        if let colon = argument.lastIndex(of: ":"), let strength = Float(argument[argument.index(after: colon)...]) {
            self.init(path: String(argument[..<colon]), strength: strength)
        } else if let colon = argument.lastIndex(of: ":"), !FileManager.default.fileExists(atPath: argument),
                  FileManager.default.fileExists(atPath: String(argument[..<colon])) {
            self.init(path: argument, strength: .nan)
        } else {
            self.init(path: argument)
        }
    }
}

/// How a model's files are read, for every command that opens a model (`generate`, `info`).
struct ModelFileOptions: ParsableArguments {
    @Option(help: "For a single-file checkpoint: a diffusers folder of the same model whose configs and tokenizer to use (otherwise the shapes and the family's diffusers defaults).")
    var config: String?

    @Option(help: "A VAE replacing the model's own: a single .safetensors VAE file or a diffusers vae/ folder.")
    var vae: String?

    @Option(help: "Where a folder has both plain and .fp16 weight files, which to read: auto (the backend's choice: plain on the CPU, .fp16 on a GPU), fp32 or fp16.")
    var precision = WeightPrecision.auto
}

extension GenerateCommand {
    /// `--embedding PATH` or `PATH:TOKEN` (split at the last colon when PATH itself is no file).
    static func embedding(_ spec: String) throws -> TextualInversion {
        if !FileManager.default.fileExists(atPath: spec), let colon = spec.lastIndex(of: ":") {
            return try TextualInversion(path: String(spec[..<colon]), token: String(spec[spec.index(after: colon)...]))
        }
        return try TextualInversion(path: spec)
    }
}
