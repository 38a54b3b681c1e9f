import Dispatch
import Foundation

/// Runs data-parallel loops on the process-wide worker threads (libdispatch's pool, created once
/// and reused by every op), so no op ever creates a thread of its own.
public struct ThreadPool: Sendable {
    /// The number of tasks a loop is split into to use every core: by default one per physical
    /// core this process may run on, within its control group's CPU quota (`CPUTopology`).
    public let threads: Int

    /// The most tasks a loop may be split into: four per online logical CPU (at least 8). More only adds
    /// overhead (libdispatch runs one worker per core whatever the count), and a benchmark that
    /// measures every "thread" in turn would run for minutes.
    public static var maxThreads: Int { max(8, 4 * ProcessInfo.processInfo.activeProcessorCount) }

    /// A thread count from `--threads` (nil: not given), checked to lie in 1…maxThreads.
    public static func check(_ threads: Int?, flag: String = "--threads") throws {
        guard let threads else { return }
        guard (1...maxThreads).contains(threads) else {
            throw ThreadCountError(source: "\(flag) \(threads)", maxThreads: maxThreads)
        }
    }

    /// `LUMEN_THREADS`, when set, checked to be an integer in 1…maxThreads (unchecked, `init`
    /// ignores a value that is not a number and clamps one out of range).
    public static func checkEnvironment() throws {
        guard let value = ProcessInfo.processInfo.environment["LUMEN_THREADS"], !value.isEmpty else { return }
        guard let n = Int(value), (1...maxThreads).contains(n) else {
            throw ThreadCountError(source: "LUMEN_THREADS=\(value)", maxThreads: maxThreads)
        }
    }

    public init(threads: Int? = nil) {
        let env = ProcessInfo.processInfo.environment["LUMEN_THREADS"].flatMap(Int.init)
        self.threads = min(max(1, threads ?? env ?? CPUTopology.current.defaultThreads), Self.maxThreads)
    }

    /// Calls `body(i)` for every i in 0..<count, spread over the pool; returns when all are done.
    public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
        if count <= 0 { return }
        if count == 1 || threads == 1 {
            for i in 0..<count { body(i) }
            return
        }
        DispatchQueue.concurrentPerform(iterations: count, execute: body)
    }

    /// Splits 0..<total into about `threads * grain` contiguous ranges and runs them in parallel.
    public func parallelRanges(_ total: Int, minChunk: Int = 4096, _ body: (Range<Int>) -> Void) {
        if total <= 0 { return }
        let chunks = max(1, min(threads * 4, total / max(minChunk, 1)))
        parallelFor(chunks) { c in
            body((total * c / chunks)..<(total * (c + 1) / chunks))
        }
    }
}

/// A thread count outside 1…`ThreadPool.maxThreads`, naming where it came from.
public struct ThreadCountError: Error, Sendable, Equatable, CustomStringConvertible {
    public let source: String
    public let maxThreads: Int

    public var description: String {
        "\(source): expected a thread count from 1 to \(maxThreads) (4 per logical CPU, at least 8)"
    }
}
