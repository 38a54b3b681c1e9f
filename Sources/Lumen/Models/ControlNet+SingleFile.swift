import Foundation
import LumenRuntime

/// How a ControlNet's tensors are named.
public enum ControlNetLayout: Sendable, Hashable, CustomStringConvertible {
    /// A diffusers `ControlNetModel` folder.
    case diffusersFolder
    /// One file with diffusers' names (the SDXL ControlNets are published so, and some SD 1.x ones).
    case diffusersSingleFile
    /// One file with the original ControlNet names under `prefix` (`control_model.` in lllyasviel's
    /// files; empty in files that hold the ControlNet alone, such as thibaud's SD 2.1 ones).
    case original(prefix: String)

    public var description: String {
        switch self {
        case .diffusersFolder: return "diffusers folder"
        case .diffusersSingleFile: return "single file, diffusers names"
        case .original(let prefix): return "single file, original ControlNet names" + (prefix.isEmpty ? "" : " (\(prefix)*)")
        }
    }
}

extension ControlNet {
    /// A single-file ControlNet: its layout from the tensor names, its config from the tensor shapes
    /// over `model` (the heads, norms and embedding settings the weights do not show), its weights
    /// under diffusers' names.
    static func singleFile(_ path: String, model: UNet2DConditionConfig) throws -> (ControlNetConfig, SafetensorsWeights, ControlNetLayout) {
        let lower = path.lowercased()
        if [".ckpt", ".pt", ".pth", ".bin"].contains(where: { lower.hasSuffix($0) }) {
            throw ModelFileError.unsupported(path: path, detail: "pickle files are never loaded (unpickling runs code); convert the ControlNet to safetensors")
        }
        let file = try SafetensorsFile(path: path)
        let names = file.entries.keys
        let layout: ControlNetLayout
        if file.entries["control_model.time_embed.0.weight"] != nil {
            layout = .original(prefix: "control_model.")
        } else if file.entries["time_embed.0.weight"] != nil && file.entries["input_hint_block.0.weight"] != nil {
            layout = .original(prefix: "")
        } else if file.entries["controlnet_cond_embedding.conv_in.weight"] != nil {
            layout = .diffusersSingleFile
        } else {
            throw ModelFileError.unsupported(path: path, detail: "no ControlNet tensors found (control_model.time_embed.*, input_hint_block.*, "
                                             + "or diffusers' controlnet_cond_embedding.*); not a ControlNet Lumen recognises")
        }
        func present(_ prefix: String) -> Bool { names.contains { $0.hasPrefix(prefix) } }
        // Per level: layers_per_block resnets (+ a down-sampler but in the last), counted from the names.
        let L: Int, embeddingBlocks: Int
        switch layout {
        case .original(let p):
            guard let firstDown = (2..<64).first(where: { file.entries["\(p)input_blocks.\($0).0.op.weight"] != nil }) else {
                throw ModelFileError.unsupported(path: path, detail: "cannot find the ControlNet's down-sampling layers (\(p)input_blocks.N.0.op)")
            }
            L = firstDown - 1
            let hint = (0..<64).filter { file.entries["\(p)input_hint_block.\($0).weight"] != nil }
            embeddingBlocks = hint.count - 2
        default:
            L = (0..<64).first { !present("down_blocks.0.resnets.\($0).") } ?? 0
            embeddingBlocks = (0..<64).first { !present("controlnet_cond_embedding.blocks.\($0).") } ?? 0
        }
        let name: (String) -> String
        if case .original(let prefix) = layout {
            name = { OriginalCheckpointNames.controlNet($0, layersPerBlock: L, embeddingBlocks: embeddingBlocks, prefix: prefix) }
        } else {
            name = { $0 }
        }
        let config = try inferConfig(file, name: name, layersPerBlock: L, embeddingBlocks: embeddingBlocks, model: model)
        let scope: String?
        if case .original(let prefix) = layout, !prefix.isEmpty { scope = prefix } else { scope = nil }
        return (config, SafetensorsWeights(files: [file], scope: scope) { [StoredTensor(name($0))] }, layout)
    }

    /// The shapes a ControlNet's tensors give (`name` maps diffusers' names to the file's).
    private static func inferConfig(_ file: SafetensorsFile, name: (String) -> String, layersPerBlock L: Int, embeddingBlocks n: Int,
                                    model: UNet2DConditionConfig) throws -> ControlNetConfig {
        func shape(_ tensor: String) -> Shape? { file.entries[name(tensor)]?.shape }
        func need(_ tensor: String) throws -> Shape {
            guard let s = shape(tensor) else { throw ModelFileError.missingTensor(path: file.path, tensor: name(tensor)) }
            return s
        }
        func depth(_ prefix: String) -> Int { (0..<256).first { shape("\(prefix).transformer_blocks.\($0).norm1.weight") == nil } ?? 0 }
        guard L >= 1, n >= 0, n % 2 == 0 else {
            throw ModelFileError.unsupported(path: file.path, detail: "a ControlNet with \(L) layers per block and \(n) conditioning-embedding blocks; "
                                             + "expected at least 1 and an even number")
        }
        var c = model
        let convIn = try need("conv_in.weight")
        guard convIn.rank == 4 else { throw ModelFileError.wrongShape(path: file.path, tensor: name("conv_in.weight"), expected: [320, 4, 3, 3], got: convIn) }
        c.inChannels = convIn[1]
        c.convInKernel = convIn[2]
        c.layersPerBlock = L
        var channels: [Int] = [], down: [UNetDownBlockType] = [], depths: [Int?] = []
        while let s = shape("down_blocks.\(channels.count).resnets.0.conv2.weight") {
            let i = channels.count
            channels.append(s[0])
            let attention = shape("down_blocks.\(i).attentions.0.proj_in.weight") != nil
            down.append(attention ? .crossAttention : .plain)
            depths.append(attention ? depth("down_blocks.\(i).attentions.0") : nil)
        }
        guard !channels.isEmpty else { throw ModelFileError.missingTensor(path: file.path, tensor: name("down_blocks.0.resnets.0.conv2.weight")) }
        let mid = depth("mid_block.attentions.0")
        // diffusers builds the mid block with the last level's depth: plain levels take it too.
        let perLevel = depths.map { $0 ?? mid }
        guard perLevel.last == mid else {
            throw ModelFileError.unsupported(path: file.path, detail: "the mid block has \(mid) transformer blocks and the last level \(perLevel.last ?? 0); "
                                             + "a ControlNet builds them equal (transformer_layers_per_block)")
        }
        c.blockOutChannels = channels
        c.downBlockTypes = down
        c.upBlockTypes = down.reversed().map { $0 == .crossAttention ? .crossAttention : .plain }
        c.transformerLayersPerBlock = Set(perLevel).count == 1 ? .all(mid) : .each(perLevel)
        if let i = down.firstIndex(of: .crossAttention) {
            let a = "down_blocks.\(i).attentions.0"
            c.crossAttentionDim = try need("\(a).transformer_blocks.0.attn2.to_k.weight")[1]
            c.useLinearProjection = try need("\(a).proj_in.weight").rank == 2
        }
        if let add = shape("add_embedding.linear_1.weight") {
            guard model.additionEmbedType == .textTime else {
                throw ModelFileError.unsupported(path: file.path, detail: "this ControlNet has SDXL's added embedding (add_embedding.*) but the model is not SDXL")
            }
            c.projectionClassEmbeddingsInputDim = add[1]
        } else {
            c.additionEmbedType = nil
            c.additionTimeEmbedDim = nil
            c.projectionClassEmbeddingsInputDim = nil
        }
        c.timeCondProjDim = nil  // a ControlNet has no LCM guidance embedding
        c.classEmbedType = nil
        // The conditioning image's embedding: conv_in, then per level a conv and a strided conv.
        let first = try need("controlnet_cond_embedding.conv_in.weight")
        var out = [first[0]]
        for k in stride(from: 1, to: n, by: 2) { out.append(try need("controlnet_cond_embedding.blocks.\(k).weight")[0]) }
        guard (1...4).contains(first[1]), out.allSatisfy({ (1...4096).contains($0) }) else {
            throw ModelFileError.invalidValue(path: file.path, field: "conditioning embedding", value: "\(first[1]) channels, \(out)",
                                              expected: "1…4 channels and 1…4096 per embedding block")
        }
        return ControlNetConfig(unet: c, conditioningChannels: first[1], conditioningEmbeddingOutChannels: out)
    }
}
