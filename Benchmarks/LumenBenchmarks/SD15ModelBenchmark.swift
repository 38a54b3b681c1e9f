import CLumenCPU
import Foundation
import Lumen
import LumenCPU
import LumenRuntime

/// The Stable Diffusion 1.5 architecture with random f16 weights (no download), timed phase by
/// phase: text encoding, one UNet step with classifier-free guidance at 512×512 and 256×256,
/// VAE decoding at 512×512, and a whole `lumen generate` run with its peak memory.
public struct SD15ModelBenchmark {
    public struct Result: Codable, Sendable {
        public let phase: String
        public let backend: String
        public let seconds: Double
        public let gflops: Double
        public var runs: Int
        public var peak_rss_bytes: Int? = nil
        public var steps: Int? = nil
        /// Share of the phase's kernel time per op family (gemm, convolution, attention, norms, elementwise).
        public var breakdown: [String: Double]? = nil
        /// Activation memory the compiled program holds.
        public var activation_bytes: Int? = nil
        /// Vulkan: the median of the dispatches' GPU time (timestamps), without upload and download.
        public var gpu_seconds: Double? = nil
        /// With a CPU comparison: max |this - cpu| / max |cpu| over the phase's output.
        public var rel_error_vs_cpu: Double? = nil
        /// The CPU executor's instruction set (`LUMEN_CPU_ISA` lowers it); nil on other backends.
        public var isa: String? = nil
    }

    /// The instruction set the CPU kernels run with, for CPU rows.
    var isaLabel: String? { executor is CPUExecutor ? String(cString: lumen_isa_name(lumen_cpu_isa())) : nil }

    public let workDir: String
    public let tokenizerFolder: String
    public var runs = 3
    public var generateSteps = 4
    public var executor: any Executor = CPUExecutor()
    /// Also run each phase once on this executor (the CPU) with the same inputs and report the
    /// relative difference of the outputs.
    public var reference: (any Executor)? = nil
    /// Image sizes of the UNet-step phases (the VAE decodes at the first); SD 1.5's 512 and 256.
    public var imageSizes = [512, 256]
    /// Which of text, unet, vae to time in `runPhases`.
    public var phases: Set<String> = ["text", "unet", "vae"]
    /// The whole-generation phase's size.
    public var generateSize = 512
    /// "sd15" or "sdxl" (SDXLModelBenchmark.swift).
    public var family = "sd15"
    /// Where the CPU executor's per-op and per-shape profile of each phase goes (`--profile`); nil: not printed.
    public var profileLog: ((String) -> Void)? = nil
    /// "cpu", "cpu-bf16" when the executor computes in bf16, or "vulkan".
    var backendLabel: String {
        if let cpu = executor as? CPUExecutor {
            return cpu.computePrecision == .bf16 && CPUExecutor.bf16Supported ? "cpu-bf16" : "cpu"
        }
        return executor.backendName
    }

    public init(workDir: String, tokenizerFolder: String) {
        self.workDir = workDir
        self.tokenizerFolder = tokenizerFolder
    }

    /// Writes the random-weight model as a diffusers folder once (about 2.1 GB of f16).
    public func prepareModel(log: (String) -> Void) throws -> String {
        let fm = FileManager.default
        let marker = workDir + "/.complete"
        if fm.fileExists(atPath: marker) { return workDir }
        guard fm.fileExists(atPath: tokenizerFolder + "/vocab.json") else {
            throw GenerationError.tokenizerUnavailable("\(tokenizerFolder) has no vocab.json; pass --tokenizer")
        }
        log("writing a random-weight SD 1.5 model to \(workDir) (once)")
        for sub in ["unet", "vae", "text_encoder", "tokenizer", "scheduler"] {
            try fm.createDirectory(atPath: workDir + "/" + sub, withIntermediateDirectories: true)
        }
        for f in ["vocab.json", "merges.txt"] {
            let dst = workDir + "/tokenizer/" + f
            if fm.fileExists(atPath: dst) { try fm.removeItem(atPath: dst) }
            try fm.copyItem(atPath: tokenizerFolder + "/" + f, toPath: dst)
        }
        let g = Graph()
        let text = RecordingWeights(RandomWeights(seed: 1))
        _ = try CLIPTextModel(config: CLIPTextConfig()).build(g, ids: try g.input("ids", shape: [1, 77], dtype: .i32), weights: text)
        try text.write(to: workDir + "/text_encoder/model.safetensors")
        let vae = RecordingWeights(RandomWeights(seed: 2))
        let v = AutoencoderKL(config: AutoencoderKLConfig())
        _ = try v.decode(g, latents: try g.input("z", shape: [1, 4, 8, 8]), weights: vae)
        _ = try v.encode(g, image: try g.input("x", shape: [1, 3, 64, 64]), weights: vae)
        try vae.write(to: workDir + "/vae/diffusion_pytorch_model.safetensors")
        let unet = RecordingWeights(RandomWeights(seed: 3))
        _ = try UNet2DConditionModel(config: UNet2DConditionConfig()).build(
            g, sample: try g.input("s", shape: [1, 4, 8, 8]), timestep: try g.input("t", shape: [1]),
            context: try g.input("c", shape: [1, 77, 768]), weights: unet)
        try unet.write(to: workDir + "/unet/diffusion_pytorch_model.safetensors")
        let encoder = JSONEncoder()
        try AtomicFile.write(try encoder.encode(CLIPTextConfig()), to: workDir + "/text_encoder/config.json")
        try AtomicFile.write(try encoder.encode(UNet2DConditionConfig()), to: workDir + "/unet/config.json")
        try AtomicFile.write(try encoder.encode(AutoencoderKLConfig()), to: workDir + "/vae/config.json")
        try AtomicFile.write(Data(#"{"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1}"#.utf8),
                             to: workDir + "/scheduler/scheduler_config.json")
        try AtomicFile.write(Data(#"{"_class_name": "StableDiffusionPipeline"}"#.utf8), to: workDir + "/model_index.json")
        _ = fm.createFile(atPath: marker, contents: nil)
        return workDir
    }

    /// Times a program: a warm-up run, then the median of `runs` runs; also a per-family share
    /// of the kernel time from one profiled run.
    func time(_ phase: String, graph: Graph, output: Value, inputs: [String: Tensor]) throws -> Result {
        var result: Result
        let outputTensor: Tensor
        do {
            let program = try executor.compile(graph, outputs: [output])
            outputTensor = try Self.output(program.run(inputs), output, phase)
            var times: [Double] = [], gpuTimes: [Double] = []
            for _ in 0..<runs {
                let t0 = DispatchTime.now().uptimeNanoseconds
                _ = try program.run(inputs)
                times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
                if let gpu = Self.vulkanProgram(program)?.lastGPUSeconds { gpuTimes.append(gpu) }
            }
            times.sort()
            gpuTimes.sort()
            let median = times[times.count / 2]
            var byFamily: [String: Double] = [:]
            var activations: Int? = nil
            if let cpu = program as? CPUProgram {
                let profile = try cpu.profile(inputs).steps
                if let profileLog {
                    TAESDBenchCommand.printProfile(phase, graph: graph, program: cpu, steps: profile, log: profileLog)
                }
                for (node, step) in zip(cpu.stepNodeIDs, profile) {
                    byFamily[graph.costCategory(of: graph.nodes[node]), default: 0] += step.seconds
                }
                activations = cpu.activationBytes
            } else if let vk = Self.vulkanProgram(program) {
                // Per kernel name from the last run's timestamps (the executor is built with profiling on).
                for (op, seconds) in vk.lastProfile { byFamily[op, default: 0] += seconds }
                activations = vk.activationBytes
            }
            let total = byFamily.values.reduce(0, +)
            result = Result(phase: phase, backend: backendLabel, seconds: median, gflops: graph.flops(for: [output]) / median / 1e9,
                            runs: runs, breakdown: total > 0 ? byFamily.mapValues { $0 / total } : nil, activation_bytes: activations,
                            gpu_seconds: gpuTimes.isEmpty ? nil : gpuTimes[gpuTimes.count / 2])
            result.isa = isaLabel
        }
        if let reference {
            let expected = try Self.output(reference.compile(graph, outputs: [output]).run(inputs), output, phase)
            result.rel_error_vs_cpu = Self.relativeError(outputTensor.toFloats(), expected.toFloats())
        }
        return result
    }

    static func output(_ outputs: ProgramOutputs, _ value: Value, _ phase: String) throws -> Tensor {
        guard let t = outputs[value] else { throw LumenError.invalidArgument(op: phase, detail: "the program returned no output") }
        return t
    }

    /// max |a - b| / max |b|; infinity where a holds a non-finite value or the sizes differ.
    static func relativeError(_ a: [Float], _ b: [Float]) -> Double {
        guard a.count == b.count else { return .infinity }
        var maxDiff = 0.0, maxRef = 0.0
        for (x, y) in zip(a, b) {
            guard x.isFinite else { return .infinity }
            maxDiff = max(maxDiff, Double(abs(x - y)))
            maxRef = max(maxRef, Double(abs(y)))
        }
        return maxDiff / max(maxRef, 1e-30)
    }

    /// Called with each phase's result as soon as it is measured (so that a run stopped by a time
    /// limit has printed what it measured).
    public var onResult: ((Result) -> Void)? = nil

    /// Runs the phases (`PhaseRunner`: a failed phase is skipped, its error thrown at the end).
    public func runPhases(model folder: String, log: @escaping (String) -> Void) throws -> [Result] {
        let model = try StableDiffusionModel.load(path: folder)
        let runner = PhaseRunner(log: log, onResult: onResult)
        if phases.contains("text") {
            runner.attempt("text-encode") {
                let g = Graph()
                let ids = try g.input("ids", shape: [2, 77], dtype: .i32)
                let out = try CLIPTextModel(config: model.textEncoderConfig).build(g, ids: ids, weights: model.textEncoderWeights).lastHiddenState
                // Start token, eight word tokens, then end/padding tokens, for both rows.
                var row = [Int32](repeating: 49407, count: 77)
                row[0] = 49406
                for i in 1..<9 { row[i] = Int32(320 + i) }
                let idv = row + row
                return try time("text-encode", graph: g, output: out, inputs: ["ids": try Tensor(shape: [2, 77], indices: idv)])
            }
        }
        for image in imageSizes where phases.contains("unet") {
            let phase = "unet-step-\(image)", size = image / 8
            runner.attempt(phase) {
                let g = Graph()
                let x = try g.input("sample", shape: [2, model.unetConfig.inChannels, size, size])
                let t = try g.input("timestep", shape: [2])
                let c = try g.input("context", shape: [2, 77, model.unetConfig.crossAttentionDim])
                let y = try UNet2DConditionModel(config: model.unetConfig).build(g, sample: x, timestep: t, context: c, weights: model.unetWeights)
                return try time(phase, graph: g, output: y, inputs: [
                    "sample": try runner.random(x.shape), "timestep": try Tensor([981, 981]), "context": try runner.random(c.shape)])
            }
        }
        if phases.contains("vae") {
            let image = imageSizes.first ?? 512
            runner.attempt("vae-decode-\(image)") {
                let g = Graph()
                let z = try g.input("latents", shape: [1, model.vaeConfig.latentChannels, image / 8, image / 8])
                let y = try AutoencoderKL(config: model.vaeConfig).decode(g, latents: z, weights: model.vaeWeights)
                return try time("vae-decode-\(image)", graph: g, output: y, inputs: ["latents": try runner.random(z.shape)])
            }
        }
        return try runner.finish()
    }

    /// A whole `lumen generate` at 512×512 in a child process: wall time and peak RSS.
    ///
    /// The peak is the child's own VmHWM, which `lumen generate --json` reports, not
    /// `getrusage(RUSAGE_CHILDREN)`: Foundation starts the child with posix_spawn, whose vfork-style
    /// clone shares this (large) process's memory until the exec, and the kernel carries that
    /// memory's high-water mark into the child's ru_maxrss at the exec (3.88 GB reported for a run
    /// whose `/usr/bin/time` peak was 2.10 GB).
    /// `extraArguments` go to `lumen generate` (a ControlNet's `--control`).
    public func runGenerate(model folder: String, lumen: String, extraArguments: [String] = [], log: (String) -> Void) throws -> Result {
        log("generate-\(generateSize) (\(generateSteps) steps, euler, CFG, \(backendLabel)\(extraArguments.isEmpty ? "" : ", " + extraArguments.joined(separator: " ")))")
        let out = NSTemporaryDirectory() + "lumen-bench-\(getpid()).png"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: lumen)
        p.arguments = ["generate", "a benchmark prompt", "--model", folder, "--steps", "\(generateSteps)", "--scheduler", "euler",
                       "--seed", "0", "--width", "\(generateSize)", "--height", "\(generateSize)",
                       "--backend", executor is CPUExecutor ? "cpu" : "vulkan", "-o", out, "--json"] + extraArguments
        if backendLabel == "cpu-bf16" {
            var env = ProcessInfo.processInfo.environment
            env["LUMEN_CPU_BF16"] = "1"
            p.environment = env
        }
        // stdout carries the --json summary; stderr goes to a file: the progress bar is dropped,
        // but a failure can say why.
        let stdout = Pipe()
        let errPath = NSTemporaryDirectory() + "lumen-bench-\(getpid()).stderr"
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: errPath) }
        p.standardOutput = stdout
        p.standardError = FileHandle(forWritingAtPath: errPath) ?? FileHandle.nullDevice
        let t0 = DispatchTime.now().uptimeNanoseconds
        try p.run()
        let summary = stdout.fileHandleForReading.readDataToEndOfFile()  // before waiting: never a full pipe
        p.waitUntilExit()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
        guard p.terminationStatus == 0 else {
            let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
            let tail = stderr.split(separator: "\n").filter { !$0.contains("step ") }.suffix(12).joined(separator: "\n")
            throw LumenError.invalidArgument(op: "generate-\(generateSize)", detail: "\(lumen) exited with \(p.terminationStatus):\n\(tail)")
        }
        struct Summary: Decodable { let peak_resident_bytes: Int? }
        guard let peak = (try? JSONDecoder().decode(Summary.self, from: summary))?.peak_resident_bytes else {
            throw LumenError.invalidArgument(
                op: "generate-\(generateSize)", detail: "\(lumen) generate --json did not report peak_resident_bytes (VmHWM)")
        }
        var result = Result(phase: "generate-\(generateSize)", backend: backendLabel, seconds: seconds, gflops: 0, runs: 1,
                            peak_rss_bytes: peak, steps: generateSteps)
        result.isa = isaLabel  // the child inherits LUMEN_CPU_ISA
        return result
    }
}

/// Hands out another store's tensors and keeps them, to write them out as a file.
final class RecordingWeights: WeightStore {
    private let base: WeightStore
    private(set) var recorded: [(String, Tensor)] = []
    private var seen: Set<String> = []

    init(_ base: WeightStore) { self.base = base }

    func tensor(_ name: String, shape: Shape) throws -> Tensor {
        let t = try base.tensor(name, shape: shape)
        if seen.insert(name).inserted { recorded.append((name, t)) }
        return t
    }

    func write(to path: String) throws {
        try SafetensorsWriter.write(recorded.map { ($0.0, $0.1) }, to: path)
        recorded.removeAll()
    }
}

extension SD15ModelBenchmark {
    /// The Vulkan program behind a compiled program (with `auto` activations the executor wraps
    /// it in a PrecisionFallbackProgram), for its timestamps.
    static func vulkanProgram(_ p: any Program) -> VulkanProgram? {
        (p as? VulkanProgram) ?? (p as? PrecisionFallbackProgram)?.current
    }
}
