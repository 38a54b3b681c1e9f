import CLumenCPU
import LumenRuntime

/// Runs graphs on the CPU: every core through a thread pool, SIMD kernels chosen at run time for
/// the instruction set this CPU has (AVX-512, AVX2 or portable code).
public final class CPUExecutor: Executor, @unchecked Sendable {
    public let backendName = "cpu"
    public let backendKind = BackendKind.cpu
    public let pool: ThreadPool
    /// What the GEMM family (linear layers with more than 4 rows, convolutions with at least
    /// 192 output channels, activation matmuls) computes in; nil leaves the process-wide setting alone (`LUMEN_CPU_BF16=1`, off
    /// by default).
    public let computePrecision: CPUComputePrecision?

    /// `computePrecision: .bf16` rounds both GEMM operands to bfloat16 and multiplies them with
    /// AVX-512 BF16 dot products (f32 accumulation) where the CPU has them (see
    /// `bf16Supported`), and computes in f32 elsewhere. The setting is process-wide in the
    /// kernels: each program of this executor applies it for the duration of each run and then
    /// restores the previous setting, so programs of executors with different precisions should
    /// not run at the same time.
    /// `tasksPerThread`: how many tasks each matrix product and convolution is split into per
    /// thread (nil: `ThreadPool`'s default, 4 on a hybrid CPU and 1 elsewhere); the results are
    /// the same whatever the split.
    public init(threads: Int? = nil, tasksPerThread: Int? = nil, computePrecision: CPUComputePrecision? = nil) {
        pool = ThreadPool(threads: threads, tasksPerThread: tasksPerThread)
        self.computePrecision = computePrecision
    }

    /// Whether the kernels can compute in bf16 now: the CPU has AVX512_BF16 and the instruction set
    /// in force is AVX-512 (not lowered by `LUMEN_CPU_ISA` or `setInstructionSet`).
    public static var bf16Supported: Bool { lumen_cpu_bf16_supported() != 0 }
    /// Whether the kernels compute in bf16 now.
    public static var bf16Active: Bool { lumen_cpu_bf16() != 0 }

    /// The instruction set the kernels use ("avx512", "avx2" or "generic").
    public static var instructionSet: String { String(cString: lumen_isa_name(lumen_cpu_isa())) }
    /// The best instruction set this CPU has.
    public static var detectedInstructionSet: String { String(cString: lumen_isa_name(lumen_cpu_detect_isa())) }
    /// The per-core L2 size the kernels' blocking is chosen for (CPUID, or `LUMEN_CPU_L2_KIB`).
    public static var l2CacheBytes: Int { Int(lumen_cpu_l2_bytes()) }

    /// Lowers the instruction set the kernels use (process-wide), for testing each code path
    /// on one machine; returns the level in force. Names: "generic", "avx2", "avx512".
    @discardableResult
    public static func setInstructionSet(_ name: String) throws -> String {
        let levels = ["generic": LUMEN_ISA_GENERIC, "avx2": LUMEN_ISA_AVX2, "avx512": LUMEN_ISA_AVX512]
        guard let level = levels[name] else {
            throw LumenError.invalidArgument(op: "setInstructionSet", detail: "unknown instruction set '\(name)'; expected generic, avx2 or avx512")
        }
        return String(cString: lumen_isa_name(lumen_cpu_set_isa(Int32(level.rawValue))))
    }

    public func compile(_ graph: Graph, outputs: [Value]) throws -> any Program {
        try CPUProgram(graph: graph, outputs: outputs, pool: pool, computePrecision: computePrecision)
    }

    /// Exactly what `compile` will allocate for activations.
    public func plannedActivationBytes(_ graph: Graph, outputs: [Value]) -> Int {
        ActivationPlan(graph: graph, outputs: outputs, worksInPlace: CPUProgram.worksInPlace).totalBytes
            + CPUProgram.winogradScratchBytes(graph, needed: GraphLiveness(graph: graph, outputs: outputs).needed)
    }
}

/// The arithmetic of the CPU GEMM family.
public enum CPUComputePrecision: String, Sendable, CaseIterable {
    /// f32 operands and products (the default).
    case f32
    /// Operands rounded to bfloat16 (nearest even) while packing, AVX-512 BF16 dot products,
    /// f32 accumulation; falls back to f32 where the CPU lacks AVX512_BF16.
    case bf16
}
