import Foundation
import LumenRuntime

/// One kernel at one shape: a graph holding just that op, and the work it does.
public struct KernelBenchmark: Sendable {
    /// The op family, as `--op` selects it: matmul, conv2d, attention, group-norm, …
    public let op: String
    /// The shape in the op's own notation ("4096x1280x320" is M×N×K for a GEMM).
    public let shape: String
    /// Floating-point operations of one run (an FMA counts 2); 0 for memory-bound ops.
    public let flops: Double
    /// Bytes a run must move at least (each input read once, each output written once).
    public let bytes: Double
    /// True when the op's rate is judged by bandwidth (GB/s) rather than GFLOP/s.
    public let memoryBound: Bool
    /// Builds the graph, returning the output to compute and the inputs to feed.
    public let build: @Sendable () throws -> (Graph, Value, [String: Tensor])
}

/// What one benchmark measured.
public struct KernelMeasurement: Sendable, Codable {
    public let op: String
    public let backend: String
    public let shape: String
    /// Median seconds per run.
    public let seconds: Double
    public let gflops: Double
    public let gbps: Double
    /// Achieved rate over the machine's peak (FMA peak for compute-bound ops, measured copy
    /// bandwidth for memory-bound ones).
    public let peak_fraction: Double
    public let runs: Int
    public let isa: String
    public let threads: Int
    /// With `--check`: max |result - cpu| / max |cpu| against the CPU executor on the same inputs.
    public var rel_error: Double? = nil
}

/// The machine's ceilings, measured on this machine rather than looked up.
public struct MachinePeak: Sendable, Codable {
    /// f32 FMA rate of all threads running a register-only FMA loop at once.
    public let gflops: Double
    /// Bandwidth of a multi-threaded copy of a buffer far larger than the caches (read + write).
    public let gbps: Double
    public let threads: Int
    public let isa: String
}

/// The shapes Stable Diffusion 1.5 runs at 512×512 (64×64 latents, batch 1 unless noted; "2x"
/// in a shape is the batch of 2 that classifier-free guidance runs).
public enum SD15Shapes {
    /// `small`: the same list at a quarter of the side (16×16 latents; the VAE's levels at an
    /// eighth, from 64×64), for a quick pass on a slow device (lavapipe) that checks every kernel.
    public static func all(small: Bool = false) -> [KernelBenchmark] {
        let l = small ? 16 : 64, img = small ? 64 : 512, t = l * l
        return [
            linear(m: t, n: 320, k: 320),         // attention projections at 64×64
            linear(m: t, n: 1280, k: 320),        // feed-forward in (GEGLU half) at 64×64
            linear(m: t, n: 320, k: 1280),        // feed-forward out at 64×64
            linear(m: 154, n: 768, k: 768),       // CLIP, batch 2 × 77 tokens
            linear(m: 2 * t, n: 320, k: 320),     // attention projections, batch 2
            conv(c: 320, o: 320, hw: l, k: 3),
            conv(c: 320, o: 320, hw: l, k: 3, batch: 2),
            conv(c: 640, o: 640, hw: l / 2, k: 3),
            conv(c: 1280, o: 1280, hw: l / 8, k: 3),
            conv(c: 320, o: 320, hw: l, k: 1),
            conv(c: 128, o: 128, hw: img, k: 3),  // VAE decoder, last level at 512×512
            conv(c: 256, o: 256, hw: img / 2, k: 3),
            conv(c: 512, o: 512, hw: img / 4, k: 3),
            attention(lq: t, lk: t, dh: 40, heads: 8),
            attention(lq: t, lk: t, dh: 40, heads: 8, batch: 2),
            attention(lq: t, lk: 77, dh: 40, heads: 8),
            attention(lq: t, lk: 77, dh: 40, heads: 8, batch: 2),
            attention(lq: t / 4, lk: t / 4, dh: 80, heads: 8),
            groupNorm(c: 320, hw: l, silu: false),
            groupNorm(c: 320, hw: l, silu: true),
            layerNorm(rows: t, d: 320),
            elementwise(.gelu, count: t * 1280),
            elementwise(.silu, count: 320 * t),
        ]
    }

    static func random(_ shape: Shape, dtype: DType = .f32, seed: UInt64) throws -> Tensor {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        let values = (0..<shape.count).map { _ -> Float in
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Float(Int64(bitPattern: state % 2_000_001) - 1_000_000) / 1_000_000
        }
        return try Tensor(shape: shape, values: values, dtype: dtype)
    }

    public static func linear(m: Int, n: Int, k: Int) -> KernelBenchmark {
        KernelBenchmark(op: "matmul", shape: "\(m)x\(n)x\(k)", flops: 2.0 * Double(m * n * k),
                        bytes: Double(m * k * 4 + n * k * 2 + m * n * 4), memoryBound: false) {
            let g = Graph()
            let x = try g.input("x", shape: [m, k])
            let y = try g.linear(x, weight: try g.constant(random([n, k], dtype: .f16, seed: 1)),
                                 bias: try g.constant(random([n], seed: 2)))
            return (g, y, ["x": try random([m, k], seed: 3)])
        }
    }

    public static func conv(c: Int, o: Int, hw: Int, k: Int, batch b: Int = 1) -> KernelBenchmark {
        KernelBenchmark(op: "conv2d", shape: (b > 1 ? "\(b)x" : "") + "\(c)->\(o)@\(hw)x\(hw)k\(k)",
                        flops: 2.0 * Double(b * o * hw * hw * c * k * k),
                        bytes: Double(b * c * hw * hw * 4 + o * c * k * k * 2 + b * o * hw * hw * 4), memoryBound: false) {
            let g = Graph()
            let x = try g.input("x", shape: [b, c, hw, hw])
            let y = try g.conv2d(x, weight: try g.constant(random([o, c, k, k], dtype: .f16, seed: 1)),
                                 bias: try g.constant(random([o], seed: 2)), stride: 1, padding: k / 2)
            return (g, y, ["x": try random([b, c, hw, hw], seed: 3)])
        }
    }

    public static func attention(lq: Int, lk: Int, dh: Int, heads: Int, batch b: Int = 1) -> KernelBenchmark {
        let w = dh * heads
        return KernelBenchmark(op: "attention", shape: (b > 1 ? "\(b)x" : "") + "\(lq)x\(lk)x\(dh)x\(heads)h",
                               flops: 4.0 * Double(b * heads * lq * lk * dh),
                               bytes: Double(b * (2 * lq + 2 * lk) * w * 4), memoryBound: false) {
            let g = Graph()
            let q = try g.input("q", shape: [b, lq, w]), k = try g.input("k", shape: [b, lk, w]), v = try g.input("v", shape: [b, lk, w])
            let y = try g.attention(query: q, key: k, value: v, heads: heads)
            return (g, y, ["q": try random([b, lq, w], seed: 1), "k": try random([b, lk, w], seed: 2),
                           "v": try random([b, lk, w], seed: 3)])
        }
    }

    public static func groupNorm(c: Int, hw: Int, silu: Bool) -> KernelBenchmark {
        let count = c * hw * hw
        return KernelBenchmark(op: silu ? "group-norm-silu" : "group-norm", shape: "\(c)x\(hw)x\(hw)", flops: 0,
                               bytes: Double(2 * count * 4), memoryBound: true) {
            let g = Graph()
            let x = try g.input("x", shape: [1, c, hw, hw])
            let y = try g.groupNorm(x, groups: 32, weight: try g.constant(random([c], dtype: .f16, seed: 1)),
                                    bias: try g.constant(random([c], dtype: .f16, seed: 2)), eps: 1e-5, silu: silu)
            return (g, y, ["x": try random([1, c, hw, hw], seed: 3)])
        }
    }

    public static func layerNorm(rows: Int, d: Int) -> KernelBenchmark {
        KernelBenchmark(op: "layer-norm", shape: "\(rows)x\(d)", flops: 0, bytes: Double(2 * rows * d * 4), memoryBound: true) {
            let g = Graph()
            let x = try g.input("x", shape: [rows, d])
            let y = try g.layerNorm(x, weight: try g.constant(random([d], seed: 1)), bias: try g.constant(random([d], seed: 2)))
            return (g, y, ["x": try random([rows, d], seed: 3)])
        }
    }

    public static func elementwise(_ op: UnaryOp, count: Int) -> KernelBenchmark {
        KernelBenchmark(op: op.rawValue, shape: "\(count)", flops: 0, bytes: Double(2 * count * 4), memoryBound: true) {
            let g = Graph()
            let x = try g.input("x", shape: [count])
            return (g, try g.unary(op, x), ["x": try random([count], seed: 1)])
        }
    }
}
