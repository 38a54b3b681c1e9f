import CLumenCPU
import LumenRuntime

/// Runs graphs on the CPU: every core through a thread pool, SIMD kernels chosen at run time for
/// the instruction set this CPU has (AVX-512, AVX2 or portable code).
public final class CPUExecutor: Executor, @unchecked Sendable {
    public let backendName = "cpu"
    public let pool: ThreadPool

    public init(threads: Int? = nil) {
        pool = ThreadPool(threads: threads)
    }

    /// The instruction set the kernels use ("avx512", "avx2" or "generic").
    public static var instructionSet: String { String(cString: lumen_isa_name(lumen_cpu_isa())) }
    /// The best instruction set this CPU has.
    public static var detectedInstructionSet: String { String(cString: lumen_isa_name(lumen_cpu_detect_isa())) }

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
        try CPUProgram(graph: graph, outputs: outputs, pool: pool)
    }
}
