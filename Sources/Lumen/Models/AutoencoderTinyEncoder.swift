import Foundation
import LumenRuntime

/// The encoder of TAESD / TAESDXL (diffusers' `EncoderTiny`): the image in [-1, 1] mapped to [0, 1],
/// a 3×3 convolution, then per level a stride-2 3×3 convolution without bias (none on the first
/// level) and residual blocks, and a last convolution to the latent channels. Its output is
/// already Stable Diffusion's scaled latents (`AutoencoderTiny.encode(x).latents`, no sampling and
/// no scaling factor), so it draws nothing from a generator.
///
/// Read from a diffusers `AutoencoderTiny` folder (`encoder.layers.N.*`), a single file with
/// diffusers' names, or the original `taesd_encoder.safetensors` layout (layer N is diffusers'
/// layer N). A single file's depth and widths come from its tensors' shapes.
public struct AutoencoderTinyEncoder {
    public struct Config: Sendable, Hashable {
        public var inChannels = 3
        public var latentChannels = 4
        public var blockOutChannels = [64, 64, 64, 64]
        public var blocks = [1, 3, 3, 3]

        /// Pixels per latent: 2 per stride-2 level.
        public var scaleFactor: Int { 1 << (blocks.count - 1) }
    }

    private struct FolderConfig: Decodable {
        var latent_channels: Int?
        var in_channels: Int?
        var encoder_block_out_channels: [Int]?
        var num_encoder_blocks: [Int]?
        var act_fn: String?
    }

    public let config: Config
    public let weights: SafetensorsWeights
    public let path: String

    /// Opens a diffusers `AutoencoderTiny` folder or a single `.safetensors` file.
    public init(path: String) throws {
        self.path = path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ModelFileError.cannotOpen(path: path, reason: "no such TAESD file or folder")
        }
        var config = Config()
        let file: SafetensorsFile
        if isDirectory.boolValue {
            let configPath = path + "/config.json"
            let folder: FolderConfig
            do {
                folder = try decodeConfigJSON(FolderConfig.self, from: Data(contentsOf: URL(fileURLWithPath: configPath)))
            } catch let error as DecodingError {
                throw ModelFileError.malformed(path: configPath, detail: "not an AutoencoderTiny config: \(error)")
            } catch {
                throw ModelFileError.cannotOpen(path: configPath, reason: "\(error.localizedDescription)")
            }
            if let act = folder.act_fn, act != "relu" {
                throw ModelFileError.invalidValue(path: configPath, field: "act_fn", value: act, expected: "relu")
            }
            config.latentChannels = folder.latent_channels ?? 4
            config.inChannels = folder.in_channels ?? 3
            config.blockOutChannels = folder.encoder_block_out_channels ?? config.blockOutChannels
            config.blocks = folder.num_encoder_blocks ?? config.blocks
            file = try SafetensorsFile(path: path + "/diffusion_pytorch_model.safetensors")
        } else {
            file = try SafetensorsFile(path: path)
        }
        let prefix = file.entries["encoder.layers.0.weight"] != nil ? "encoder.layers." : ""
        if !isDirectory.boolValue {
            config = try Self.inferConfig(file, prefix: prefix)
        } else if file.entries["encoder.layers.0.weight"] == nil {
            throw ModelFileError.missingTensor(path: file.path, tensor: "encoder.layers.0.weight")
        }
        guard config.blocks.count == config.blockOutChannels.count, !config.blocks.isEmpty,
              Set(config.blockOutChannels).count == 1 else {
            throw ModelFileError.unsupported(path: path, detail: "AutoencoderTiny encoder with blocks \(config.blocks), channels \(config.blockOutChannels): expected one channel count")
        }
        self.config = config
        weights = SafetensorsWeights(files: [file], aliases: { name in
            guard prefix.isEmpty, name.hasPrefix("encoder.layers.") else { return [StoredTensor(name)] }
            return [StoredTensor(String(name.dropFirst("encoder.layers.".count)))]
        })
    }

    /// A single file's shape from its tensors: layer 0 the input convolution; then blocks
    /// (`k.conv.0.weight`), stride-2 convolutions (a weight without bias) between levels, and the
    /// last convolution (with a bias) to the latents.
    private static func inferConfig(_ file: SafetensorsFile, prefix: String) throws -> Config {
        guard let first = file.entries[prefix + "0.weight"], first.shape.rank == 4, file.entries[prefix + "1.conv.0.weight"] != nil else {
            throw ModelFileError.unsupported(path: file.path, detail: "not a TAESD encoder: neither encoder.layers.0.weight (diffusers) nor 0.weight followed by the block 1.conv.0.weight (taesd_encoder) is there")
        }
        var config = Config()
        config.inChannels = first.shape[1]
        var blocks: [Int] = [], count = 0, i = 1
        while true {
            guard i < 256 else {
                throw ModelFileError.malformed(path: file.path, detail: "TAESD encoder: no last convolution (a layer with a bias) within 256 layers")
            }
            if file.entries["\(prefix)\(i).conv.0.weight"] != nil {
                count += 1
            } else if let conv = file.entries["\(prefix)\(i).weight"] {
                blocks.append(count)
                count = 0
                if file.entries["\(prefix)\(i).bias"] != nil {
                    config.latentChannels = conv.shape[0]
                    break
                }
            } else {
                throw ModelFileError.malformed(path: file.path, detail: "TAESD encoder layer \(i): expected a block (\(prefix)\(i).conv.0.weight) or a convolution (\(prefix)\(i).weight)")
            }
            i += 1
        }
        config.blocks = blocks
        config.blockOutChannels = Array(repeating: first.shape[0], count: blocks.count)
        return config
    }

    /// The encoder: an image [N, 3, H, W] in [-1, 1] → latents [N, C, H/8, W/8].
    public func build(_ g: Graph, image x: Value) throws -> Value {
        let c = config
        let m = Module(graph: g, weights: weights, prefix: "encoder.layers")
        var h = try g.affine(x, multiplier: 0.5, addend: 0.5)  // x.add(1).div(2)
        var index = 0
        for (i, n) in c.blocks.enumerated() {
            let ch = c.blockOutChannels[i]
            h = i == 0 ? try m.conv(h, "\(index)", in: c.inChannels, out: ch, kernel: 3)
                : try m.conv(h, "\(index)", in: ch, out: ch, kernel: 3, stride: 2, bias: false)
            index += 1
            for _ in 0..<n {
                h = try tinyBlock(m.child("\(index)"), h, channels: ch)
                index += 1
            }
        }
        return try m.conv(h, "\(index)", in: c.blockOutChannels[c.blocks.count - 1], out: c.latentChannels, kernel: 3)
    }

    /// Encodes `image` [N, 3, H, W] in [-1, 1] (H and W multiples of the scale factor) to latents
    /// on `executor`.
    public func encode(_ image: Tensor, executor: any Executor) throws -> Tensor {
        let f = config.scaleFactor
        guard image.shape.rank == 4, image.shape[1] == config.inChannels, image.shape[2] % f == 0, image.shape[3] % f == 0,
              image.shape[2] > 0, image.shape[3] > 0 else {
            throw ModelFileError.unsupported(path: path, detail: "image \(image.shape): this TAESD encodes [N, \(config.inChannels), H, W] with H and W multiples of \(f)")
        }
        let g = Graph()
        let x = try g.input("image", shape: image.shape)
        let y = try build(g, image: x)
        return try executor.compile(g, outputs: [y]).run(["image": image])[y]!
    }
}
