import LumenRuntime

/// The memory a request will take, known before any work: per stage the weights it reads, the
/// activations its program holds and the host-side staging of its inputs and outputs; the peak
/// under the pipeline's program-retention policy; the budget it was held against; and what was
/// tiled and why. `Pipeline.memoryPlan(for:)` makes it, `generate` follows it (and refuses a
/// request whose plan does not fit before the first step), `lumen generate --dry-run` prints it.
public struct MemoryPlan: Sendable, Codable, CustomStringConvertible {
    public struct Stage: Sendable, Codable {
        /// "text encoding", "image encoding", "denoising", "decoding".
        public let name: String
        /// Bytes of the weight files the stage reads (resident once read).
        public let weights: Int
        /// Activation bytes of the stage's compiled program(s): the largest tile's when tiled;
        /// 0 when the program is already compiled and held.
        public let activations: Int
        /// Host arrays the stage keeps: latents, embeddings, decoded images.
        public let staging: Int
        /// How the stage runs: "whole" or the tiling, and why.
        public let how: String
    }

    public let stages: [Stage]
    /// Resident before the request: the process, its libraries, model headers and anything the
    /// pipeline already holds.
    public let baseline: Int
    /// The largest resident total the request reaches.
    public let peak: Int
    public let budget: MemoryBudget
    /// The VAE tiles, when the decoder or encoder runs tiled.
    public let decodeTiles: VAETileLayout?
    public let encodeTiles: VAETileLayout?
    /// One line per decision (tiling, chunking, retention) with its reason.
    public let decisions: [String]

    public init(stages: [Stage], baseline: Int, peak: Int, budget: MemoryBudget, decodeTiles: VAETileLayout?,
                encodeTiles: VAETileLayout?, decisions: [String]) {
        self.stages = stages
        self.baseline = baseline
        self.peak = peak
        self.budget = budget
        self.decodeTiles = decodeTiles
        self.encodeTiles = encodeTiles
        self.decisions = decisions
        fits = peak <= budget.bytes
    }

    /// Whether the peak is within the budget.
    public let fits: Bool

    public var description: String {
        func mb(_ b: Int) -> String { MemoryBudget.format(b) }
        var lines = ["memory plan (peak \(mb(peak)) of a \(budget) budget\(fits ? "" : ": DOES NOT FIT"))",
                     "  baseline (process, libraries, model headers): \(mb(baseline))"]
        for s in stages {
            lines.append("  \(s.name): weights \(mb(s.weights)), activations \(mb(s.activations)), staging \(mb(s.staging)); \(s.how)")
        }
        lines += decisions.map { "  " + $0 }
        return lines.joined(separator: "\n")
    }
}

extension SafetensorsWeights {
    /// Elements of the tensors this store reads (those under its scope, EMA copies left out).
    var elementCount: Int {
        var total = 0
        for f in files {
            for (key, e) in f.entries {
                if let scope, !key.hasPrefix(scope) { continue }
                if key.hasPrefix("model_ema.") { continue }
                total += e.shape.count
            }
        }
        return total
    }

    /// Bytes of the tensors this store reads (those under its scope, EMA copies left out).
    var fileBytes: Int {
        var total = 0
        for f in files {
            for (key, e) in f.entries {
                if let scope, !key.hasPrefix(scope) { continue }
                if key.hasPrefix("model_ema.") { continue }
                total += e.end - e.begin
            }
        }
        return total
    }
}
