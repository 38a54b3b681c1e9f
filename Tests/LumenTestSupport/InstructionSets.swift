import LumenCPU

#if canImport(Glibc)
import Glibc
#endif

/// The instruction sets this CPU can run, lowest first, capped by `LUMEN_CPU_ISA` as the kernels
/// are. Kernel tests run on each of them, so a machine with AVX-512 also exercises the AVX2 and
/// portable paths that other machines take.
public let testedInstructionSets: [String] = {
    let all = ["generic", "avx2", "avx512"]
    let best = CPUExecutor.detectedInstructionSet
    var sets = Array(all.prefix(through: all.firstIndex(of: best) ?? 0))
    if let cap = getenv("LUMEN_CPU_ISA").map({ String(cString: $0) }), let i = sets.firstIndex(of: cap) {
        sets = Array(sets.prefix(through: i))
    }
    return sets
}()

/// The instruction sets whole-model and pipeline tests run on: every vector path this CPU has
/// (AVX2, the path of most CPUs people own, and AVX-512 where present), or the portable one on a
/// CPU without AVX2. The portable path is checked op by op against float64 in LumenCPUTests.
public let modelInstructionSets: [String] = {
    let vector = testedInstructionSets.filter { $0 != "generic" }
    return vector.isEmpty ? testedInstructionSets : vector
}()

/// Runs `body` once per instruction set in `sets` (default: every one this CPU has) with the
/// kernels lowered to it, then restores the level in force before.
public func forEachInstructionSet(_ sets: [String] = testedInstructionSets, _ body: (String) throws -> Void) rethrows {
    let start = CPUExecutor.instructionSet
    defer { _ = try? CPUExecutor.setInstructionSet(start) }
    for isa in sets {
        let set = try! CPUExecutor.setInstructionSet(isa)
        precondition(set == isa, "could not select \(isa)")
        print("instruction set: \(isa)")  // so that a failure in the log can be told by its path
        try body(isa)
    }
}
