import ArgumentParser
import Foundation
import LumenCPU
import LumenRuntime

/// `lumen bench` / `lumen-bench`: the kernels at Stable Diffusion 1.5's shapes, with the rate
/// each reaches and its fraction of this machine's measured peak.
public struct KernelBenchCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmark the kernels at the shapes Stable Diffusion 1.5 uses at 512x512.")

    public enum Backend: String, ExpressibleByArgument, CaseIterable {
        case cpu, vulkan
    }

    @Option(help: "Backend to benchmark: \(Backend.allCases.map(\.rawValue).joined(separator: ", ")).")
    public var backend: Backend = .cpu

    @Option(name: .customLong("op"), help: "Only ops of this family (matmul, conv2d, attention, group-norm, layer-norm, gelu, silu); repeatable.")
    public var ops: [String] = []

    @Option(help: "Vulkan device index, as `lumen devices` lists them (default: LUMEN_VULKAN_DEVICE or the preferred device).")
    public var device: Int?

    @Option(help: "Threads (default: every core).")
    public var threads: Int?

    @Option(help: "Minimum seconds of timed runs per benchmark.")
    public var minSeconds: Double = 1.0

    @Flag(help: "Print one JSON array of results instead of a table.")
    public var json = false

    @Flag(help: "Shapes at a quarter of the side (128x128 images): a quick pass that every kernel runs, for slow devices.")
    public var small = false

    @Flag(help: "Vulkan: also run each kernel on the CPU executor with the same inputs and print the relative error (max |vulkan - cpu| / max |cpu|).")
    public var check = false

    @Flag(help: "Compute GEMMs and convolutions in bf16 (AVX-512 BF16 dot products, f32 accumulation; a bf16 multiply-add counts as 2 FLOPs; 'of peak' stays relative to the f32 FMA peak).")
    public var bf16 = false

    public init() {}

    public func validate() throws {
        let known = Set(SD15Shapes.all(small: small).map(\.op))
        for op in ops where !known.contains(op) && !known.contains(where: { $0.hasPrefix(op + "-") }) {
            throw ValidationError("--op \(op): unknown op; expected one of \(known.sorted().joined(separator: ", "))")
        }
        try ThreadPool.check(threads)
        try ThreadPool.checkEnvironment()
        if minSeconds < 0 { throw ValidationError("--min-seconds must not be negative") }
        if check && backend != .vulkan { throw ValidationError("--check compares the Vulkan backend with the CPU executor; add --backend vulkan") }
    }

    public func run() throws {
        // One row per line as it is measured, also into a file: a run stopped by a time limit
        // keeps what it printed.
        setvbuf(stdout, nil, _IOLBF, 0)
        let selected = SD15Shapes.all(small: small).filter { b in
            ops.isEmpty || ops.contains(b.op) || ops.contains { b.op.hasPrefix($0 + "-") }
        }
        if backend == .vulkan { return try runVulkan(selected) }
        if bf16 && backend != .cpu { throw ValidationError("--bf16 is for the CPU backend") }
        if bf16 && !CPUExecutor.bf16Supported { throw ValidationError("--bf16: this CPU has no AVX512_BF16") }
        var runner = KernelBenchmarkRunner(executor: CPUExecutor(threads: threads, computePrecision: bf16 ? .bf16 : nil))
        runner.minSeconds = minSeconds
        let peak = runner.measurePeak()
        if !json {
            print(String(format: "peak: %.1f GFLOP/s f32 FMA (%@, %d threads, measured), %.1f GB/s copy bandwidth",
                         peak.gflops, peak.isa, peak.threads, peak.gbps))
            if bf16 { print("compute: bf16 (GEMM and convolution operands rounded to bf16, f32 accumulation)") }
            print("op                shape                      time (ms)     GFLOP/s       GB/s   of peak")
        }
        try report(selected) { try runner.run($0, peak: peak) }
    }
}

extension KernelBenchCommand {
    /// The same benchmarks on the Vulkan executor, against the device's measured FMA peak and
    /// bandwidth.
    func runVulkan(_ selected: [KernelBenchmark]) throws {
        var runner = try VulkanKernelBenchmarkRunner(device: device)
        runner.minSeconds = minSeconds
        runner.check = check
        let peak = try runner.measurePeak(bandwidthBytes: small ? 64 << 20 : 1 << 30)
        if !json {
            let d = runner.executor.device
            let activations = runner.executor.usesF16Activations ? "f16" : "f32"
            print("device: \(d.name) (\(d.type), Vulkan \(d.apiVersion)); \(activations) activations "
                  + "(LUMEN_VULKAN_ACTIVATIONS); timed with \(runner.timing)")
            if runner.executor.usesF16Activations {
                // matmul, linear and conv2d run on them where they passed (their "of peak" is still
                // against the f32 FMA rate measured below, not the tensor cores' rate).
                print("tensor cores: \(runner.executor.checkTensorCoresNow())")
            }
            print(String(format: "peak: %.1f GFLOP/s f32 FMA, %.1f GB/s elementwise bandwidth over %.0f MiB (measured)",
                         peak.gflops, peak.gbps, Double(peak.bandwidthBytes) / 1048576))
            print("op                shape                      time (ms)     GFLOP/s       GB/s   of peak" + (check ? "   rel.err vs CPU" : ""))
        }
        try report(selected) { try runner.run($0, peak: peak) }
        // With LUMEN_VULKAN_VALIDATION=1 a message from the validation layer fails the run.
        let messages = runner.executor.validationMessages
        if runner.executor.validationEnabled && !messages.isEmpty {
            throw ValidationError("the Vulkan validation layer reported \(messages.count) message(s):\n"
                                  + messages.prefix(10).map(\.description).joined(separator: "\n"))
        }
    }
}

extension KernelBenchCommand {
    /// Runs each benchmark, printing a table row as it goes (or one JSON array at the end).
    func report(_ selected: [KernelBenchmark], _ measure: (KernelBenchmark) throws -> KernelMeasurement) throws {
        var results: [KernelMeasurement] = []
        for b in selected {
            let m = try measure(b)
            results.append(m)
            if !json {
                let rate = b.memoryBound ? "-" : String(format: "%.1f", m.gflops)
                print(b.op.padding(toLength: 18, withPad: " ", startingAt: 0)
                      + b.shape.padding(toLength: 24, withPad: " ", startingAt: 0)
                      + String(format: "%12.3f", m.seconds * 1000)
                      + rate.leftPadded(12)
                      + String(format: "%11.1f", m.gbps)
                      + String(format: "%9.1f%%", m.peak_fraction * 100)
                      + (m.rel_error.map { String(format: "   %.2e", $0) } ?? ""))
            }
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(results), as: UTF8.self))
        }
    }
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
