import ArgumentParser
import Foundation
import Lumen

/// The environment variables Lumen reads, checked once per command: a value the runtime would
/// ignore (LUMEN_THREADS=eight) or could not honour is an error naming the variable and what it
/// takes, rather than a setting that silently does nothing.
enum EnvironmentCheck {
    static func validate(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        try ThreadPool.checkEnvironment()  // LUMEN_THREADS
        if let isa = environment["LUMEN_CPU_ISA"] {
            let valid = ["generic", "avx2", "avx512"]
            guard valid.contains(isa) else {
                throw ValidationError("LUMEN_CPU_ISA=\(isa): expected one of \(valid.joined(separator: ", ")) "
                                      + "(it lowers the CPU kernels' instruction set; unset it to use the best the CPU has)")
            }
        }
    }
}
