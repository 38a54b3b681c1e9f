import LumenRuntime

/// The building blocks the UNet and the VAE share, with diffusers' names and semantics.
extension Module {
    /// diffusers' `ResnetBlock2D` (pre-norm, SiLU, optional time-embedding projection, 1×1
    /// shortcut when the channel count changes).
    func resnet(_ x: Value, inChannels: Int, outChannels: Int, temb: Value?, tembChannels: Int, groups: Int,
                eps: Float) throws -> Value {
        var h = try groupNorm(x, "norm1", channels: inChannels, groups: groups, eps: eps, silu: true)
        h = try conv(h, "conv1", in: inChannels, out: outChannels, kernel: 3)
        if let temb {
            let t = try linear(temb, "time_emb_proj", in: tembChannels, out: outChannels)  // temb is already SiLU'd
            h = try graph.add(h, try graph.reshape(t, [t.shape[0], outChannels, 1, 1]))
        }
        h = try groupNorm(h, "norm2", channels: outChannels, groups: groups, eps: eps, silu: true)
        h = try conv(h, "conv2", in: outChannels, out: outChannels, kernel: 3)
        let shortcut = inChannels == outChannels ? x : try conv(x, "conv_shortcut", in: inChannels, out: outChannels, kernel: 1)
        return try graph.add(shortcut, h)
    }

    /// [B, C, H, W] → [B, H·W, C]
    func toTokens(_ x: Value) throws -> Value {
        let s = x.shape
        return try graph.permute(try graph.reshape(x, [s[0], s[1], s[2] * s[3]]), [0, 2, 1])
    }

    /// [B, H·W, C] → [B, C, H, W]
    func toImage(_ x: Value, height: Int, width: Int) throws -> Value {
        let s = x.shape
        return try graph.reshape(try graph.permute(x, [0, 2, 1]), [s[0], s[2], height, width])
    }

    /// diffusers' `Attention` for the UNet: q/k/v projections without bias, output with bias.
    func attention(_ x: Value, context: Value?, queryDim: Int, contextDim: Int, heads: Int, headDim: Int) throws -> Value {
        let inner = heads * headDim
        let ctx = context ?? x
        let q = try linear(x, "to_q", in: queryDim, out: inner, bias: false)
        let k = try linear(ctx, "to_k", in: contextDim, out: inner, bias: false)
        let v = try linear(ctx, "to_v", in: contextDim, out: inner, bias: false)
        let o = try graph.attention(query: q, key: k, value: v, heads: heads)
        return try linear(o, "to_out.0", in: inner, out: queryDim)
    }

    /// diffusers' `BasicTransformerBlock`: self-attention, cross-attention and a GEGLU
    /// feed-forward, each pre-normed and residual.
    func transformerBlock(_ x: Value, context: Value, dim: Int, contextDim: Int, heads: Int, headDim: Int) throws -> Value {
        var h = try layerNorm(x, "norm1", dim: dim, eps: 1e-5)
        var y = try graph.add(try child("attn1").attention(h, context: nil, queryDim: dim, contextDim: dim, heads: heads, headDim: headDim), x)
        h = try layerNorm(y, "norm2", dim: dim, eps: 1e-5)
        y = try graph.add(try child("attn2").attention(h, context: context, queryDim: dim, contextDim: contextDim, heads: heads, headDim: headDim), y)
        h = try layerNorm(y, "norm3", dim: dim, eps: 1e-5)
        return try graph.add(try feedForward(h, dim: dim), y)
    }

    /// diffusers' `FeedForward` with GEGLU: [B, T, dim] → [B, T, 4·dim] → [B, T, dim]. Its widest
    /// intermediate, [B, T, 8·dim], is the UNet's largest tensor at large sizes (335 MB at
    /// 1024×1024 with guidance); where that exceeds `maxTensorBytes`, the tokens go through in
    /// chunks that fit and are joined again (diffusers' `enable_forward_chunking`; each token's
    /// output is computed exactly as unchunked).
    func feedForward(_ x: Value, dim: Int) throws -> Value {
        let inner = dim * 4
        let (batch, tokens) = (x.shape[0], x.shape[1])
        func ff(_ x: Value) throws -> Value {
            try linear(try graph.geglu(try linear(x, "ff.net.0.proj", in: dim, out: 2 * inner)), "ff.net.2", in: inner, out: dim)
        }
        let perToken = batch * 2 * inner * 4
        guard let limit = maxTensorBytes, perToken * tokens > limit else { return try ff(x) }
        let chunk = max(1, limit / perToken)
        let parts = try stride(from: 0, to: tokens, by: chunk).map { start in
            try ff(try graph.slice(x, axis: 1, start: start, length: min(chunk, tokens - start)))
        }
        return try graph.concat(parts, axis: 1)
    }

    /// diffusers' `Transformer2DModel` (continuous input): group norm, projection in (1×1
    /// convolution, or linear with `use_linear_projection`), transformer blocks, projection out,
    /// residual.
    func spatialTransformer(_ x: Value, context: Value, channels: Int, heads: Int, layers: Int, groups: Int,
                            contextDim: Int, linearProjection: Bool) throws -> Value {
        let (height, width) = (x.shape[2], x.shape[3])
        let headDim = channels / heads, inner = heads * headDim
        var h = try groupNorm(x, "norm", channels: channels, groups: groups, eps: 1e-6)
        if linearProjection {
            h = try linear(try toTokens(h), "proj_in", in: channels, out: inner)
        } else {
            h = try toTokens(try conv(h, "proj_in", in: channels, out: inner, kernel: 1))
        }
        for i in 0..<layers {
            h = try child("transformer_blocks.\(i)").transformerBlock(h, context: context, dim: inner, contextDim: contextDim,
                                                                       heads: heads, headDim: headDim)
        }
        if linearProjection {
            h = try toImage(try linear(h, "proj_out", in: inner, out: channels), height: height, width: width)
        } else {
            h = try conv(try toImage(h, height: height, width: width), "proj_out", in: inner, out: channels, kernel: 1)
        }
        return try graph.add(h, x)
    }
}
