import ArgumentParser
import Foundation
import LumenCPU
import Lumen
import LumenRuntime

/// `lumen-bench model`: Stable Diffusion 1.5, SDXL base or SD 1.5 with a ControlNet, phase timings
/// (random weights, no download).
public struct ModelBenchCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Benchmark the full Stable Diffusion 1.5, SDXL base or SD 1.5 + ControlNet architecture (random f16 weights) phase by phase.")

    @Option(help: "sd15 (512×512 and 256×256), sdxl (SDXL base at 1024×1024) or controlnet (SD 1.5 with an SD 1.5 ControlNet at 512×512).")
    public var model = "sd15"

    @Option(name: .customLong("work-dir"), help: "Where the random-weight model is written (once; SD 1.5 about 2.1 GB, SDXL about 7 GB; controlnet: the SD 1.5 folder and its controlnet/, 0.7 GB more). Default: lumen-MODEL-random (controlnet: lumen-sd15-random) in the temporary folder.")
    public var workDirOption: String?

    var workDir: String { workDirOption ?? NSTemporaryDirectory() + "lumen-\(model == "controlnet" ? "sd15" : model)-random" }

    @Option(help: "A folder with the CLIP vocab.json and merges.txt.")
    public var tokenizer = "Tests/Fixtures/tiny-sd/tokenizer"

    @Option(help: "Timed runs per phase (the median is reported).")
    public var runs = 3

    @Option(help: "Steps of the whole-generation phase.")
    public var steps = 4

    @Option(help: "The lumen executable for the whole-generation phase (default: beside this one).")
    public var lumen: String?

    @Flag(help: "Skip the whole-generation phase.")
    public var skipGenerate = false

    @Flag(help: "Print one JSON array.")
    public var json = false

    @Flag(name: .customLong("prepare-only"), help: "Write the random-weight model folder (if it is not there yet), print its path and stop.")
    public var prepareOnly = false

    @Flag(help: "CPU: print one profiled run of each phase on stderr, kernel seconds by op and by op and shape.")
    public var profile = false

    @Flag(help: "Compute GEMMs and convolutions in bf16 (AVX-512 BF16 dot products, f32 accumulation) where the CPU has it.")
    public var bf16 = false

    @Option(help: "Backend: cpu or vulkan (the Vulkan executor with GPU timestamps; LUMEN_VULKAN_ACTIVATIONS picks f32/f16).")
    public var backend: KernelBenchCommand.Backend = .cpu

    @Option(help: "Vulkan device index, as `lumen devices` lists them.")
    public var device: Int?

    @Flag(name: .customLong("compare-cpu"), help: "Also run each phase once on the CPU executor with the same inputs and report the relative error (max |vulkan - cpu| / max |cpu|).")
    public var compareCPU = false

    @Option(name: .customLong("model-folder"), help: "Benchmark this diffusers folder (e.g. Models/demo) instead of the random-weight SD 1.5.")
    public var modelFolder: String?

    @Option(name: .customLong("sizes"), help: "Image sizes of the UNet-step phases, comma-separated (the VAE decodes at the first). Default: 512,256 for sd15, 1024 for sdxl, 512 for controlnet.")
    public var sizesOption: String?

    var sizes: String { sizesOption ?? (model == "sdxl" ? "1024" : model == "controlnet" ? "512" : "512,256") }

    @Option(name: .customLong("generate-size"), help: "Image size of the whole-generation phase (default: 512 for sd15, 1024 for sdxl).")
    public var generateSizeOption: Int?

    var generateSize: Int { generateSizeOption ?? (model == "sdxl" ? 1024 : 512) }

    @Option(help: "Phases to run, comma-separated: text, unet, vae, generate (controlnet: unet, which times the ControlNet alone and a whole step, and generate).")
    public var phases: String?

    var phaseList: String { phases ?? (model == "controlnet" ? "unet,generate" : "text,unet,vae,generate") }

    public init() {}

    public func validate() throws {
        guard ["sd15", "sdxl", "controlnet"].contains(model) else { throw ValidationError("--model \(model): expected sd15, sdxl or controlnet") }
        if model != "sd15" && (modelFolder != nil || backend != .cpu) {
            throw ValidationError("--model \(model) runs its random-weight model on the CPU backend (no --model-folder, no --backend vulkan yet)")
        }
        guard runs >= 1, steps >= 1 else { throw ValidationError("--runs and --steps must be at least 1") }
        guard !imageSizes.isEmpty, imageSizes.allSatisfy({ $0 >= 8 && $0 % 8 == 0 }), generateSize >= 8, generateSize % 8 == 0 else {
            throw ValidationError("--sizes \(sizes) / --generate-size \(generateSize): image sizes are positive multiples of 8")
        }
        if bf16 && backend != .cpu { throw ValidationError("--bf16 is for the CPU backend") }
        let known: Set<String> = model == "controlnet" ? ["unet", "generate"] : ["text", "unet", "vae", "generate"]
        let unknown = phaseSet.subtracting(known)
        guard unknown.isEmpty else {
            throw ValidationError("--phases: unknown \(unknown.sorted().joined(separator: ", ")); expected \(known.sorted().joined(separator: ", ")) for --model \(model)")
        }
        if compareCPU && backend == .cpu { throw ValidationError("--compare-cpu compares the Vulkan backend with the CPU; add --backend vulkan") }
    }

    var phaseSet: Set<String> { Set(phaseList.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }) }

    var imageSizes: [Int] { sizes.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

    public func run() throws {
        var bench = SD15ModelBenchmark(workDir: workDir, tokenizerFolder: tokenizer)
        bench.runs = runs
        bench.generateSteps = steps
        bench.imageSizes = imageSizes
        bench.generateSize = generateSize
        bench.phases = phaseSet
        bench.family = model
        if profile { bench.profileLog = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) } }
        if backend == .vulkan {
            // Timestamps on for the per-kernel breakdown; LUMEN_PROFILE=1 also prints each run's table.
            let printProfile = ProcessInfo.processInfo.environment["LUMEN_PROFILE"] == "1"
            let vk = try VulkanExecutor(device: device, options: .init(profile: true, printProfile: printProfile))
            bench.executor = vk
            // On stderr: stdout is the table or, with --json, the JSON alone.
            FileHandle.standardError.write(Data(("vulkan: \(vk.device.name); activations \(vk.options.activations.rawValue) "
                + "(LUMEN_VULKAN_ACTIVATIONS); tensor cores \(vk.checkTensorCoresNow())\n").utf8))
            if compareCPU { bench.reference = CPUExecutor() }
        }
        if bf16 {
            guard CPUExecutor.bf16Supported else { throw ValidationError("--bf16: this CPU has no AVX512_BF16") }
            bench.executor = CPUExecutor(computePrecision: .bf16)
        }
        let log: (String) -> Void = { FileHandle.standardError.write(Data("bench: \($0)\n".utf8)) }
        var controlNet: String? = nil
        let folder: String
        if model == "controlnet" {
            (folder, controlNet) = try bench.prepareControlNetModel(log: log)
        } else {
            folder = try modelFolder ?? (model == "sdxl" ? bench.prepareSDXLModel(log: log) : bench.prepareModel(log: log))
        }
        if prepareOnly {
            print(folder)
            return
        }
        var results: [SD15ModelBenchmark.Result] = []
        // The table row by row as each phase ends, unbuffered: a run stopped by `timeout` keeps
        // what it measured.
        if !json { Self.write("phase            seconds   GFLOP/s   notes") }
        bench.onResult = { r in if !json { Self.write(Self.row(r)) } }
        if !skipGenerate && phaseSet.contains("generate") {
            let exe = lumen ?? (URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("lumen").path)
            let control = try controlNet.map { ["--control", "\($0):\(try bench.controlImage(in: $0, size: generateSize))"] } ?? []
            let r = try bench.runGenerate(model: folder, lumen: exe, extraArguments: control, log: log)
            results.append(r)
            bench.onResult?(r)
        }
        if !phaseSet.isDisjoint(with: ["text", "unet", "vae"]) {
            if let controlNet {
                results += try bench.runControlNetPhases(model: folder, controlNet: controlNet, log: log)
            } else {
                results += try model == "sdxl" ? bench.runSDXLPhases(model: folder, log: log) : bench.runPhases(model: folder, log: log)
            }
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(results), as: UTF8.self))
        }
    }

    static func write(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }

    static func row(_ r: SD15ModelBenchmark.Result) -> String {
        var notes = "\(r.backend)\(r.isa.map { " " + $0 } ?? ""); "
        if let gpu = r.gpu_seconds { notes += String(format: "GPU %.4f s; ", gpu) }
        if let e = r.rel_error_vs_cpu { notes += String(format: "rel. error vs CPU %.2e; ", e) }
        if let rss = r.peak_rss_bytes { notes += String(format: "peak RSS %.2f GB, %d steps", Double(rss) / 1e9, r.steps ?? 0) }
        if let a = r.activation_bytes { notes += String(format: "activations %.0f MB; ", Double(a) / 1e6) }
        if let b = r.breakdown {
            notes += b.sorted { $0.value > $1.value }.prefix(6).map { String(format: "%@ %.0f%%", $0.key, $0.value * 100) }.joined(separator: ", ")
        }
        return r.phase.padding(toLength: 16, withPad: " ", startingAt: 0) + String(format: "%8.3f  %8.1f   ", r.seconds, r.gflops) + notes
    }
}

/// `lumen-bench`: kernel benchmarks (the default) and model benchmarks.
public struct LumenBenchCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "lumen-bench", abstract: "Lumen's benchmarks.",
        subcommands: [KernelBenchCommand.self, ModelBenchCommand.self, TAESDBenchCommand.self], defaultSubcommand: KernelBenchCommand.self)

    public init() {}
}
