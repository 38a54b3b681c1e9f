import ArgumentParser
import Foundation
import Lumen
import LumenCPU
import LumenRuntime

/// `lumen-bench taesd`: TAESD's decoder against Stable Diffusion 1.5's VAE decoder on the same
/// latents, both with random f16 weights of the published shapes (TAESD: 64 channels, blocks
/// 3, 3, 3, 1; the VAE: `AutoencoderKLConfig()`), compiled once. The runs alternate (one VAE
/// decode, then TAESD decodes) so that both see the same load on a shared machine; the ratio of
/// each round's medians is the figure, and its median over the rounds is reported.
public struct TAESDBenchCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "taesd", abstract: "Time TAESD's decoder against the SD 1.5 VAE decoder (random weights) on the CPU.")

    @Option(help: "Image side in pixels (a multiple of 8).")
    public var size = 512

    @Option(help: "Rounds: each is one VAE decode and --taesd-runs TAESD decodes.")
    public var rounds = 3

    @Option(name: .customLong("taesd-runs"), help: "TAESD decodes per round (their median is the round's TAESD time).")
    public var taesdRuns = 5

    @Option(help: "A TAESD decoder (folder or .safetensors) to time instead of random weights of TAESD's shape.")
    public var taesd: String?

    @Flag(help: "Print one JSON object.")
    public var json = false

    @Flag(help: "Also profile one run of each decoder per op (kernel seconds by op and by op and shape, on stderr).")
    public var profile = false

    public init() {}

    public func validate() throws {
        guard size >= 8, size % 8 == 0, size <= 4096 else { throw ValidationError("--size \(size): expected a multiple of 8 up to 4096") }
        guard (1...100).contains(rounds), (1...100).contains(taesdRuns) else { throw ValidationError("--rounds and --taesd-runs: expected 1…100") }
    }

    struct Report: Codable {
        let size: Int
        let isa: String
        let threads: Int
        let vae_seconds: [Double]
        let taesd_seconds: [Double]
        let vae_gflop: Double
        let taesd_gflop: Double
        let ratios: [Double]
        let median_ratio: Double
    }

    public func run() throws {
        let executor = CPUExecutor()
        let log: (String) -> Void = { FileHandle.standardError.write(Data("bench: \($0)\n".utf8)) }
        let side = size / 8

        let vaeGraph = Graph()
        let z = try vaeGraph.input("latents", shape: [1, 4, side, side])
        let vaeOut = try AutoencoderKL(config: AutoencoderKLConfig()).decode(vaeGraph, latents: z, weights: RandomWeights(seed: 2))
        let decoder = try taesd.map { try AutoencoderTinyDecoder(path: $0) }
            ?? AutoencoderTinyDecoder(config: .init(), weights: RandomWeights(seed: 5), path: "random TAESD weights")
        let tinyGraph = Graph()
        let x = try tinyGraph.input("latents", shape: [1, 4, side, side])
        let tinyOut = try decoder.build(tinyGraph, clampedLatents: x)
        log("compiling (\(CPUExecutor.instructionSet), \(executor.pool.threads) threads)")
        let vae = try executor.compile(vaeGraph, outputs: [vaeOut])
        let tiny = try executor.compile(tinyGraph, outputs: [tinyOut])

        var state: UInt64 = 0x1234_5678
        let latents = try Tensor(shape: [1, 4, side, side], values: (0..<(4 * side * side)).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: state >> 11) % 2000) / 500 - 2
        })
        let clamped = try AutoencoderTinyDecoder.clamp(latents)
        func seconds(_ body: () throws -> Void) rethrows -> Double {
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        }
        // Warm-up: buffers allocated, weights packed, pages touched.
        _ = try vae.run(["latents": latents])
        _ = try tiny.run(["latents": clamped])
        if profile {
            for (name, graph, program, input) in [("vae", vaeGraph, vae, latents), ("taesd", tinyGraph, tiny, clamped)] {
                guard let cpu = program as? CPUProgram else { continue }
                Self.printProfile(name, graph: graph, program: cpu, steps: try cpu.profile(["latents": input]).steps, log: log)
            }
        }
        var vaeTimes: [Double] = [], tinyTimes: [Double] = [], ratios: [Double] = []
        for round in 1...rounds {
            let v = try seconds { _ = try vae.run(["latents": latents]) }
            var t: [Double] = []
            for _ in 0..<taesdRuns {
                // TAESD as the pipeline runs it: the clamp on the host, then the graph.
                t.append(try seconds { _ = try tiny.run(["latents": try AutoencoderTinyDecoder.clamp(latents)]) })
            }
            let median = t.sorted()[t.count / 2]
            vaeTimes.append(v)
            tinyTimes.append(median)
            ratios.append(v / median)
            log(String(format: "round %d: VAE %.3f s, TAESD %.4f s (median of %d), %.1f×", round, v, median, taesdRuns, v / median))
        }
        let report = Report(size: size, isa: CPUExecutor.instructionSet, threads: executor.pool.threads, vae_seconds: vaeTimes,
                            taesd_seconds: tinyTimes, vae_gflop: vaeGraph.flops(for: [vaeOut]) / 1e9,
                            taesd_gflop: tinyGraph.flops(for: [tinyOut]) / 1e9, ratios: ratios,
                            median_ratio: ratios.sorted()[ratios.count / 2])
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            let v = vaeTimes.sorted()[vaeTimes.count / 2], t = tinyTimes.sorted()[tinyTimes.count / 2]
            print("decoder  size  isa     threads  seconds (median)  GFLOP   GFLOP/s")
            print(String(format: "vae      %4d  %-7@ %7d  %16.3f  %6.0f  %8.1f", size, report.isa, report.threads, v, report.vae_gflop, report.vae_gflop / v))
            print(String(format: "taesd    %4d  %-7@ %7d  %16.4f  %6.0f  %8.1f", size, report.isa, report.threads, t, report.taesd_gflop, report.taesd_gflop / t))
            print(String(format: "TAESD is %.1f× faster (median of %d rounds' ratios: %@)", report.median_ratio, rounds,
                         ratios.map { String(format: "%.1f", $0) }.joined(separator: ", ")))
        }
    }

    /// Kernel seconds of one profiled run, summed by op and by op and output shape (the largest first).
    static func printProfile(_ name: String, graph: Graph, program: CPUProgram, steps: [(name: String, seconds: Double)],
                             log: (String) -> Void) {
        let total = steps.reduce(0) { $0 + $1.seconds }
        var byOp: [String: Double] = [:], byShape: [String: (seconds: Double, count: Int, flops: Double)] = [:]
        func dims(_ v: Int) -> String { graph.nodes[v].shape.dims.map(String.init).joined(separator: "x") }
        for ((stepName, seconds), node) in zip(steps, program.stepNodeIDs) {
            byOp[stepName, default: 0] += seconds
            let n = graph.nodes[node]
            // Output <- first input, and the weight's shape where there is one (a 3x3 and a 1x1
            // convolution with the same input and output are different kernels).
            let key = "\(stepName) \(dims(node))" + (n.inputs.first.map { " <- " + dims($0) } ?? "")
                + (n.inputs.count > 1 && graph.nodes[n.inputs[1]].shape.rank >= 2 ? " w " + dims(n.inputs[1]) : "")
            let old = byShape[key] ?? (0, 0, 0)
            byShape[key] = (old.seconds + seconds, old.count + 1, old.flops + graph.flops(of: n))
        }
        log(String(format: "profile %@: %.4f s of kernels in %d steps", name, total, steps.count))
        for (op, s) in byOp.sorted(by: { $0.value > $1.value }) {
            log(String(format: "  %-22@ %8.4f s  %5.1f%%", op, s, 100 * s / total))
        }
        // GFLOP/s counts a convolution's direct FLOPs (Winograd runs fewer, so it can exceed the peak).
        for (key, v) in byShape.sorted(by: { $0.value.seconds > $1.value.seconds }).prefix(32) {
            let rate = v.flops > 0 ? String(format: "%7.1f GFLOP/s", v.flops / v.seconds * 1e-9) : String(repeating: " ", count: 14)
            log(String(format: "  %8.4f s  %5.1f%%  %2d×  %@  %@", v.seconds, 100 * v.seconds / total, v.count, rate, key))
        }
    }
}
