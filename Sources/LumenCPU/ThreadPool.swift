import Dispatch
import Foundation

/// Runs data-parallel loops on the process-wide worker threads (libdispatch's pool, created once
/// and reused by every op), so no op ever creates a thread of its own.
public struct ThreadPool: Sendable {
    /// The number of tasks a loop is split into to use every core.
    public let threads: Int

    public init(threads: Int? = nil) {
        let env = ProcessInfo.processInfo.environment["LUMEN_THREADS"].flatMap(Int.init)
        self.threads = max(1, threads ?? env ?? ProcessInfo.processInfo.activeProcessorCount)
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
