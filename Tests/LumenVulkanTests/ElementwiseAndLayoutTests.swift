import LumenRuntime
import LumenVulkan
import XCTest

/// Elementwise and data-movement ops against the CPU executor.
final class ElementwiseAndLayoutTests: VulkanTestCase {
    func testUnaryAffineClampGeglu() throws {
        let shape: Shape = [3, 7, 46]
        let x = try random(shape, seed: 30, scale: 6)
        // GELU's erf is a polynomial approximation (|error| < 1.5e-7) on the GPU: 1e-5 absolute.
        try compare("unary", atol: 1e-5, rtol: 1e-5, f16: TOL16, inputs: ["x": x]) { g in
            let xi = try g.input("x", shape: shape)
            return try UnaryOp.allCases.map { try g.unary($0, xi) }
                + [try g.affine(xi, multiplier: 0.18215, addend: -0.5), try g.clamp(xi, min: -1.5, max: 2.25), try g.geglu(xi)]
        }
        // SD's GEGLU width (2·1280) over a 64-token slice.
        let y = try random([64, 2560], seed: 31, scale: 4)
        try compare("geglu SD", atol: 1e-5, rtol: 1e-5, f16: TOL16, inputs: ["x": y]) { g in
            [try g.geglu(try g.input("x", shape: [64, 2560]))]
        }
    }

    func testBinaryBroadcasting() throws {
        let cases: [([Int], [Int])] = [
            ([2, 3, 4, 5], [2, 3, 4, 5]), ([2, 3, 4, 5], [3, 1, 1]), ([4, 5], [2, 3, 4, 5]), ([2, 1, 4, 1], [1, 3, 1, 5]),
            ([7], [1]), ([2, 320, 6, 6], [2, 320, 1, 1]), ([2, 3, 4, 5, 6], [3, 1, 5, 1]),
        ]
        for (sa, sb) in cases {
            let a = try random(Shape(sa), seed: 32), b = try random(Shape(sb), seed: 33)
            try compare("binary \(sa) \(sb)", atol: 1e-6, rtol: 1e-6, f16: TOL16, inputs: ["a": a, "b": b]) { g in
                let ai = try g.input("a", shape: Shape(sa)), bi = try g.input("b", shape: Shape(sb))
                return try BinaryOp.allCases.map { try g.binary($0, ai, bi) }
            }
        }
        // A constant operand stored as f16 (a bias from a checkpoint).
        let a = try random([2, 8, 3, 3], seed: 34), c = try random([8, 1, 1], dtype: .f16, seed: 35)
        try compare("binary f16 constant", atol: 1e-6, rtol: 1e-6, f16: TOL16, inputs: ["a": a]) { g in
            [try g.add(try g.input("a", shape: [2, 8, 3, 3]), try g.constant(c))]
        }
    }

    func testConcatSlicePermuteReshape() throws {
        let a = try random([2, 3, 5, 4], seed: 36), b = try random([2, 6, 5, 4], seed: 37)
        try compare("layout", atol: 0, rtol: 0, f16: nil, inputs: ["a": a, "b": b]) { g in
            let ai = try g.input("a", shape: [2, 3, 5, 4]), bi = try g.input("b", shape: [2, 6, 5, 4])
            let cat1 = try g.concat([ai, bi, ai], axis: 1)
            let cat3 = try g.concat([ai, try g.slice(bi, axis: 1, start: 2, length: 3)], axis: -1)
            let p = try g.permute(bi, [0, 2, 3, 1])
            let p2 = try g.permute(try g.reshape(bi, [2, 6, 20]), [2, 0, 1])
            let s = try g.slice(try g.reshape(cat1, [2, 12, 20]), axis: 2, start: 7, length: 9)
            let view = try g.reshape(try g.affine(p, multiplier: 2), [-1])
            return [cat1, cat3, p, p2, s, view, try g.slice(ai, axis: 0, start: 1, length: 1)]
        }
    }

    func testUpsampleResizePad() throws {
        let x = try random([2, 3, 5, 7], seed: 38)
        try compare("upsample/resize/pad", atol: 0, rtol: 0, f16: nil, inputs: ["x": x]) { g in
            let xi = try g.input("x", shape: [2, 3, 5, 7])
            return [try g.upsampleNearest2x(xi), try g.resizeNearest(xi, height: 8, width: 3),
                    try g.resizeNearest(xi, height: 13, width: 14), try g.pad(xi, top: 1, bottom: 2, left: 0, right: 3)]
        }
    }

    func testTimestepEmbedding() throws {
        let t = try Tensor([999, 500.5, 1, 0, 37])
        for p in [TimestepEmbeddingParameters(dim: 320), TimestepEmbeddingParameters(dim: 33, flipSinToCos: false, downscaleFreqShift: 1),
                  TimestepEmbeddingParameters(dim: 256, flipSinToCos: true, downscaleFreqShift: 0, scale: 2, maxPeriod: 5000)] {
            // sin/cos of arguments up to ~2000 after range reduction: 2e-5 absolute.
            try compare("timestep embedding \(p)", atol: 2e-5, rtol: 0, f16: TOL16, inputs: ["t": t]) { g in
                [try g.timestepEmbedding(try g.input("t", shape: [5]), p)]
            }
        }
    }

    func testEmbeddingAllTableTypes() throws {
        let ids = try Tensor(shape: [2, 7], indices: [0, 5, 48, 3, 3, 12, 1, 49, 0, 2, 22, 7, 8, 9])
        for dtype in [DType.f32, .f16, .bf16] {
            let table = try random([50, 33], dtype: dtype, seed: 39)
            try compare("embedding \(dtype)", atol: 0, rtol: 0, f16: nil, inputs: ["ids": ids]) { g in
                [try g.embedding(try g.input("ids", shape: [2, 7], dtype: .i32), table: try g.constant(table))]
            }
        }
    }
}
