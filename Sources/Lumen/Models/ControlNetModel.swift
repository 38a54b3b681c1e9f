import Foundation
import LumenRuntime

/// A ControlNet's `config.json` (diffusers' `ControlNetModel`): the UNet's encoder-half settings,
/// which decode as a `UNet2DConditionConfig`, and the conditioning image's embedding.
public struct ControlNetConfig: Sendable {
    /// The shared settings (the up-path fields are unused).
    public var unet: UNet2DConditionConfig
    public var conditioningChannels: Int
    public var conditioningEmbeddingOutChannels: [Int]

    struct Extras: Decodable {
        var conditioningChannels: Int?
        var conditioningEmbeddingOutChannels: [Int]?
        var globalPoolConditions: Bool?
        var controlnetConditioningChannelOrder: String?
        enum CodingKeys: String, CodingKey {
            case conditioningChannels = "conditioning_channels"
            case conditioningEmbeddingOutChannels = "conditioning_embedding_out_channels"
            case globalPoolConditions = "global_pool_conditions"
            case controlnetConditioningChannelOrder = "controlnet_conditioning_channel_order"
        }
    }

    init(unet: UNet2DConditionConfig, conditioningChannels: Int, conditioningEmbeddingOutChannels: [Int]) {
        self.unet = unet
        self.conditioningChannels = conditioningChannels
        self.conditioningEmbeddingOutChannels = conditioningEmbeddingOutChannels
    }

    /// Reads `config.json` of a ControlNet folder, refusing what Lumen does not build (global
    /// pooling, BGR channel order) by name.
    public init(path: String) throws {
        var unet = try loadConfig(UNet2DConditionConfig.self, path: path)
        let extras = try loadConfig(Extras.self, path: path)
        if extras.globalPoolConditions == true {
            throw ModelFileError.unsupported(path: path, detail: "global_pool_conditions (shuffle-style ControlNets) is not supported")
        }
        if let order = extras.controlnetConditioningChannelOrder, order != "rgb" {
            throw ModelFileError.unsupported(path: path, detail: "controlnet_conditioning_channel_order \"\(order)\"; supported: rgb")
        }
        // The encoder half has no up path; mirror the down blocks so the UNet's checks hold.
        unet.upBlockTypes = unet.downBlockTypes.reversed().map { $0 == .crossAttention ? .crossAttention : .plain }
        self.unet = unet
        conditioningChannels = extras.conditioningChannels ?? 3
        conditioningEmbeddingOutChannels = extras.conditioningEmbeddingOutChannels ?? [16, 32, 96, 256]
        guard (1...4).contains(conditioningChannels), !conditioningEmbeddingOutChannels.isEmpty,
              conditioningEmbeddingOutChannels.allSatisfy({ (1...4096).contains($0) }) else {
            throw ModelFileError.invalidValue(path: path, field: "conditioning_channels / conditioning_embedding_out_channels",
                                              value: "\(conditioningChannels) / \(conditioningEmbeddingOutChannels)",
                                              expected: "1…4 channels and 1…4096 per embedding block")
        }
    }
}

/// diffusers' `ControlNetModel`: a copy of the UNet's time embedding, `conv_in`, down path and mid
/// block, with the conditioning image embedded (`controlnet_cond_embedding`, down-sampled to the
/// latent grid) and added after `conv_in`; each skip and the mid block's output go through a 1×1
/// convolution (`controlnet_down_blocks.k`, `controlnet_mid_block`) and become the residuals the
/// UNet adds to its own.
public struct ControlNetModel {
    public let config: ControlNetConfig

    public init(config: ControlNetConfig) throws {
        _ = try UNet2DConditionModel(config: config.unet)
        self.config = config
    }

    /// The residuals for `sample` [B, C, h, w], `timestep` [B], `context` [B, L, D] and the
    /// conditioning image `condition` [B, 3, 8h, 8w] in [0, 1]: the down residuals (one per skip of
    /// the UNet) and the mid residual, unscaled.
    public func build(_ graph: Graph, sample: Value, timestep: Value, context: Value, condition: Value, weights: WeightStore,
                      added: (textEmbeds: Value, timeIds: Value)? = nil, maxTensorBytes: Int? = nil) throws -> (down: [Value], mid: Value) {
        let c = config.unet
        let unet = try UNet2DConditionModel(config: c)
        let m = Module(graph: graph, weights: weights, maxTensorBytes: maxTensorBytes)
        let ch = c.blockOutChannels
        let (tembAct, tembDim) = try unet.embedding(graph, m, timestep: timestep, sample: sample, added: added)
        var h = try m.conv(sample, "conv_in", in: c.inChannels, out: ch[0], kernel: c.convInKernel)

        // The conditioning image's embedding: conv, SiLU; (conv, SiLU, strided conv, SiLU) per
        // level; then conv_out to the UNet's first width.
        let e = m.child("controlnet_cond_embedding"), out = config.conditioningEmbeddingOutChannels
        var x = try graph.silu(try e.conv(condition, "conv_in", in: config.conditioningChannels, out: out[0], kernel: 3))
        for i in 0..<(out.count - 1) {
            x = try graph.silu(try e.conv(x, "blocks.\(2 * i)", in: out[i], out: out[i], kernel: 3))
            x = try graph.silu(try e.conv(x, "blocks.\(2 * i + 1)", in: out[i], out: out[i + 1], kernel: 3, stride: 2))
        }
        x = try e.conv(x, "conv_out", in: out[out.count - 1], out: ch[0], kernel: 3)
        guard x.shape == h.shape else {
            throw LumenError.shapeMismatch(op: "ControlNetModel", detail: "the conditioning image embeds to \(x.shape), the latents to \(h.shape): "
                                            + "the control image must be the output image's size")
        }
        h = try graph.add(h, x)

        let (mid, skips) = try unet.encoder(graph, m, h, context: context, tembAct: tembAct, tembDim: tembDim)
        let down = try skips.enumerated().map { k, skip in
            try m.conv(skip, "controlnet_down_blocks.\(k)", in: skip.shape[1], out: skip.shape[1], kernel: 1)
        }
        let top = ch[ch.count - 1]
        return (down, try m.conv(mid, "controlnet_mid_block", in: top, out: top, kernel: 1))
    }
}

/// A ControlNet opened for a pipeline: its config and weights.
public final class ControlNet {
    public let path: String
    public let config: ControlNetConfig
    public let weights: SafetensorsWeights
    /// How the file names its tensors (a folder's are diffusers').
    public let layout: ControlNetLayout

    /// Opens a diffusers `ControlNetModel` folder (`config.json`, `diffusion_pytorch_model[.fp16].safetensors`)
    /// or a single `.safetensors` file, with the original ControlNet names (`control_model.*`, as
    /// lllyasviel's files) or diffusers' (as the SDXL ControlNets are published). A single file has
    /// no config: its shapes are read from the tensors, and what the weights cannot show (the
    /// attention heads) is taken from `model`, the UNet config of the model it guides, whose
    /// encoder a ControlNet copies.
    public init(path: String, precision: WeightPrecision = .auto, model: UNet2DConditionConfig? = nil) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw ModelFileError.missingFile(path: path, detail: "no such file or folder; a ControlNet is a diffusers folder (config.json and "
                                             + "diffusion_pytorch_model.safetensors) or a single .safetensors file")
        }
        self.path = path
        guard isDir.boolValue else {
            guard let model else {
                throw ModelFileError.unsupported(path: path, detail: "a single-file ControlNet takes its attention heads from the model it guides; "
                                                 + "open it with that model's UNet config")
            }
            let opened = try Self.singleFile(path, model: model)
            config = opened.0
            weights = opened.1
            layout = opened.2
            _ = try ControlNetModel(config: config)
            return
        }
        layout = .diffusersFolder
        config = try ControlNetConfig(path: (path as NSString).appendingPathComponent("config.json"))
        _ = try ControlNetModel(config: config)
        var notes: [String] = []
        weights = SafetensorsWeights(files: try StableDiffusionModel.weightFiles(in: path, base: "diffusion_pytorch_model",
                                                                               preferFP16: precision.prefersFP16, notes: &notes))
    }
}
