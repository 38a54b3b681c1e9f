import Foundation
import LumenRuntime

/// What the model benchmarks (SD 1.5, SDXL, ControlNet) share around their timed phases: each
/// phase is logged as it starts, its result reported as soon as it is measured, and a phase that
/// fails is logged and skipped, the first failure thrown once the others have run (a VAE that
/// cannot bind its tensors leaves the UNet's figures).
final class PhaseRunner {
    let log: (String) -> Void
    let onResult: ((SD15ModelBenchmark.Result) -> Void)?
    private(set) var results: [SD15ModelBenchmark.Result] = []
    private var firstError: Error? = nil
    private var rng = SystemRandomNumberGenerator()

    init(log: @escaping (String) -> Void, onResult: ((SD15ModelBenchmark.Result) -> Void)?) {
        self.log = log
        self.onResult = onResult
    }

    func attempt(_ phase: String, _ body: () throws -> SD15ModelBenchmark.Result) {
        log(phase)
        do {
            let r = try body()
            results.append(r)
            onResult?(r)
        } catch {
            log("\(phase) failed: \(error)")
            if firstError == nil { firstError = error }
        }
    }

    /// Uniform values in [-1, 1] (the phases' inputs: latents, contexts, embeddings).
    func random(_ shape: Shape) throws -> Tensor {
        try Tensor(shape: shape, values: (0..<shape.count).map { _ in Float.random(in: -1...1, using: &rng) })
    }

    /// The results, or the first failure.
    func finish() throws -> [SD15ModelBenchmark.Result] {
        if let firstError { throw firstError }
        return results
    }
}
