import LumenCPU
import LumenRuntime
import LumenVulkan
import XCTest

/// Group-norm, layer-norm, softmax and fused attention against the CPU executor. Statistics are
/// f32 on both sides but reduced in different orders: 1e-4 covers rows of a few thousand.
final class NormAndAttentionTests: VulkanTestCase {
    func testGroupNorm() throws {
        for (shape, groups) in [([2, 12, 7, 9], 4), ([1, 64, 16, 16], 32), ([3, 6, 5], 3), ([1, 320, 8, 8], 32)] as [([Int], Int)] {
            for (affine, silu) in [(true, true), (true, false), (false, false), (false, true)] {
                let c = shape[1]
                let x = try random(Shape(shape), seed: 20, scale: 3)
                let gamma = try random([c], dtype: .f16, seed: 21), beta = try random([c], seed: 22)
                try compare("group-norm \(shape) affine \(affine) silu \(silu)", atol: 1e-4, rtol: 1e-4, f16: TOL16, inputs: ["x": x]) { g in
                    let xi = try g.input("x", shape: Shape(shape))
                    return [try g.groupNorm(xi, groups: groups, weight: affine ? try g.constant(gamma) : nil,
                                            bias: affine ? try g.constant(beta) : nil, eps: 1e-5, silu: silu)]
                }
            }
        }
    }

    func testLayerNormAndSoftmax() throws {
        // Rows up to 4096 take the one-subgroup-per-row kernels, longer ones the workgroup kernels.
        for shape in [[13, 77], [2, 5, 320], [3, 1000], [1, 1], [2, 5000]] as [[Int]] {
            let d = shape.last!
            let x = try random(Shape(shape), seed: 23, scale: 4)
            let gamma = try random([d], dtype: .bf16, seed: 24), beta = try random([d], seed: 25)
            try compare("layer-norm \(shape)", atol: 1e-4, rtol: 1e-4, f16: TOL16, inputs: ["x": x]) { g in
                let xi = try g.input("x", shape: Shape(shape))
                return [try g.layerNorm(xi, weight: try g.constant(gamma), bias: try g.constant(beta)), try g.layerNorm(xi)]
            }
            try compare("softmax \(shape)", atol: 1e-6, rtol: 1e-4, f16: TOL16, inputs: ["x": x]) { g in
                [try g.softmax(try g.input("x", shape: Shape(shape)))]
            }
        }
    }

    /// The shared-memory reductions that devices without subgroup arithmetic run.
    func testSharedMemoryReductionFallback() throws {
        let fallback = try VulkanExecutor(validation: true, options: .init(profile: false, poisonActivations: true,
                                                                           forceSharedMemoryReductions: true))
        for shape in [[2, 12, 7, 9], [13, 77], [3, 1000]] as [[Int]] {
            let x = try random(Shape(shape), seed: 29, scale: 3)
            let g = Graph()
            let xi = try g.input("x", shape: Shape(shape))
            let gamma = try g.constant(try random([shape[1]], seed: 30)), beta = try g.constant(try random([shape[1]], seed: 31))
            var outs = [try g.layerNorm(xi), try g.softmax(xi)]
            if shape.count == 4 { outs.append(try g.groupNorm(xi, groups: 4, weight: gamma, bias: beta, silu: true)) }
            let expected = try CPUExecutor(threads: 2).compile(g, outputs: outs).run(["x": x])
            let got = try fallback.compile(g, outputs: outs).run(["x": x])
            for v in outs {
                assertClose(got[v]!.toFloats(), expected[v]!.toFloats(), atol: 1e-4, rtol: 1e-4, "shared-memory reductions \(shape)")
            }
        }
    }

    func testAttention() throws {
        let cases: [(b: Int, lq: Int, lk: Int, heads: Int, dh: Int, causal: Bool)] = [
            (2, 37, 29, 3, 8, false), (1, 70, 70, 2, 40, false), (2, 77, 77, 2, 16, true), (1, 130, 77, 1, 40, false),
            (1, 9, 20, 1, 160, false), (1, 40, 13, 2, 8, true), (1, 65, 65, 1, 64, true), (1, 11, 9, 3, 5, true),
            (2, 33, 33, 2, 6, false), (1, 256, 77, 8, 80, false),
        ]
        // Both kernels on every case (the default picks one by head size).
        let split = try VulkanExecutor(validation: true, options: .init(profile: false, poisonActivations: true, attentionKernel: .split))
        let rows = try VulkanExecutor(validation: true, options: .init(profile: false, poisonActivations: true, attentionKernel: .rows))
        for t in cases {
            let w = t.heads * t.dh
            let q = try random([t.b, t.lq, w], seed: 26), k = try random([t.b, t.lk, w], seed: 27)
            let v = try random([t.b, t.lk, w], seed: 28)
            let build = { (g: Graph) throws -> [Value] in
                [try g.attention(query: try g.input("q", shape: [t.b, t.lq, w]), key: try g.input("k", shape: [t.b, t.lk, w]),
                                 value: try g.input("v", shape: [t.b, t.lk, w]), heads: t.heads, causal: t.causal)]
            }
            try compare("attention \(t)", atol: 1e-4, rtol: 1e-4, f16: TOL16, inputs: ["q": q, "k": k, "v": v], build)
            for (kernel, executor) in [("split", split), ("rows", rows)] {
                let g = Graph()
                let outs = try build(g)
                let expected = try CPUExecutor(threads: 2).compile(g, outputs: outs).run(["q": q, "k": k, "v": v])[outs[0]]!
                let got = try executor.compile(g, outputs: outs).run(["q": q, "k": k, "v": v])[outs[0]]!
                assertClose(got.toFloats(), expected.toFloats(), atol: 1e-4, rtol: 1e-4, "attention \(t) [\(kernel) kernel]")
            }
        }
    }
}
