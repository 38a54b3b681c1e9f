import LumenRuntime
import LumenVulkan
import XCTest

/// Whole blocks on both executors. Errors compound through a few GEMMs and norms: 1e-3
/// (absolute and relative) is the stated tolerance for a block at unit-scale activations.
final class GraphTests: VulkanTestCase {
    /// A Stable Diffusion style transformer block: self-attention, cross-attention and a GEGLU
    /// feed-forward, each behind a layer norm with a residual, f16 weights.
    func testTransformerBlock() throws {
        let (b, l, d, heads, lc, dc) = (2, 24, 64, 4, 7, 48)
        var seed: UInt64 = 100
        func w(_ shape: Shape, scale: Float = 0.125) throws -> Tensor {
            seed += 1
            return try random(shape, dtype: .f16, seed: seed, scale: scale)
        }
        let x = try random([b, l, d], seed: 1), ctx = try random([b, lc, dc], seed: 2)
        let weights = try (0..<20).map { i -> Tensor in
            switch i {
            case 0...3: return try w([d, d])             // self q, k, v, out
            case 4: return try w([d, d])                 // cross q
            case 5, 6: return try w([d, dc])             // cross k, v
            case 7: return try w([d, d])                 // cross out
            case 8: return try w([8 * d, d])             // ff in (GEGLU)
            case 9: return try w([d, 4 * d])            // ff out
            default: return try w([d], scale: 1)         // norms and biases
            }
        }
        try compare("transformer block", atol: 1e-3, rtol: 1e-3, f16: TOL16, inputs: ["x": x, "ctx": ctx]) { g in
            let c = try weights.map { try g.constant($0) }
            let xi = try g.input("x", shape: [b, l, d]), ci = try g.input("ctx", shape: [b, lc, dc])
            var h = try g.layerNorm(xi, weight: c[10], bias: c[11])
            var a = try g.attention(query: try g.linear(h, weight: c[0]), key: try g.linear(h, weight: c[1]),
                                    value: try g.linear(h, weight: c[2]), heads: heads)
            var y = try g.add(xi, try g.linear(a, weight: c[3], bias: c[12]))
            h = try g.layerNorm(y, weight: c[13], bias: c[14])
            a = try g.attention(query: try g.linear(h, weight: c[4]), key: try g.linear(ci, weight: c[5]),
                                value: try g.linear(ci, weight: c[6]), heads: heads)
            y = try g.add(y, try g.linear(a, weight: c[7], bias: c[15]))
            h = try g.layerNorm(y, weight: c[16], bias: c[17])
            let ff = try g.linear(try g.geglu(try g.linear(h, weight: c[8])), weight: c[9], bias: c[18])
            return [try g.add(y, ff)]
        }
    }

    /// A ResNet block with a timestep embedding, as in the UNet: group-norm + SiLU, 3×3 conv,
    /// the projected embedding added per channel, again, and a 1×1 shortcut; then a stride-2
    /// downsampling conv and a nearest upsampling.
    func testResNetBlock() throws {
        let (n, cin, cout, hw, tdim) = (2, 32, 48, 12, 64)
        let x = try random([n, cin, hw, hw], seed: 3), t = try Tensor([981, 14])
        var seed: UInt64 = 200
        func w(_ shape: Shape, dtype: DType = .f16, scale: Float = 0.1) throws -> Tensor {
            seed += 1
            return try random(shape, dtype: dtype, seed: seed, scale: scale)
        }
        let conv1 = try w([cout, cin, 3, 3]), conv2 = try w([cout, cout, 3, 3], dtype: .bf16), short = try w([cout, cin, 1, 1])
        let down = try w([cout, cout, 3, 3], dtype: .f32)
        let temb = try w([cout, tdim]), g1 = try w([cin], scale: 1), b1 = try w([cin], scale: 1)
        let g2 = try w([cout], scale: 1), b2 = try w([cout], scale: 1), bias = try w([cout], scale: 1)
        try compare("resnet block", atol: 1e-3, rtol: 1e-3, f16: TOL16, inputs: ["x": x, "t": t]) { g in
            let xi = try g.input("x", shape: [n, cin, hw, hw]), ti = try g.input("t", shape: [2])
            let e = try g.silu(try g.timestepEmbedding(ti, TimestepEmbeddingParameters(dim: tdim)))
            let proj = try g.reshape(try g.linear(e, weight: try g.constant(temb), bias: try g.constant(bias)), [n, cout, 1, 1])
            var h = try g.groupNorm(xi, groups: 8, weight: try g.constant(g1), bias: try g.constant(b1), silu: true)
            h = try g.conv2d(h, weight: try g.constant(conv1), bias: try g.constant(bias), padding: 1)
            h = try g.add(h, proj)
            h = try g.groupNorm(h, groups: 8, weight: try g.constant(g2), bias: try g.constant(b2), silu: true)
            h = try g.conv2d(h, weight: try g.constant(conv2), bias: try g.constant(bias), padding: 1)
            let out = try g.add(try g.conv2d(xi, weight: try g.constant(short)), h)
            let downsampled = try g.conv2d(out, weight: try g.constant(down), stride: 2, padding: 1)
            return [out, try g.upsampleNearest2x(downsampled)]
        }
    }
}
