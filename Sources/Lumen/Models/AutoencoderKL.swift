import LumenRuntime

/// diffusers' `AutoencoderKL`: the encoder (image → latent distribution) for img2img and the
/// decoder (latents → image) for generation.
public struct AutoencoderKL {
    public let config: AutoencoderKLConfig

    public init(config: AutoencoderKLConfig) { self.config = config }

    private let eps: Float = 1e-6

    /// Image [B, 3, H, W] in [-1, 1] → (mean, logvar) of the latent distribution, each
    /// [B, latent, H/f, W/f]; logvar clamped to [-30, 20] as diffusers does.
    public func encode(_ graph: Graph, image: Value, weights: WeightStore) throws -> (mean: Value, logvar: Value) {
        let parts = try graph.chunk(try encodeMoments(graph, image: image, weights: weights), parts: 2, axis: 1)
        return (parts[0], try graph.clamp(parts[1], min: -30, max: 20))
    }

    /// The encoder's (and quant_conv's) output [B, 2·latent, h, w]: the mean, then the
    /// unclamped log-variance (what diffusers' tiled encoding blends).
    public func encodeMoments(_ graph: Graph, image: Value, weights: WeightStore) throws -> Value {
        let c = config, ch = c.blockOutChannels, groups = c.normNumGroups
        let m = Module(graph: graph, weights: weights, prefix: "encoder")
        var h = try m.conv(image, "conv_in", in: c.inChannels, out: ch[0], kernel: 3)
        for i in 0..<ch.count {
            let b = m.child("down_blocks.\(i)")
            let inC = i == 0 ? ch[0] : ch[i - 1]
            for j in 0..<c.layersPerBlock {
                h = try b.child("resnets.\(j)").resnet(h, inChannels: j == 0 ? inC : ch[i], outChannels: ch[i], temb: nil,
                                                       tembChannels: 0, groups: groups, eps: eps)
            }
            if i < ch.count - 1 {
                // Downsample2D with padding 0 pads right and bottom by one, then convolves with stride 2.
                h = try graph.pad(h, top: 0, bottom: 1, left: 0, right: 1)
                h = try b.conv(h, "downsamplers.0.conv", in: ch[i], out: ch[i], kernel: 3, stride: 2, padding: 0)
            }
        }
        h = try midBlock(h, m.child("mid_block"), channels: ch[ch.count - 1])
        h = try m.groupNorm(h, "conv_norm_out", channels: ch[ch.count - 1], groups: groups, eps: eps, silu: true)
        h = try m.conv(h, "conv_out", in: ch[ch.count - 1], out: 2 * c.latentChannels, kernel: 3)
        if c.useQuantConv {
            h = try Module(graph: graph, weights: weights).conv(h, "quant_conv", in: 2 * c.latentChannels, out: 2 * c.latentChannels, kernel: 1)
        }
        return h
    }

    /// Latents [B, latent, h, w] (already divided by the scaling factor) → image [B, 3, h·f, w·f].
    public func decode(_ graph: Graph, latents: Value, weights: WeightStore) throws -> Value {
        let c = config, ch = c.blockOutChannels, groups = c.normNumGroups
        let root = Module(graph: graph, weights: weights)
        var z = latents
        if c.usePostQuantConv {
            z = try root.conv(z, "post_quant_conv", in: c.latentChannels, out: c.latentChannels, kernel: 1)
        }
        let m = root.child("decoder")
        let reversed = Array(ch.reversed())
        var h = try m.conv(z, "conv_in", in: c.latentChannels, out: reversed[0], kernel: 3)
        h = try midBlock(h, m.child("mid_block"), channels: reversed[0])
        var outC = reversed[0]
        for i in 0..<reversed.count {
            let b = m.child("up_blocks.\(i)")
            let prevC = outC
            outC = reversed[i]
            for j in 0...c.layersPerBlock {
                h = try b.child("resnets.\(j)").resnet(h, inChannels: j == 0 ? prevC : outC, outChannels: outC, temb: nil,
                                                       tembChannels: 0, groups: groups, eps: eps)
            }
            if i < reversed.count - 1 {
                h = try graph.upsampleNearest2x(h)
                h = try b.conv(h, "upsamplers.0.conv", in: outC, out: outC, kernel: 3)
            }
        }
        h = try m.groupNorm(h, "conv_norm_out", channels: ch[0], groups: groups, eps: eps, silu: true)
        return try m.conv(h, "conv_out", in: ch[0], out: c.outChannels, kernel: 3)
    }

    /// `UNetMidBlock2D`: ResNet, single-head self-attention over all pixels, ResNet.
    private func midBlock(_ x: Value, _ m: Module, channels: Int) throws -> Value {
        let groups = config.normNumGroups
        var h = try m.child("resnets.0").resnet(x, inChannels: channels, outChannels: channels, temb: nil, tembChannels: 0, groups: groups, eps: eps)
        if config.midBlockAddAttention {
            let a = m.child("attentions.0")
            let (height, width) = (h.shape[2], h.shape[3])
            var t = try a.toTokens(try a.groupNorm(h, "group_norm", channels: channels, groups: groups, eps: eps))
            let q = try a.linear(t, "to_q", in: channels, out: channels)
            let k = try a.linear(t, "to_k", in: channels, out: channels)
            let v = try a.linear(t, "to_v", in: channels, out: channels)
            t = try a.linear(try m.graph.attention(query: q, key: k, value: v, heads: 1), "to_out.0", in: channels, out: channels)
            h = try m.graph.add(try a.toImage(t, height: height, width: width), h)
        }
        return try m.child("resnets.1").resnet(h, inChannels: channels, outChannels: channels, temb: nil, tembChannels: 0, groups: groups, eps: eps)
    }
}
