import Foundation
import LumenCPU
import LumenRuntime
import XCTest

/// The pool runs every task once, never more than its threads at a time, and the products'
/// split into tasks leaves the results unchanged.
final class ThreadPoolTests: XCTestCase {
    /// Every index once; at most `threads` bodies running at any moment, with more tasks than
    /// threads too (each body spins a little so that the workers overlap). On a machine with
    /// no more CPUs than threads (CI's two), libdispatch alone would also stay within the bound;
    /// with more CPUs, `concurrentPerform(iterations: count)` ran up to one body per CPU.
    func testEveryTaskOnceAndAtMostThreadsAtOnce() {
        for (threads, count) in [(2, 37), (3, 100), (2, 2), (4, 3), (2, 1), (1, 9)] {
            let pool = ThreadPool(threads: threads, tasksPerThread: 1)
            let lock = NSLock()
            var seen = [Int](repeating: 0, count: count)
            var running = 0, most = 0
            pool.parallelFor(count) { i in
                lock.lock()
                seen[i] += 1
                running += 1
                most = max(most, running)
                lock.unlock()
                let start = DispatchTime.now().uptimeNanoseconds
                while DispatchTime.now().uptimeNanoseconds - start < 200_000 {}
                lock.lock()
                running -= 1
                lock.unlock()
            }
            XCTAssertEqual(seen, [Int](repeating: 1, count: count), "threads \(threads), \(count) tasks")
            XCTAssertLessThanOrEqual(most, threads, "threads \(threads), \(count) tasks")
        }
    }

    func testTasksPerThread() {
        XCTAssertEqual(ThreadPool(threads: 3, tasksPerThread: 4).productTasks, 12)
        XCTAssertEqual(ThreadPool(threads: 2, tasksPerThread: 0).tasksPerThread, 1)
        XCTAssertEqual(ThreadPool(threads: 2, tasksPerThread: 99).tasksPerThread, 16)
        // The default: 4 on a hybrid CPU, 1 elsewhere, unless LUMEN_TASKS_PER_THREAD says.
        let saved = ProcessInfo.processInfo.environment["LUMEN_TASKS_PER_THREAD"]
        defer {
            if let saved { setenv("LUMEN_TASKS_PER_THREAD", saved, 1) } else { unsetenv("LUMEN_TASKS_PER_THREAD") }
        }
        unsetenv("LUMEN_TASKS_PER_THREAD")
        XCTAssertEqual(ThreadPool(threads: 2).tasksPerThread, CPUTopology.current.hybrid ? 4 : 1)
        setenv("LUMEN_TASKS_PER_THREAD", "3", 1)
        XCTAssertEqual(ThreadPool(threads: 2).tasksPerThread, 3)
        XCTAssertEqual(CPUExecutor(threads: 2).pool.productTasks, 6)
        setenv("LUMEN_TASKS_PER_THREAD", "many", 1)
        XCTAssertEqual(ThreadPool(threads: 2).tasksPerThread, CPUTopology.current.hybrid ? 4 : 1)
    }

    /// A linear layer (f16 weights), 3×3 convolutions (64 channels, where AVX2 takes F(2×2)
    /// Winograd; 24 channels, direct), a 1×1 convolution, a batched matmul and attention: the
    /// same bits whether each product is one task per thread or several, and with another thread
    /// count (the products split rows and columns, never the sum over K).
    func testProductSplitLeavesResultsUnchanged() throws {
        let g = Graph()
        let x = try g.input("x", shape: [2, 64, 12, 12])
        let (w3, _) = try randomTensor([64, 64, 3, 3], dtype: .f16, seed: 1, scale: 0.1)
        let (b3, _) = try randomTensor([64], seed: 2)
        let c1 = try g.conv2d(x, weight: try g.constant(w3), bias: try g.constant(b3), stride: 1, padding: 1)
        let (ws, _) = try randomTensor([24, 64, 3, 3], dtype: .f16, seed: 3, scale: 0.1)
        let c2 = try g.conv2d(c1, weight: try g.constant(ws), stride: 1, padding: 1)
        let (w1, _) = try randomTensor([40, 24, 1, 1], dtype: .f16, seed: 4, scale: 0.2)
        let c3 = try g.conv2d(c2, weight: try g.constant(w1))
        let tokens = try g.reshape(c3, [2, 40, 144])
        let (wl, _) = try randomTensor([96, 144], dtype: .f16, seed: 5, scale: 0.1)
        let lin = try g.linear(tokens, weight: try g.constant(wl))               // [2, 40, 96]
        let mm = try g.matmul(lin, lin, transposeB: true)                         // [2, 40, 40]
        let att = try g.attention(query: lin, key: lin, value: lin, heads: 4)     // [2, 40, 96]
        let (xt, _) = try randomTensor([2, 64, 12, 12], seed: 6)
        let outputs = [c1, c3, lin, mm, att]
        func run(threads: Int, tasksPerThread: Int) throws -> [[Float]] {
            let program = try CPUExecutor(threads: threads, tasksPerThread: tasksPerThread).compile(g, outputs: outputs)
            let result = try program.run(["x": xt])
            return outputs.map { result[$0]!.toFloats() }
        }
        let base = try run(threads: 2, tasksPerThread: 1)
        for (threads, perThread) in [(2, 3), (3, 4), (1, 5)] {
            let other = try run(threads: threads, tasksPerThread: perThread)
            for (k, name) in ["conv 3×3 64", "conv 1×1", "linear", "matmul", "attention"].enumerated() {
                XCTAssertEqual(other[k], base[k], "\(name), \(threads) threads × \(perThread) tasks")
            }
        }
    }
}
