import Foundation
import LumenRuntime

/// Range checks of the model configs, run when a config is read (a diffusers folder, `--config`, a
/// VAE folder) and on the configs inferred from a single file, so that a hostile or mistyped value
/// is a `ModelFileError.invalidValue` naming the file and field, never a division by zero, a range
/// trap or an allocation of terabytes. The bounds are wide (several times the largest published
/// model's value) and exist to keep the arithmetic and the memory of a build finite.
protocol RangeCheckedConfig {
    /// The first field outside its range, as (field, value, expected), or nil.
    func firstInvalidField() -> (field: String, value: String, expected: String)?
}

extension RangeCheckedConfig {
    /// Throws `ModelFileError.invalidValue` for the first field outside its range.
    func checkRanges(path: String) throws {
        if let bad = firstInvalidField() {
            throw ModelFileError.invalidValue(path: path, field: bad.field, value: bad.value, expected: bad.expected)
        }
    }
}

/// Collects range checks in declaration order; the first failing one is reported.
private struct Checks {
    var failure: (field: String, value: String, expected: String)?

    mutating func int(_ field: String, _ value: Int, _ range: ClosedRange<Int>, _ why: String = "") {
        guard failure == nil, !range.contains(value) else { return }
        failure = (field, "\(value)", "\(range.lowerBound)…\(range.upperBound)" + (why.isEmpty ? "" : " (\(why))"))
    }

    mutating func list(_ field: String, _ values: [Int], count: ClosedRange<Int>, each range: ClosedRange<Int>) {
        guard failure == nil else { return }
        if !count.contains(values.count) {
            failure = (field, "\(values)", "a list of \(count.lowerBound)…\(count.upperBound) integers")
            return
        }
        for (i, v) in values.enumerated() { int("\(field)[\(i)]", v, range) }
    }

    mutating func perBlock(_ field: String, _ value: PerBlock?, blocks: Int, each range: ClosedRange<Int>) {
        switch value {
        case nil: return
        case .all(let v): int(field, v, range)
        case .each(let list): self.list(field, list, count: blocks...blocks, each: range)
        }
    }

    mutating func positive(_ field: String, _ value: Float?) {
        guard failure == nil, let value, !(value.isFinite && value > 0) else { return }
        failure = (field, "\(value)", "a finite number above 0")
    }

    mutating func finite(_ field: String, _ value: Float?) {
        guard failure == nil, let value, !value.isFinite else { return }
        failure = (field, "\(value)", "a finite number")
    }

    mutating func require(_ ok: Bool, _ field: String, _ value: String, _ expected: String) {
        guard failure == nil, !ok else { return }
        failure = (field, value, expected)
    }
}

/// Channel counts: SDXL's widest block is 1280; 16384 leaves room and keeps a weight's element
/// count (channels² × kernel²) far inside Int.
private let channels = 1...16384
/// Network depth per block (SD: 2; SDXL transformers: 10).
private let depth = 1...64

extension UNet2DConditionConfig: RangeCheckedConfig {
    func firstInvalidField() -> (field: String, value: String, expected: String)? {
        var c = Checks()
        // Latent channels: 4 for SD, 9 for inpainting; each is a plane of the latent allocated
        // before any weight is read.
        c.int("in_channels", inChannels, 1...64, "latent channels")
        c.int("out_channels", outChannels, 1...64, "latent channels")
        c.int("sample_size", sampleSize, 1...1024, "latent pixels; SD 1.5 has 64, SDXL 128")
        c.list("block_out_channels", blockOutChannels, count: 1...8, each: channels)
        c.int("layers_per_block", layersPerBlock, depth)
        c.int("cross_attention_dim", crossAttentionDim, channels)
        let blocks = blockOutChannels.count
        c.perBlock("attention_head_dim", attentionHeadDim, blocks: blocks, each: 1...4096)
        c.perBlock("num_attention_heads", numAttentionHeads, blocks: blocks, each: 1...4096)
        c.perBlock("transformer_layers_per_block", transformerLayersPerBlock, blocks: blocks, each: depth)
        // Whether the groups divide each block's channels is the group-norm op's own typed check (a
        // single file's inferred config cannot know the group count, and needs none to be read).
        c.int("norm_num_groups", normNumGroups, 1...1024)
        if c.failure == nil {
            for (i, ch) in blockOutChannels.enumerated() {
                let heads = self.heads(block: i)
                c.require(ch % heads == 0, numAttentionHeads == nil ? "attention_head_dim" : "num_attention_heads",
                          "\(heads) heads in block \(i)", "a divisor of block_out_channels[\(i)] (\(ch)): each head gets an equal share")
            }
        }
        c.positive("norm_eps", normEps)
        c.finite("freq_shift", freqShift)
        c.int("downsample_padding", downsamplePadding, 0...3)
        c.require(convInKernel % 2 == 1 && (1...7).contains(convInKernel), "conv_in_kernel", "\(convInKernel)", "an odd size 1…7")
        c.require(convOutKernel % 2 == 1 && (1...7).contains(convOutKernel), "conv_out_kernel", "\(convOutKernel)", "an odd size 1…7")
        if let d = timeCondProjDim { c.int("time_cond_proj_dim", d, channels) }
        if let d = additionTimeEmbedDim { c.int("addition_time_embed_dim", d, channels) }
        if let d = projectionClassEmbeddingsInputDim { c.int("projection_class_embeddings_input_dim", d, 1...65536) }
        return c.failure
    }
}

extension AutoencoderKLConfig: RangeCheckedConfig {
    func firstInvalidField() -> (field: String, value: String, expected: String)? {
        var c = Checks()
        c.int("in_channels", inChannels, 1...64)
        c.int("out_channels", outChannels, 1...64)
        c.int("latent_channels", latentChannels, 1...64)
        // The scale factor is 2^(count - 1): 8 blocks already down-sample by 128.
        c.list("block_out_channels", blockOutChannels, count: 1...8, each: channels)
        for (field, types) in [("down_block_types", downBlockTypes), ("up_block_types", upBlockTypes)] {
            if let types {
                c.require(types.count == blockOutChannels.count, field, "\(types)",
                          "one block type per block_out_channels entry (\(blockOutChannels.count))")
            }
        }
        c.int("layers_per_block", layersPerBlock, depth)
        c.int("norm_num_groups", normNumGroups, 1...1024)
        c.int("sample_size", sampleSize, 1...16384, "pixels")
        // The latents are divided by it before decoding: 0 would make them infinite.
        c.positive("scaling_factor", scalingFactor)
        c.finite("shift_factor", shiftFactor)
        // One value per latent channel; the decoder multiplies by the deviations and the encoder divides by them.
        for (field, values, positive) in [("latents_mean", latentsMean, false), ("latents_std", latentsStd, true)] {
            guard let values else { continue }
            c.require(values.count == latentChannels, field, "\(values.count) values", "one per latent channel (\(latentChannels))")
            if let bad = values.firstIndex(where: { !$0.isFinite || (positive && !($0 > 0)) }) {
                c.require(false, "\(field)[\(bad)]", "\(values[bad])", positive ? "a finite number above 0" : "a finite number")
            }
        }
        return c.failure
    }
}

extension CLIPTextConfig: RangeCheckedConfig {
    func firstInvalidField() -> (field: String, value: String, expected: String)? {
        var c = Checks()
        c.int("vocab_size", vocabSize, 1...1_048_576)
        c.int("hidden_size", hiddenSize, channels)
        c.int("intermediate_size", intermediateSize, 1...65536)
        c.int("num_hidden_layers", numHiddenLayers, 1...128)
        c.int("num_attention_heads", numAttentionHeads, 1...1024)
        c.require(c.failure != nil || hiddenSize % numAttentionHeads == 0, "num_attention_heads", "\(numAttentionHeads)",
                  "a divisor of hidden_size (\(hiddenSize)): each head gets an equal share")
        // The start and end tokens take two positions.
        c.int("max_position_embeddings", maxPositionEmbeddings, 2...4096)
        c.positive("layer_norm_eps", layerNormEps)
        if let d = projectionDim { c.int("projection_dim", d, channels) }
        return c.failure
    }
}

/// A decoding failure of a JSON config as one line: the field, what it holds and the type expected.
/// Foundation names only the type, and reports a number that does not fit the field's type (1.5
/// for an integer) as "not valid JSON" without the field; the parsed object tells both.
func describeDecodingError<T: Decodable>(_ error: Error, decoding type: T.Type, data: Data) -> String {
    let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    func field(_ ctx: DecodingError.Context) -> String { ctx.codingPath.map(\.stringValue).joined(separator: ".") }
    func shown(_ key: String?) -> String {
        guard let key, let value = object?[key] else { return "" }
        return "\(value); "
    }
    func typeName(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type: return "an integer"
        case is Float.Type, is Double.Type: return "a number"
        case is String.Type: return "a string"
        case is Bool.Type: return "true or false"
        default: return String(describing: type).hasPrefix("Array") ? "a list" : "\(type)"
        }
    }
    switch error {
    case DecodingError.typeMismatch(let t, let ctx) where !ctx.codingPath.isEmpty:
        return "field \(field(ctx)): \(shown(ctx.codingPath.first?.stringValue))expected \(typeName(t))"
    case DecodingError.valueNotFound(let t, let ctx) where !ctx.codingPath.isEmpty:
        return "field \(field(ctx)): null; expected \(typeName(t))"
    case DecodingError.keyNotFound(let key, _):
        return "field \(key.stringValue) is missing"
    case DecodingError.dataCorrupted(let ctx) where !ctx.codingPath.isEmpty:
        let expected = ctx.debugDescription.contains("fit in Int") ? "expected an integer" : ctx.debugDescription
        return "field \(field(ctx)): \(shown(ctx.codingPath.first?.stringValue))\(expected)"
    default:
        // The file is JSON, yet does not decode: find the field by decoding each one alone.
        if let object {
            for key in object.keys.sorted() {
                guard let alone = try? JSONSerialization.data(withJSONObject: [key: object[key]!]) else { continue }
                if (try? JSONDecoder().decode(T.self, from: alone)) == nil {
                    let value = object[key]!
                    let fractional = (value as? NSNumber).map { !(value is Bool) && $0.doubleValue.rounded() != $0.doubleValue } ?? false
                    return "field \(key): \(value); " + (fractional ? "expected an integer" : "a value of another type is expected")
                }
            }
            return "\(error)"
        }
        return "not valid JSON"
    }
}

extension StableDiffusionModel {
    /// The range checks of configs read from files, for the configs a single file's tensor shapes
    /// implied; a failure says that `--config` supplies the real ones.
    func checkInferredConfigs() throws {
        var configs: [(String, RangeCheckedConfig)] = [("text encoder", textEncoderConfig), ("unet", unetConfig), ("vae", vaeConfig)]
        if let xl { configs.append(("text encoder 2", xl.textEncoder2Config)) }
        for (network, config) in configs {
            if let bad = config.firstInvalidField() {
                throw ModelFileError.invalidValue(
                    path: path, field: "\(bad.field) (of the \(network) config inferred from the tensors)", value: bad.value,
                    expected: bad.expected + "; pass --config FOLDER with a diffusers folder of the same model")
            }
        }
    }
}

extension StableDiffusionModel {
    /// `loadSingleFile`, whose configs, when no `configFolder` is given, come from the tensors'
    /// shapes: a tensor the inference needs that is missing, a layout it cannot follow, or a value
    /// out of range says that `--config` supplies the real configs.
    static func loadSingleFile(inferring path: String, configFolder: String?) throws -> StableDiffusionModel {
        let model = try loadSingleFileInferring(path, configFolder: configFolder)
        let entries = model.unetWeights.files.first?.entries ?? [:]
        model.trainingMarkers = ["v_pred", "ztsnr", "edm_vpred.sigma_max"].filter { entries[$0] != nil }
        if !model.trainingMarkers.isEmpty {
            model.recognised.append("training marks \(model.trainingMarkers.joined(separator: ", ")) (read by ComfyUI; diffusers' from_single_file ignores them)")
        }
        return model
    }

    private static func loadSingleFileInferring(_ path: String, configFolder: String?) throws -> StableDiffusionModel {
        guard configFolder == nil else { return try loadSingleFile(path, configFolder: configFolder) }
        let hint = "the configs are inferred from the tensors' shapes when none are given: pass --config FOLDER with a diffusers folder of the same model"
        let model: StableDiffusionModel
        do {
            model = try loadSingleFile(path, configFolder: nil)
        } catch ModelFileError.missingTensor(let file, let tensor) {
            throw ModelFileError.unsupported(path: file, detail: "tensor '\(tensor)' is missing; \(hint)")
        } catch ModelFileError.unsupported(let file, let detail) where detail.hasPrefix("cannot find") {
            throw ModelFileError.unsupported(path: file, detail: "\(detail); \(hint)")
        }
        try model.checkInferredConfigs()
        return model
    }
}
