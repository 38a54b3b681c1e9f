import LumenRuntime

/// diffusers' `UNet2DConditionModel` for the Stable Diffusion 1.x/2.x family, built from its
/// config: time embedding, down blocks (ResNet + cross-attention transformer), a mid block, up
/// blocks joined to the down path by skip connections, and the output head.
public struct UNet2DConditionModel {
    public let config: UNet2DConditionConfig

    public init(config: UNet2DConditionConfig) throws {
        let unsupported: [(Bool, String)] = [
            (config.classEmbedType != nil, "class_embed_type"),
            (config.additionEmbedType == .textTime && (config.additionTimeEmbedDim == nil || config.projectionClassEmbeddingsInputDim == nil),
             "addition_embed_type 'text_time' without addition_time_embed_dim and projection_class_embeddings_input_dim"),
            (config.resnetTimeScaleShift != "default", "resnet_time_scale_shift '\(config.resnetTimeScaleShift)'"),
            (config.onlyCrossAttention, "only_cross_attention"),
            (config.dualCrossAttention, "dual_cross_attention"),
            (config.downBlockTypes.count != config.blockOutChannels.count || config.upBlockTypes.count != config.blockOutChannels.count,
             "block type lists whose length differs from block_out_channels"),
        ]
        for (bad, what) in unsupported where bad {
            throw LumenError.invalidArgument(op: "UNet2DConditionModel", detail: "\(what) is not supported yet")
        }
        if let mid = config.midBlockType, mid != "UNetMidBlock2DCrossAttn" {
            throw LumenError.invalidArgument(op: "UNet2DConditionModel", detail: "mid block type '\(mid)' is not supported")
        }
        self.config = config
    }

    /// Emits the noise (or v) prediction for `sample` [B, C, H, W], `timestep` [B] (f32) and
    /// `context` [B, L, cross_attention_dim]. With `maxTensorBytes` (an executor's binding limit),
    /// the feed-forwards whose intermediates would exceed it compute in chunks of tokens.
    /// SDXL's UNets (`addition_embed_type` "text_time") also take `added`: the pooled text
    /// embedding [B, D] and the time ids [B, 6] (original size, crop top-left, target size).
    /// With `residuals` (a ControlNet's, `ControlNetModel.build`), each skip of the down path and
    /// the mid block's output have them added, as diffusers' `down_block_additional_residuals` and
    /// `mid_block_additional_residual` do.
    public func build(_ graph: Graph, sample: Value, timestep: Value, context: Value, weights: WeightStore,
                      added: (textEmbeds: Value, timeIds: Value)? = nil, timestepCond: Value? = nil, maxTensorBytes: Int? = nil,
                      residuals: (down: [Value], mid: Value)? = nil) throws -> Value {
        let c = config
        let m = Module(graph: graph, weights: weights, maxTensorBytes: maxTensorBytes)
        let ch = c.blockOutChannels
        try checkInputs(sample: sample, timestep: timestep, context: context)
        let (tembAct, tembDim) = try embedding(graph, m, timestep: timestep, sample: sample, added: added, timestepCond: timestepCond)
        var h = c.centerInputSample ? try graph.affine(sample, multiplier: 2, addend: -1) : sample
        h = try m.conv(h, "conv_in", in: c.inChannels, out: ch[0], kernel: c.convInKernel)
        var skips: [Value]
        (h, skips) = try encoder(graph, m, h, context: context, tembAct: tembAct, tembDim: tembDim)
        if let residuals {
            guard residuals.down.count == skips.count else {
                throw LumenError.shapeMismatch(op: "UNet2DConditionModel", detail: "\(residuals.down.count) down residuals for \(skips.count) skips")
            }
            skips = try zip(skips, residuals.down).map { try graph.add($0, $1) }
            h = try graph.add(h, residuals.mid)
        }
        return try decoder(graph, m, h, skips: skips, context: context, tembAct: tembAct, tembDim: tembDim)
    }

    /// The shapes of the skips (one residual each) and of the mid block's output for latents of
    /// height × width: what a ControlNet's residuals must be.
    public func residualShapes(batch: Int, height: Int, width: Int) -> (down: [Shape], mid: Shape) {
        let ch = config.blockOutChannels
        var (h, w) = (height, width)
        var down: [Shape] = [[batch, ch[0], h, w]]
        for i in ch.indices {
            down += Array(repeating: Shape([batch, ch[i], h, w]), count: config.layersPerBlock)
            if i < ch.count - 1 {
                // 3×3, stride 2, padding 1 (diffusers' downsample_padding): ⌈n / 2⌉.
                (h, w) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1)
                down.append([batch, ch[i], h, w])
            }
        }
        return (down, [batch, ch[ch.count - 1], h, w])
    }

    private func checkInputs(sample: Value, timestep: Value, context: Value) throws {
        let c = config
        guard sample.shape.rank == 4, sample.shape[1] == c.inChannels else {
            throw LumenError.shapeMismatch(op: "UNet2DConditionModel", detail: "sample \(sample.shape); expected [B, \(c.inChannels), H, W]")
        }
        guard context.shape.rank == 3, context.shape[0] == sample.shape[0], context.shape[2] == c.crossAttentionDim else {
            throw LumenError.shapeMismatch(op: "UNet2DConditionModel", detail: "context \(context.shape); expected [\(sample.shape[0]), L, \(c.crossAttentionDim)]")
        }
        guard timestep.shape == [sample.shape[0]] else {
            throw LumenError.shapeMismatch(op: "UNet2DConditionModel", detail: "timestep \(timestep.shape); expected [\(sample.shape[0])]")
        }
    }

    /// The time embedding (plus SDXL's added text-and-size embedding), after SiLU as every ResNet
    /// takes it, and its width.
    func embedding(_ graph: Graph, _ m: Module, timestep: Value, sample: Value,
                   added: (textEmbeds: Value, timeIds: Value)?, timestepCond: Value? = nil) throws -> (Value, Int) {
        let c = config, ch = c.blockOutChannels
        // Time embedding.
        let tembDim = ch[0] * 4
        var tProj = try graph.timestepEmbedding(timestep, TimestepEmbeddingParameters(
            dim: ch[0], flipSinToCos: c.flipSinToCos, downscaleFreqShift: c.freqShift))
        if let d = c.timeCondProjDim {
            // LCM-distilled UNets: the guidance embedding [B, d], projected without bias, joins the
            // sinusoidal timestep features before linear_1.
            guard let cond = timestepCond, cond.shape == [sample.shape[0], d] else {
                throw LumenError.shapeMismatch(op: "UNet2DConditionModel", detail: "a UNet with time_cond_proj_dim \(d) needs timestep_cond [\(sample.shape[0]), \(d)]; got \(timestepCond.map { "\($0.shape)" } ?? "none")")
            }
            tProj = try graph.add(tProj, try m.linear(cond, "time_embedding.cond_proj", in: d, out: ch[0], bias: false))
        }
        var emb = try m.linear(tProj, "time_embedding.linear_1", in: ch[0], out: tembDim)
        emb = try m.linear(try graph.silu(emb), "time_embedding.linear_2", in: tembDim, out: tembDim)
        if c.additionEmbedType == .textTime, let timeDim = c.additionTimeEmbedDim, let inDim = c.projectionClassEmbeddingsInputDim {
            let b = sample.shape[0]
            // k time ids: 6 for SDXL base (size, crop, target size), 5 for the refiner (size, crop, aesthetic score).
            let k = added?.timeIds.shape.rank == 2 ? added!.timeIds.shape[1] : 0
            guard let added, k > 0, added.timeIds.shape[0] == b, added.textEmbeds.shape.rank == 2, added.textEmbeds.shape[0] == b,
                  added.textEmbeds.shape[1] + k * timeDim == inDim else {
                throw LumenError.shapeMismatch(
                    op: "UNet2DConditionModel", detail: "an SDXL UNet needs text_embeds [\(b), P] and time_ids [\(b), k] with P + k × \(timeDim) = \(inDim) "
                        + "(base: k = 6, refiner: k = 5); got " + (added.map { "\($0.textEmbeds.shape) and \($0.timeIds.shape)" } ?? "none"))
            }
            let ids = try graph.reshape(added.timeIds, [b * k])
            let timeEmb = try graph.timestepEmbedding(ids, TimestepEmbeddingParameters(
                dim: timeDim, flipSinToCos: c.flipSinToCos, downscaleFreqShift: c.freqShift))
            let addIn = try graph.concat([added.textEmbeds, try graph.reshape(timeEmb, [b, k * timeDim])], axis: 1)
            var aug = try m.linear(addIn, "add_embedding.linear_1", in: inDim, out: tembDim)
            aug = try m.linear(try graph.silu(aug), "add_embedding.linear_2", in: tembDim, out: tembDim)
            emb = try graph.add(emb, aug)
        }
        return (try graph.silu(emb), tembDim)  // every ResNet applies SiLU to the embedding first
    }

    /// The down path and the mid block from the output of `conv_in`: the mid block's output and
    /// the skips (conv_in's output, then each ResNet/attention's and each down-sampler's).
    func encoder(_ graph: Graph, _ m: Module, _ input: Value, context: Value, tembAct: Value, tembDim: Int) throws -> (Value, [Value]) {
        let c = config, ch = c.blockOutChannels
        let groups = c.normNumGroups, eps = c.normEps
        var h = input
        var skips = [h]

        // Down path.
        for (i, type) in c.downBlockTypes.enumerated() {
            let b = m.child("down_blocks.\(i)")
            let inC = i == 0 ? ch[0] : ch[i - 1], outC = ch[i]
            for j in 0..<c.layersPerBlock {
                h = try b.child("resnets.\(j)").resnet(h, inChannels: j == 0 ? inC : outC, outChannels: outC, temb: tembAct,
                                                       tembChannels: tembDim, groups: groups, eps: eps)
                if type == .crossAttention {
                    h = try b.child("attentions.\(j)").spatialTransformer(
                        h, context: context, channels: outC, heads: c.heads(block: i),
                        layers: c.transformerLayersPerBlock.value(i), groups: groups, contextDim: c.crossAttentionDim,
                        linearProjection: c.useLinearProjection)
                }
                skips.append(h)
            }
            if i < ch.count - 1 {
                h = try b.conv(h, "downsamplers.0.conv", in: outC, out: outC, kernel: 3, stride: 2, padding: c.downsamplePadding)
                skips.append(h)
            }
        }

        // Mid block.
        if c.midBlockType != nil {
            let mid = m.child("mid_block"), top = ch[ch.count - 1]
            h = try mid.child("resnets.0").resnet(h, inChannels: top, outChannels: top, temb: tembAct, tembChannels: tembDim, groups: groups, eps: eps)
            h = try mid.child("attentions.0").spatialTransformer(
                h, context: context, channels: top, heads: c.heads(block: ch.count - 1),
                layers: c.transformerLayersPerBlock.value(ch.count - 1), groups: groups,
                contextDim: c.crossAttentionDim, linearProjection: c.useLinearProjection)
            h = try mid.child("resnets.1").resnet(h, inChannels: top, outChannels: top, temb: tembAct, tembChannels: tembDim, groups: groups, eps: eps)
        }
        return (h, skips)
    }

    /// The up path joined to `skips`, and the output head.
    private func decoder(_ graph: Graph, _ m: Module, _ input: Value, skips: [Value], context: Value,
                         tembAct: Value, tembDim: Int) throws -> Value {
        let c = config, ch = c.blockOutChannels
        let groups = c.normNumGroups, eps = c.normEps
        var h = input, skips = skips

        // Up path: each up block consumes layers_per_block + 1 skips, last in first out.
        let reversed = Array(ch.reversed())
        var outC = reversed[0]
        for (i, type) in c.upBlockTypes.enumerated() {
            let b = m.child("up_blocks.\(i)")
            let prevC = outC
            outC = reversed[i]
            let inC = reversed[min(i + 1, ch.count - 1)]
            let block = ch.count - 1 - i  // the down block this one mirrors (per-block settings reversed)
            let layers = c.layersPerBlock + 1
            for j in 0..<layers {
                let skip = skips.removeLast()
                let skipC = j == layers - 1 ? inC : outC
                let resIn = j == 0 ? prevC : outC
                h = try graph.concat([h, skip], axis: 1)
                h = try b.child("resnets.\(j)").resnet(h, inChannels: resIn + skipC, outChannels: outC, temb: tembAct,
                                                       tembChannels: tembDim, groups: groups, eps: eps)
                if type == .crossAttention {
                    h = try b.child("attentions.\(j)").spatialTransformer(
                        h, context: context, channels: outC, heads: c.heads(block: block),
                        layers: c.transformerLayersPerBlock.value(block), groups: groups,
                        contextDim: c.crossAttentionDim, linearProjection: c.useLinearProjection)
                }
            }
            if i < ch.count - 1 {
                // Upsample to the size of the skip it meets next (2× unless the latent size is not
                // divisible by the down-sampling factor, as diffusers' `upsample_size`).
                let target = skips.last!.shape
                h = try graph.resizeNearest(h, height: target[2], width: target[3])
                h = try b.conv(h, "upsamplers.0.conv", in: outC, out: outC, kernel: 3)
            }
        }

        h = try m.groupNorm(h, "conv_norm_out", channels: ch[0], groups: groups, eps: eps, silu: true)
        return try m.conv(h, "conv_out", in: ch[0], out: c.outChannels, kernel: c.convOutKernel)
    }
}
