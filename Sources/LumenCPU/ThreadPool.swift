import Dispatch
import Foundation
import Synchronization

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

    /// How many tasks the matrix products and convolutions are split into per thread. 1 (one
    /// equal share each) where the cores run at one speed; on a hybrid CPU (fast and slow cores,
    /// `CPUTopology.hybrid`) 4, so that the threads on the faster cores take more of the shares
    /// instead of waiting for the slower ones. `LUMEN_TASKS_PER_THREAD` (1–16) sets it. Where the
    /// cores are alike, 2 tasks per thread measured within the noise and 4 cost 4–8% (SD 1.5 UNet
    /// steps at 512 and 256 on this project's Zen 5): every extra task packs its own operands.
    public let tasksPerThread: Int

    public init(threads: Int? = nil, tasksPerThread: Int? = nil) {
        let env = ProcessInfo.processInfo.environment
        self.threads = min(max(1, threads ?? env["LUMEN_THREADS"].flatMap(Int.init) ?? CPUTopology.current.defaultThreads),
                           Self.maxThreads)
        let perThread = tasksPerThread ?? env["LUMEN_TASKS_PER_THREAD"].flatMap(Int.init)
            ?? (CPUTopology.current.hybrid ? 4 : 1)
        self.tasksPerThread = min(max(1, perThread), 16)
    }

    /// The tasks a matrix product or convolution is split into: `tasksPerThread` per thread.
    public var productTasks: Int { threads * tasksPerThread }

    /// Calls `body(i)` for every i in 0..<count, spread over the pool, never more than `threads`
    /// at once; returns when all are done. With more tasks than threads, each of `threads` workers
    /// takes the next task as it finishes one, so a worker on a faster or less loaded core takes
    /// more of them. (`concurrentPerform` alone runs up to one body per CPU the process may use,
    /// whatever `threads` says, so `--threads 2` on a 16-CPU machine let the norms and attention,
    /// split into 4–8 tasks per thread, run on up to 16 workers, and in a container with a CPU
    /// quota that many workers contend for the quota.)
    public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
        if count <= 0 { return }
        if count == 1 || threads == 1 {
            for i in 0..<count { body(i) }
            return
        }
        if count <= threads {
            DispatchQueue.concurrentPerform(iterations: count, execute: body)
            return
        }
        let next = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            while true {
                let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
                if i >= count { break }
                body(i)
            }
        }
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
