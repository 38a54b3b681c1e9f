import Foundation
import Lumen

/// Runs kernel benchmarks on the Vulkan executor: a warm-up run, then timed runs until about
/// `minSeconds` have passed (at least `minRuns`), reporting the median. Each run is timed with
/// GPU timestamps around the dispatches when the device has them (upload and download excluded),
/// by the wall clock around `run` otherwise; `timing` says which.
public struct VulkanKernelBenchmarkRunner {
    public var minRuns = 3
    public var maxRuns = 50
    public var minSeconds = 1.0
    /// Also run each kernel on the CPU executor and report the relative error of the output.
    public var check = false
    public let executor: VulkanExecutor
    public var timing: String { executor.device.timestampsSupported ? "GPU timestamps" : "wall clock" }

    public init(device: Int? = nil) throws {
        executor = try VulkanExecutor(device: device, options: .init(profile: true, printProfile: false))
    }

    public func measurePeak(bandwidthBytes: Int = 64 << 20) throws -> VulkanPeak {
        try executor.measurePeak(bandwidthBytes: bandwidthBytes)
    }

    public func run(_ b: KernelBenchmark, peak: VulkanPeak) throws -> KernelMeasurement {
        let (graph, output, inputs) = try b.build()
        guard let program = try executor.compile(graph, outputs: [output]) as? VulkanProgram else {
            throw LumenError.backendUnavailable(backend: "vulkan", reason: "compile did not return a Vulkan program")
        }
        let first = try program.run(inputs)[output]
        var relError: Double? = nil
        if check, let first {
            guard let expected = try CPUExecutor().compile(graph, outputs: [output]).run(inputs)[output] else {
                throw LumenError.invalidArgument(op: b.op, detail: "the CPU program returned no output")
            }
            relError = SD15ModelBenchmark.relativeError(first.toFloats(), expected.toFloats())
        }
        var times: [Double] = []
        let start = now()
        while times.count < minRuns || (now() - start < minSeconds && times.count < maxRuns) {
            let t0 = now()
            _ = try program.run(inputs)
            times.append(program.lastGPUSeconds ?? (now() - t0))
        }
        times.sort()
        let median = times[times.count / 2]
        return KernelMeasurement(
            op: b.op, backend: "vulkan", shape: b.shape, seconds: median, gflops: b.flops / median / 1e9,
            gbps: b.bytes / median / 1e9,
            peak_fraction: b.memoryBound ? b.bytes / median / 1e9 / peak.gbps : b.flops / median / 1e9 / peak.gflops, runs: times.count, isa: executor.device.name, threads: 0,
            rel_error: relError)
    }
}
