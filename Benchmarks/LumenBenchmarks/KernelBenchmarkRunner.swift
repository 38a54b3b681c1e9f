import CLumenCPU
import Foundation
import LumenCPU
import LumenRuntime

/// Runs kernel benchmarks: a warm-up run, then timed runs until about `minSeconds` have passed
/// (at least `minRuns`), reporting the median.
public struct KernelBenchmarkRunner {
    public var minRuns = 3
    public var maxRuns = 50
    public var minSeconds = 1.0
    public let executor: CPUExecutor

    public init(executor: CPUExecutor = CPUExecutor()) {
        self.executor = executor
    }

    /// Measures the FMA peak (all threads at once) and the copy bandwidth of this machine.
    public func measurePeak() -> MachinePeak {
        let threads = executor.pool.threads
        let isa = lumen_cpu_isa()
        let rates = UnsafeMutablePointer<Double>.allocate(capacity: threads)
        defer { rates.deallocate() }
        executor.pool.parallelFor(threads) { t in rates[t] = lumen_measure_fma_gflops(isa, 0.3) }
        let gflops = (0..<threads).reduce(0) { $0 + rates[$1] }

        let count = 64 << 20 / 4  // 64 MiB per buffer, far beyond the caches
        return MachinePeak(gflops: gflops, gbps: copyBandwidth(floats: count, repeats: 5), threads: threads,
                           isa: String(cString: lumen_isa_name(isa)))
    }

    /// GB/s (read + write) of the fastest of `repeats` multi-threaded copies of `floats` floats.
    func copyBandwidth(floats count: Int, repeats: Int) -> Double {
        let src = UnsafeMutablePointer<Float>.allocate(capacity: count)
        let dst = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { src.deallocate(); dst.deallocate() }
        src.initialize(repeating: 1, count: count)
        dst.initialize(repeating: 0, count: count)
        var best = Double.infinity
        for _ in 0..<repeats {
            let t0 = now()
            executor.pool.parallelRanges(count, minChunk: 1 << 14) { r in
                (dst + r.lowerBound).update(from: src + r.lowerBound, count: r.count)
            }
            best = min(best, now() - t0)
        }
        return 2 * Double(count * 4) / best / 1e9
    }

    public func run(_ b: KernelBenchmark, peak: MachinePeak) throws -> KernelMeasurement {
        let (graph, output, inputs) = try b.build()
        let program = try executor.compile(graph, outputs: [output]) as! CPUProgram
        _ = try program.run(inputs)
        // The kernel's own time: the program's steps, without copying inputs in and outputs out.
        var times: [Double] = []
        let start = now()
        while times.count < minRuns || (now() - start < minSeconds && times.count < maxRuns) {
            times.append(try program.profile(inputs).steps.reduce(0) { $0 + $1.seconds })
        }
        times.sort()
        let median = times[times.count / 2]
        let gflops = b.flops / median / 1e9
        let gbps = b.bytes / median / 1e9
        // A memory-bound op is judged against a copy of its own byte count (half read, half
        // written), not the 64 MiB DRAM copy: SD's norm and activation tensors (≤ 21 MB) partly
        // or wholly stay in the last-level cache, and read up to 500% of a DRAM copy.
        let reference = b.memoryBound ? copyBandwidth(floats: max(Int(b.bytes / 8), 1024), repeats: 20) : 0
        return KernelMeasurement(
            op: b.op, backend: executor.computePrecision == .bf16 && CPUExecutor.bf16Supported ? "cpu-bf16" : "cpu", shape: b.shape, seconds: median, gflops: gflops, gbps: gbps,
            peak_fraction: b.memoryBound ? gbps / reference : gflops / peak.gflops,
            runs: times.count, isa: peak.isa, threads: peak.threads)
    }
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}
