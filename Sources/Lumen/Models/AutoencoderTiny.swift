import Foundation
import LumenRuntime

/// The decoder of TAESD / TAESDXL (diffusers' `AutoencoderTiny`): a few 3×3 convolutions with
/// ReLU, residual blocks and nearest 2× upsampling, decoding Stable Diffusion's scaled latents
/// (no division by a scaling factor) to an image in [-1, 1]. Much cheaper than the full VAE, for
/// previews and fast final decodes.
///
/// Read from a diffusers `AutoencoderTiny` folder (`config.json` + `diffusion_pytorch_model.safetensors`,
/// `decoder.layers.N.*`) or a single file: one with diffusers' names, or the original
/// `taesd_decoder.safetensors` layout whose layer N + 1 is diffusers' layer N (its layer 0 is
/// the clamp, which holds no weights). A single file gets TAESD's published shape: blocks of
/// 64 channels, 3, 3, 3 and 1 blocks deep.
public struct AutoencoderTinyDecoder {
    public struct Config: Sendable, Hashable, Decodable {
        public var latentChannels = 4
        public var outChannels = 3
        public var blockOutChannels = [64, 64, 64, 64]
        public var blocks = [3, 3, 3, 1]
        public var upsamplingScalingFactor = 2

        enum CodingKeys: String, CodingKey {
            case latentChannels = "latent_channels", outChannels = "out_channels"
            case blockOutChannels = "decoder_block_out_channels", blocks = "num_decoder_blocks"
            case upsamplingScalingFactor = "upsampling_scaling_factor", actFn = "act_fn", upsampleFn = "upsample_fn"
        }

        public init() {}

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            latentChannels = try c.decodeIfPresent(Int.self, forKey: .latentChannels) ?? 4
            outChannels = try c.decodeIfPresent(Int.self, forKey: .outChannels) ?? 3
            blockOutChannels = try c.decodeIfPresent([Int].self, forKey: .blockOutChannels) ?? [64, 64, 64, 64]
            blocks = try c.decodeIfPresent([Int].self, forKey: .blocks) ?? [3, 3, 3, 1]
            upsamplingScalingFactor = try c.decodeIfPresent(Int.self, forKey: .upsamplingScalingFactor) ?? 2
            for (key, want) in [(CodingKeys.actFn, "relu"), (.upsampleFn, "nearest")] {
                if let v = try c.decodeIfPresent(String.self, forKey: key), v != want {
                    throw DecodingError.dataCorruptedError(forKey: key, in: c, debugDescription: "'\(v)': only '\(want)' is supported")
                }
            }
        }

        /// Pixels per latent: 2 per upsampling.
        public var scaleFactor: Int { 1 << (blocks.count - 1) }
    }

    public let config: Config
    public let weights: any WeightStore
    /// The file or folder it was read from (what error messages and the program cache name it by).
    public let path: String

    /// A decoder of `config` over weights with diffusers' names (`decoder.layers.N.*`), e.g.
    /// `RandomWeights` for a benchmark; `path` names it.
    public init(config: Config, weights: any WeightStore, path: String) {
        self.config = config
        self.weights = weights
        self.path = path
    }

    /// Opens a diffusers `AutoencoderTiny` folder or a single `.safetensors` file.
    public init(path: String) throws {
        self.path = path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ModelFileError.cannotOpen(path: path, reason: "no such TAESD file or folder")
        }
        let file: SafetensorsFile
        var config = Config()
        if isDirectory.boolValue {
            let configPath = path + "/config.json"
            do {
                config = try decodeConfigJSON(Config.self, from: Data(contentsOf: URL(fileURLWithPath: configPath)))
            } catch let error as DecodingError {
                throw ModelFileError.malformed(path: configPath, detail: "not an AutoencoderTiny config: \(error)")
            } catch {
                throw ModelFileError.cannotOpen(path: configPath, reason: "\(error.localizedDescription)")
            }
            file = try SafetensorsFile(path: path + "/diffusion_pytorch_model.safetensors")
        } else {
            file = try SafetensorsFile(path: path)
        }
        let original = file.entries["decoder.layers.0.weight"] == nil
        if original {
            // taesd_decoder.safetensors: the latent width from the first convolution.
            guard let first = file.entries["1.weight"], first.shape.rank == 4 else {
                throw ModelFileError.unsupported(path: file.path, detail: "not a TAESD decoder: neither decoder.layers.0.weight (diffusers) nor 1.weight (taesd_decoder) is there")
            }
            config.latentChannels = first.shape[1]
            // Its depth from the layers present: blocks (k.conv.0.weight), weightless upsamplings,
            // and the convolution that ends each level (the last one with a bias).
            var i = 3, count = 0, blocks: [Int] = []
            while i < 256 {
                if file.entries["\(i).conv.0.weight"] != nil {
                    count += 1
                } else if let conv = file.entries["\(i).weight"] {
                    blocks.append(count)
                    count = 0
                    if file.entries["\(i).bias"] != nil {
                        config.outChannels = conv.shape[0]
                        break
                    }
                } else if file.entries["\(i + 1).weight"] == nil {
                    throw ModelFileError.malformed(path: file.path, detail: "TAESD decoder layer \(i + 1): expected a block (\(i + 1).conv.0.weight) or a convolution (\(i + 1).weight)")
                }
                i += 1
            }
            config.blocks = blocks
            config.blockOutChannels = Array(repeating: first.shape[0], count: blocks.count)
        }
        guard config.blocks.count == config.blockOutChannels.count, !config.blocks.isEmpty,
              Set(config.blockOutChannels).count == 1, config.upsamplingScalingFactor == 2 else {
            throw ModelFileError.unsupported(path: path, detail: "AutoencoderTiny decoder with blocks \(config.blocks), channels \(config.blockOutChannels), upsampling \(config.upsamplingScalingFactor): expected one channel count and 2× upsampling")
        }
        self.config = config
        weights = SafetensorsWeights(files: [file], aliases: { name in
            guard original, name.hasPrefix("decoder.layers.") else { return [StoredTensor(name)] }
            let rest = name.dropFirst("decoder.layers.".count)
            guard let dot = rest.firstIndex(of: "."), let index = Int(rest[..<dot]) else { return [StoredTensor(name)] }
            return [StoredTensor("\(index + 1)\(rest[dot...])")]
        })
    }

    /// The decoder after its clamp: latents already passed through 3·tanh(x/3) (`clamp`) → image
    /// in [-1, 1]. ReLU is a clamp below at 0.
    public func build(_ g: Graph, clampedLatents x: Value) throws -> Value {
        let c = config
        let m = Module(graph: g, weights: weights, prefix: "decoder.layers")
        func relu(_ v: Value) throws -> Value { try g.clamp(v, min: 0, max: .greatestFiniteMagnitude) }
        // Layer indices as diffusers' `DecoderTiny.layers`: conv, ReLU, blocks, upsample, conv, …
        var h = try relu(try m.conv(x, "0", in: c.latentChannels, out: c.blockOutChannels[0], kernel: 3))
        var index = 2
        for (i, n) in c.blocks.enumerated() {
            let ch = c.blockOutChannels[i], last = i == c.blocks.count - 1
            for _ in 0..<n {
                h = try tinyBlock(m.child("\(index)"), h, channels: ch)
                index += 1
            }
            if !last {
                h = try g.upsampleNearest2x(h)
                index += 1
            }
            h = try m.conv(h, "\(index)", in: ch, out: last ? c.outChannels : ch, kernel: 3, bias: last)
            index += 1
        }
        return try g.affine(h, multiplier: 2, addend: -1)
    }

    /// TAESD's input clamp, 3·tanh(x/3), on the host (the graph has no tanh).
    public static func clamp(_ latents: Tensor) throws -> Tensor {
        try Tensor(shape: latents.shape, values: latents.toFloats().map { 3 * tanh($0 / 3) })
    }

    /// Decodes `latents` [N, C, h, w] to images [N, 3, 8h, 8w] in [-1, 1] on `executor`.
    public func decode(_ latents: Tensor, executor: any Executor) throws -> Tensor {
        guard latents.shape.rank == 4, latents.shape[1] == config.latentChannels else {
            throw ModelFileError.unsupported(path: path, detail: "latents \(latents.shape): this TAESD decodes [N, \(config.latentChannels), h, w]")
        }
        let g = Graph()
        let x = try g.input("latents", shape: latents.shape)
        let y = try build(g, clampedLatents: x)
        return try executor.compile(g, outputs: [y]).run(["latents": try Self.clamp(latents)])[y]!
    }
}

/// `AutoencoderTinyBlock` of a width that does not change: three 3×3 convolutions with ReLU between,
/// the input added back (the skip is the identity), then ReLU.
func tinyBlock(_ b: Module, _ h: Value, channels ch: Int) throws -> Value {
    let g = b.graph
    func relu(_ v: Value) throws -> Value { try g.clamp(v, min: 0, max: .greatestFiniteMagnitude) }
    var y = try relu(try b.conv(h, "conv.0", in: ch, out: ch, kernel: 3))
    y = try relu(try b.conv(y, "conv.2", in: ch, out: ch, kernel: 3))
    y = try b.conv(y, "conv.4", in: ch, out: ch, kernel: 3)
    return try relu(try g.add(y, h))
}
