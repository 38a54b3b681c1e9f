import LumenRuntime
import LumenVulkan
import XCTest

/// Linear, matmul and conv2d against the CPU executor. GEMM tolerances: the two executors sum in
/// different orders, so errors grow with K (≈ K · 2⁻²⁴ · Σ|terms|); 2e-4 absolute covers K ≤ 1000
/// at unit-scale inputs with an order of magnitude to spare.
final class GemmAndConvTests: VulkanTestCase {
    func testLinearOddSizesAllWeightTypes() throws {
        for dtype in [DType.f32, .f16, .bf16] {
            for (m, k, n) in [(37, 53, 29), (2, 19, 70), (1, 1, 1)] {
                for hasBias in [true, false] {
                    let x = try random([m, k], seed: 1)
                    let w = try random([n, k], dtype: dtype, seed: 2), b = try random([n], dtype: dtype, seed: 3)
                    try compare("linear \(dtype) \(m)x\(k)x\(n) bias \(hasBias)", atol: 2e-4, rtol: 1e-4, f16: TOL16, inputs: ["x": x]) { g in
                        let xi = try g.input("x", shape: [m, k])
                        return [try g.linear(xi, weight: try g.constant(w), bias: hasBias ? try g.constant(b) : nil)]
                    }
                }
            }
        }
    }

    func testLinearSDShapes() throws {
        // CLIP's 77-token projection and a batched [2, 64, 320] feed-forward input.
        for (shape, n) in [([1, 77, 768], 768), ([2, 64, 320], 1280)] as [([Int], Int)] {
            let k = shape.last!
            let x = try random(Shape(shape), seed: 4), w = try random([n, k], dtype: .f16, seed: 5, scale: 0.05)
            try compare("linear \(shape)x\(n)", atol: 2e-4, rtol: 1e-4, f16: TOL16, inputs: ["x": x]) { g in
                [try g.linear(try g.input("x", shape: Shape(shape)), weight: try g.constant(w))]
            }
        }
    }

    func testMatmulTransposesAndBroadcasting() throws {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a: Shape = ta ? [2, 3, 19, 17] : [2, 3, 17, 19]
            let b: Shape = tb ? [23, 19] : [19, 23]
            let x = try random(a, seed: 6), y = try random(b, seed: 7)
            try compare("matmul ta \(ta) tb \(tb)", atol: 1e-4, rtol: 1e-4, f16: TOL16, inputs: ["a": x, "b": y]) { g in
                [try g.matmul(try g.input("a", shape: a), try g.input("b", shape: b), transposeA: ta, transposeB: tb, alpha: 0.37)]
            }
        }
        // Broadcast of a batch dimension in the middle: [2, 1, 5, 8] · [3, 8, 6].
        let x = try random([2, 1, 5, 8], seed: 8), y = try random([3, 8, 6], seed: 9)
        try compare("matmul broadcast", atol: 1e-4, rtol: 1e-4, f16: TOL16, inputs: ["a": x, "b": y]) { g in
            [try g.matmul(try g.input("a", shape: [2, 1, 5, 8]), try g.input("b", shape: [3, 8, 6]))]
        }
        // Attention scores at an SD-like head shape: [2·8, 64, 40] · [2·8, 64, 40]ᵀ.
        let q = try random([16, 64, 40], seed: 10), k = try random([16, 64, 40], seed: 11)
        try compare("matmul scores", atol: 1e-4, rtol: 1e-4, f16: TOL16, inputs: ["q": q, "k": k]) { g in
            [try g.matmul(try g.input("q", shape: [16, 64, 40]), try g.input("k", shape: [16, 64, 40]), transposeB: true, alpha: 0.158)]
        }
    }

    func testConv2dOddSizes() throws {
        let cases: [(n: Int, c: Int, h: Int, w: Int, o: Int, k: Int, s: Int, p: Int)] = [
            (2, 5, 11, 13, 7, 3, 1, 1), (1, 3, 9, 7, 4, 3, 2, 1), (2, 6, 5, 5, 9, 1, 1, 0), (1, 4, 8, 10, 3, 3, 1, 0),
        ]
        for dtype in [DType.f32, .f16, .bf16] {
            for t in cases {
                let x = try random([t.n, t.c, t.h, t.w], seed: 12)
                let w = try random([t.o, t.c, t.k, t.k], dtype: dtype, seed: 13), b = try random([t.o], seed: 14)
                try compare("conv2d \(dtype) \(t)", atol: 2e-4, rtol: 1e-4, f16: TOL16, inputs: ["x": x]) { g in
                    [try g.conv2d(try g.input("x", shape: [t.n, t.c, t.h, t.w]), weight: try g.constant(w),
                                  bias: try g.constant(b), stride: t.s, padding: t.p)]
                }
            }
        }
    }

    func testConv2dSDShape() throws {
        // A UNet-like 3×3 convolution at reduced size: 64 → 64 channels on 16×16, f16 weights.
        let x = try random([1, 64, 16, 16], seed: 15), w = try random([64, 64, 3, 3], dtype: .f16, seed: 16, scale: 0.05)
        let b = try random([64], dtype: .f16, seed: 17)
        try compare("conv2d 64x16x16", atol: 2e-4, rtol: 1e-4, f16: TOL16, inputs: ["x": x]) { g in
            [try g.conv2d(try g.input("x", shape: [1, 64, 16, 16]), weight: try g.constant(w), bias: try g.constant(b), padding: 1)]
        }
    }
}
