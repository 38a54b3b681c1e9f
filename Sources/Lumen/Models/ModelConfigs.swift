import Foundation
import LumenRuntime

/// An integer that diffusers configs give either once or once per block.
public enum PerBlock: Sendable, Hashable, Codable {
    case all(Int)
    case each([Int])

    public func value(_ block: Int) -> Int {
        switch self {
        case .all(let v): return v
        case .each(let list): return list[min(block, list.count - 1)]
        }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let v = try? c.decode(Int.self) { self = .all(v) } else { self = .each(try c.decode([Int].self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .all(let v): try c.encode(v)
        case .each(let l): try c.encode(l)
        }
    }
}

/// transformers' `CLIPTextConfig` (the fields the text encoder uses).
public struct CLIPTextConfig: Sendable, Hashable, Codable {
    public var vocabSize = 49408
    public var hiddenSize = 768
    public var intermediateSize = 3072
    public var numHiddenLayers = 12
    public var numAttentionHeads = 12
    public var maxPositionEmbeddings = 77
    public var hiddenAct = CLIPActivation.quickGelu
    public var layerNormEps: Float = 1e-5
    /// Width of `text_projection` (CLIPTextModelWithProjection, SDXL's second encoder).
    public var projectionDim: Int? = nil

    enum CodingKeys: String, CodingKey {
        case projectionDim = "projection_dim"
        case vocabSize = "vocab_size", hiddenSize = "hidden_size", intermediateSize = "intermediate_size"
        case numHiddenLayers = "num_hidden_layers", numAttentionHeads = "num_attention_heads"
        case maxPositionEmbeddings = "max_position_embeddings", hiddenAct = "hidden_act", layerNormEps = "layer_norm_eps"
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = CLIPTextConfig()
        vocabSize = try c.decodeIfPresent(Int.self, forKey: .vocabSize) ?? d.vocabSize
        hiddenSize = try c.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? d.hiddenSize
        intermediateSize = try c.decodeIfPresent(Int.self, forKey: .intermediateSize) ?? d.intermediateSize
        numHiddenLayers = try c.decodeIfPresent(Int.self, forKey: .numHiddenLayers) ?? d.numHiddenLayers
        numAttentionHeads = try c.decodeIfPresent(Int.self, forKey: .numAttentionHeads) ?? d.numAttentionHeads
        maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? d.maxPositionEmbeddings
        hiddenAct = try c.decodeIfPresent(CLIPActivation.self, forKey: .hiddenAct) ?? d.hiddenAct
        layerNormEps = try c.decodeIfPresent(Float.self, forKey: .layerNormEps) ?? d.layerNormEps
        projectionDim = try c.decodeIfPresent(Int.self, forKey: .projectionDim)
    }
}

/// diffusers' `UNet2DConditionModel` config (SD 1.x/2.x fields).
public struct UNet2DConditionConfig: Sendable, Hashable, Codable {
    public var inChannels = 4
    public var outChannels = 4
    public var sampleSize = 64
    public var blockOutChannels = [320, 640, 1280, 1280]
    public var layersPerBlock = 2
    public var downBlockTypes: [UNetDownBlockType] = [.crossAttention, .crossAttention, .crossAttention, .plain]
    public var upBlockTypes: [UNetUpBlockType] = [.plain, .crossAttention, .crossAttention, .crossAttention]
    public var midBlockType: String? = "UNetMidBlock2DCrossAttn"
    public var crossAttentionDim = 768
    public var attentionHeadDim: PerBlock = .all(8)
    public var numAttentionHeads: PerBlock? = nil
    public var normNumGroups = 32
    public var normEps: Float = 1e-5
    public var flipSinToCos = true
    public var freqShift: Float = 0
    public var useLinearProjection = false
    public var upcastAttention = false
    public var transformerLayersPerBlock: PerBlock = .all(1)
    public var downsamplePadding = 1
    public var actFn = UNetActivation.silu
    public var centerInputSample = false
    public var resnetTimeScaleShift = "default"
    public var timeCondProjDim: Int? = nil
    public var classEmbedType: String? = nil
    public var additionEmbedType: UNetAdditionEmbedding? = nil
    /// SDXL's added conditioning ("text_time"): each of the 6 time ids gets a sinusoidal embedding
    /// of this width, concatenated after the pooled text embedding (`projectionClassEmbeddingsInputDim` in all).
    public var additionTimeEmbedDim: Int? = nil
    public var projectionClassEmbeddingsInputDim: Int? = nil
    public var convInKernel = 3
    public var convOutKernel = 3
    public var onlyCrossAttention = false
    public var dualCrossAttention = false

    /// Heads of the attention in down block `i` (diffusers' historical naming: when
    /// `num_attention_heads` is absent, `attention_head_dim` holds the number of heads).
    public func heads(block i: Int) -> Int { (numAttentionHeads ?? attentionHeadDim).value(i) }

    enum CodingKeys: String, CodingKey {
        case inChannels = "in_channels", outChannels = "out_channels", sampleSize = "sample_size"
        case blockOutChannels = "block_out_channels", layersPerBlock = "layers_per_block"
        case downBlockTypes = "down_block_types", upBlockTypes = "up_block_types", midBlockType = "mid_block_type"
        case crossAttentionDim = "cross_attention_dim", attentionHeadDim = "attention_head_dim"
        case numAttentionHeads = "num_attention_heads", normNumGroups = "norm_num_groups", normEps = "norm_eps"
        case flipSinToCos = "flip_sin_to_cos", freqShift = "freq_shift", useLinearProjection = "use_linear_projection"
        case upcastAttention = "upcast_attention", transformerLayersPerBlock = "transformer_layers_per_block"
        case downsamplePadding = "downsample_padding", actFn = "act_fn", centerInputSample = "center_input_sample"
        case resnetTimeScaleShift = "resnet_time_scale_shift", timeCondProjDim = "time_cond_proj_dim"
        case classEmbedType = "class_embed_type", additionEmbedType = "addition_embed_type"
        case additionTimeEmbedDim = "addition_time_embed_dim", projectionClassEmbeddingsInputDim = "projection_class_embeddings_input_dim"
        case convInKernel = "conv_in_kernel", convOutKernel = "conv_out_kernel"
        case onlyCrossAttention = "only_cross_attention", dualCrossAttention = "dual_cross_attention"
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = UNet2DConditionConfig()
        func get<T: Decodable>(_ k: CodingKeys, _ def: T) throws -> T { try c.decodeIfPresent(T.self, forKey: k) ?? def }
        inChannels = try get(.inChannels, d.inChannels)
        outChannels = try get(.outChannels, d.outChannels)
        sampleSize = (try? c.decodeIfPresent(Int.self, forKey: .sampleSize)) ?? d.sampleSize
        blockOutChannels = try get(.blockOutChannels, d.blockOutChannels)
        layersPerBlock = try get(.layersPerBlock, d.layersPerBlock)
        downBlockTypes = try get(.downBlockTypes, d.downBlockTypes)
        upBlockTypes = try get(.upBlockTypes, d.upBlockTypes)
        midBlockType = c.contains(.midBlockType) ? try c.decodeIfPresent(String.self, forKey: .midBlockType) : d.midBlockType
        crossAttentionDim = (try? c.decodeIfPresent(Int.self, forKey: .crossAttentionDim)) ?? d.crossAttentionDim
        attentionHeadDim = try get(.attentionHeadDim, d.attentionHeadDim)
        numAttentionHeads = try c.decodeIfPresent(PerBlock.self, forKey: .numAttentionHeads)
        normNumGroups = try get(.normNumGroups, d.normNumGroups)
        normEps = try get(.normEps, d.normEps)
        flipSinToCos = try get(.flipSinToCos, d.flipSinToCos)
        freqShift = try get(.freqShift, d.freqShift)
        useLinearProjection = try get(.useLinearProjection, d.useLinearProjection)
        upcastAttention = try get(.upcastAttention, d.upcastAttention)
        transformerLayersPerBlock = try get(.transformerLayersPerBlock, d.transformerLayersPerBlock)
        downsamplePadding = try get(.downsamplePadding, d.downsamplePadding)
        actFn = try get(.actFn, d.actFn)
        centerInputSample = try get(.centerInputSample, d.centerInputSample)
        resnetTimeScaleShift = try get(.resnetTimeScaleShift, d.resnetTimeScaleShift)
        timeCondProjDim = try c.decodeIfPresent(Int.self, forKey: .timeCondProjDim)
        classEmbedType = try c.decodeIfPresent(String.self, forKey: .classEmbedType)
        additionEmbedType = try c.decodeIfPresent(UNetAdditionEmbedding.self, forKey: .additionEmbedType)
        additionTimeEmbedDim = try c.decodeIfPresent(Int.self, forKey: .additionTimeEmbedDim)
        projectionClassEmbeddingsInputDim = try c.decodeIfPresent(Int.self, forKey: .projectionClassEmbeddingsInputDim)
        convInKernel = try get(.convInKernel, d.convInKernel)
        convOutKernel = try get(.convOutKernel, d.convOutKernel)
        onlyCrossAttention = (try? c.decodeIfPresent(Bool.self, forKey: .onlyCrossAttention)) ?? d.onlyCrossAttention
        dualCrossAttention = try get(.dualCrossAttention, d.dualCrossAttention)
    }
}

/// diffusers' `AutoencoderKL` config.
public struct AutoencoderKLConfig: Sendable, Hashable, Codable {
    public var inChannels = 3
    public var outChannels = 3
    public var latentChannels = 4
    public var blockOutChannels = [128, 256, 512, 512]
    public var layersPerBlock = 2
    public var normNumGroups = 32
    public var sampleSize = 512
    /// Absent in older folders: 0.18215 for SD 1.x/2.x.
    public var scalingFactor: Float = 0.18215
    public var shiftFactor: Float? = nil
    /// Per-channel statistics of the latents (Playground v2.5's VAE): diffusers' SDXL pipelines
    /// decode `z · std / scaling_factor + mean` instead of `z / scaling_factor` when both are given
    /// (and encode an img2img init image the inverse way).
    public var latentsMean: [Float]? = nil
    public var latentsStd: [Float]? = nil
    public var usePostQuantConv = true
    public var useQuantConv = true
    public var midBlockAddAttention = true
    public var forceUpcast = true
    /// Read only to check that they match `blockOutChannels` (the VAE's blocks are all of one kind).
    public var downBlockTypes: [String]? = nil
    public var upBlockTypes: [String]? = nil

    /// Spatial down-sampling factor between image and latents.
    public var scaleFactor: Int { 1 << (blockOutChannels.count - 1) }

    /// `latents_mean` and `latents_std` where the config has both (diffusers uses neither otherwise).
    public var latentStatistics: (mean: [Float], std: [Float])? {
        guard let latentsMean, let latentsStd else { return nil }
        return (latentsMean, latentsStd)
    }

    enum CodingKeys: String, CodingKey {
        case inChannels = "in_channels", outChannels = "out_channels", latentChannels = "latent_channels"
        case blockOutChannels = "block_out_channels", layersPerBlock = "layers_per_block", normNumGroups = "norm_num_groups"
        case sampleSize = "sample_size", scalingFactor = "scaling_factor", shiftFactor = "shift_factor"
        case latentsMean = "latents_mean", latentsStd = "latents_std"
        case usePostQuantConv = "use_post_quant_conv", useQuantConv = "use_quant_conv"
        case midBlockAddAttention = "mid_block_add_attention", forceUpcast = "force_upcast"
        case downBlockTypes = "down_block_types", upBlockTypes = "up_block_types"
    }

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = AutoencoderKLConfig()
        func get<T: Decodable>(_ k: CodingKeys, _ def: T) throws -> T { try c.decodeIfPresent(T.self, forKey: k) ?? def }
        inChannels = try get(.inChannels, d.inChannels)
        outChannels = try get(.outChannels, d.outChannels)
        latentChannels = try get(.latentChannels, d.latentChannels)
        blockOutChannels = try get(.blockOutChannels, d.blockOutChannels)
        layersPerBlock = try get(.layersPerBlock, d.layersPerBlock)
        normNumGroups = try get(.normNumGroups, d.normNumGroups)
        sampleSize = (try? c.decodeIfPresent(Int.self, forKey: .sampleSize)) ?? d.sampleSize
        scalingFactor = try get(.scalingFactor, d.scalingFactor)
        shiftFactor = try c.decodeIfPresent(Float.self, forKey: .shiftFactor)
        latentsMean = try c.decodeIfPresent([Float].self, forKey: .latentsMean)
        latentsStd = try c.decodeIfPresent([Float].self, forKey: .latentsStd)
        usePostQuantConv = try get(.usePostQuantConv, d.usePostQuantConv)
        useQuantConv = try get(.useQuantConv, d.useQuantConv)
        midBlockAddAttention = try get(.midBlockAddAttention, d.midBlockAddAttention)
        forceUpcast = try get(.forceUpcast, d.forceUpcast)
        downBlockTypes = try c.decodeIfPresent([String].self, forKey: .downBlockTypes)
        upBlockTypes = try c.decodeIfPresent([String].self, forKey: .upBlockTypes)
    }
}

/// Decodes a config file as diffusers and transformers write them, with Python's `json`, which
/// writes an infinite or NaN float as the bare word `Infinity`, `-Infinity` or `NaN` (diffusers'
/// DPMSolverMultistepScheduler saves `"lambda_min_clipped": -Infinity`, so every folder shipped
/// with that scheduler has one). Standard JSON has no such words, and Foundation's decoder refused
/// the whole file as "not valid JSON". Where the plain decoding fails, those words (outside
/// strings) are read as `null`: the field counts as absent, and its default applies (no field
/// Lumen reads is ever infinite in a real config). Foundation's JSON5 mode, which reads them,
/// traps on some malformed input (FuzzTests.testConfigDecoders), so it is not used.
func decodeConfigJSON<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
    do {
        return try JSONDecoder().decode(type, from: data)
    } catch {
        // The original error where the words were not the trouble.
        guard let cleaned = pythonNonFiniteAsNull(data), let value = try? JSONDecoder().decode(type, from: cleaned) else { throw error }
        return value
    }
}

/// `data` with each bare `Infinity`, `-Infinity` and `NaN` outside a string replaced by `null`;
/// nil where there is none.
func pythonNonFiniteAsNull(_ data: Data) -> Data? {
    let bytes = [UInt8](data)
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count)
    var inString = false, escaped = false, replaced = false
    var i = 0
    let words: [[UInt8]] = [Array("-Infinity".utf8), Array("Infinity".utf8), Array("NaN".utf8)]
    while i < bytes.count {
        let c = bytes[i]
        if inString {
            if escaped { escaped = false } else if c == UInt8(ascii: "\\") { escaped = true } else if c == UInt8(ascii: "\"") { inString = false }
            out.append(c)
            i += 1
            continue
        }
        if c == UInt8(ascii: "\"") { inString = true; out.append(c); i += 1; continue }
        if let w = words.first(where: { bytes[i...].starts(with: $0) }) {
            out.append(contentsOf: Array("null".utf8))
            i += w.count
            replaced = true
            continue
        }
        out.append(c)
        i += 1
    }
    return replaced ? Data(out) : nil
}

/// Reads a JSON config file with a typed error naming the file.
func loadConfig<T: Decodable>(_ type: T.Type, path: String) throws -> T {
    guard FileManager.default.fileExists(atPath: path) else {
        throw ModelFileError.missingFile(path: path, detail: "config file not found")
    }
    // Read as a regular file only (a FIFO would block forever), and a config is never megabytes.
    let data = try RegularFile.read(path, limit: 16 << 20)
    let config: T
    do {
        config = try decodeConfigJSON(T.self, from: data)
    } catch {
        throw ModelFileError.malformed(path: path, detail: describeDecodingError(error, decoding: T.self, data: data))
    }
    try (config as? RangeCheckedConfig)?.checkRanges(path: path)
    return config
}

/// The UNet's down blocks Lumen builds (diffusers' `down_block_types`); any other name fails at
/// load, listing these.
public enum UNetDownBlockType: String, Sendable, Hashable, CaseIterable, Codable {
    case crossAttention = "CrossAttnDownBlock2D"
    case plain = "DownBlock2D"

    public init(from decoder: Decoder) throws {
        self = try decodeClosedSet(decoder, what: "down block type")
    }
}

/// The UNet's up blocks Lumen builds (diffusers' `up_block_types`).
public enum UNetUpBlockType: String, Sendable, Hashable, CaseIterable, Codable {
    case crossAttention = "CrossAttnUpBlock2D"
    case plain = "UpBlock2D"

    public init(from decoder: Decoder) throws {
        self = try decodeClosedSet(decoder, what: "up block type")
    }
}

/// One case of a closed set from its config string; an unknown string is a decoding error that
/// names it and lists the valid ones.
func decodeClosedSet<T: RawRepresentable & CaseIterable>(_ decoder: Decoder, what: String) throws -> T where T.RawValue == String {
    let c = try decoder.singleValueContainer()
    let text = try c.decode(String.self)
    guard let value = T(rawValue: text) else {
        throw DecodingError.dataCorruptedError(
            in: c, debugDescription: "\(what) \"\(text)\" is not supported; supported: \(T.allCases.map(\.rawValue).joined(separator: ", "))")
    }
    return value
}

/// The text encoder's MLP activations Lumen builds (transformers' `hidden_act`).
public enum CLIPActivation: String, Sendable, Hashable, CaseIterable, Codable {
    /// x·σ(1.702x), OpenAI CLIP's (Stable Diffusion 1.x).
    case quickGelu = "quick_gelu"
    /// The exact (erf) GELU, OpenCLIP's (Stable Diffusion 2.x, SDXL's second encoder).
    case gelu
    /// The tanh approximation, under either of its names.
    case geluNew = "gelu_new"
    case geluPytorchTanh = "gelu_pytorch_tanh"

    public init(from decoder: Decoder) throws {
        self = try decodeClosedSet(decoder, what: "hidden_act")
    }
}

/// The UNet's activation (`act_fn`): Stable Diffusion's SiLU is the one Lumen builds.
public enum UNetActivation: String, Sendable, Hashable, CaseIterable, Codable {
    case silu

    public init(from decoder: Decoder) throws {
        self = try decodeClosedSet(decoder, what: "act_fn")
    }
}

/// The UNet's added conditioning (`addition_embed_type`): SDXL's text embedding and size ids.
public enum UNetAdditionEmbedding: String, Sendable, Hashable, CaseIterable, Codable {
    case textTime = "text_time"

    public init(from decoder: Decoder) throws {
        self = try decodeClosedSet(decoder, what: "addition_embed_type")
    }
}
