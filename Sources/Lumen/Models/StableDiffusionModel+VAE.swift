import Foundation
import LumenRuntime

/// A VAE loaded from somewhere other than the model (`--vae`), and how its files were laid out.
public struct VAESource: Sendable, Hashable {
    public enum Layout: String, Sendable, Hashable {
        /// A diffusers `vae/` folder (config.json + diffusion_pytorch_model.safetensors).
        case diffusersFolder = "diffusers vae folder"
        /// One file with the original names, `encoder.*`/`decoder.*`, as the fine-tuned SD VAEs ship.
        case originalNames = "single-file VAE, original names (encoder.*, decoder.*)"
        /// One file with the original names under `first_stage_model.` (a checkpoint's VAE part).
        case checkpointNames = "single-file VAE, original names under first_stage_model."
        /// One file with diffusers' names (`encoder.down_blocks.*`).
        case diffusersNames = "single-file VAE, diffusers names (encoder.down_blocks.*)"
    }

    public let path: String
    public let layout: Layout

    public init(path: String, layout: Layout) {
        self.path = path
        self.layout = layout
    }
}

extension StableDiffusionModel {
    /// Replaces the model's VAE with the one at `path`: a single `.safetensors` file (original
    /// names with or without `first_stage_model.`, or diffusers names) or a diffusers `vae/`
    /// folder (or a model folder holding one). A single file carries no config: the shapes give
    /// the channels and levels, the model's own VAE config the rest (norm groups, scaling factor),
    /// as a replacement VAE has the architecture of the one it replaces.
    func replaceVAE(with path: String, precision: WeightPrecision) throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDir) else {
            throw ModelFileError.missingFile(path: path, detail: "--vae: no such file or folder")
        }
        let config: AutoencoderKLConfig, weights: SafetensorsWeights, layout: VAESource.Layout
        var notes: [String] = []
        if isDir.boolValue {
            try Self.checkConfigFiles(in: path, path + "/vae")
            var folder = path
            if !fm.fileExists(atPath: folder + "/config.json") && fm.fileExists(atPath: folder + "/vae/config.json") {
                folder += "/vae"  // a whole diffusers model: use its VAE
            }
            guard fm.fileExists(atPath: folder + "/config.json") else {
                throw ModelFileError.missingFile(
                    path: folder + "/config.json",
                    detail: "--vae: a VAE folder needs config.json and diffusion_pytorch_model.safetensors (a diffusers vae/ folder), or pass a single .safetensors VAE file")
            }
            config = try loadConfig(AutoencoderKLConfig.self, path: folder + "/config.json")
            if !Self.configHasKey(folder + "/config.json", "scaling_factor") {
                notes.append("separate vae config has no scaling_factor: \(config.scalingFactor) (the Stable Diffusion 1.x/2.x value)")
            }
            weights = SafetensorsWeights(files: try Self.weightFiles(in: folder, base: "diffusion_pytorch_model",
                                                                     preferFP16: precision.prefersFP16, notes: &notes))
            layout = .diffusersFolder
        } else {
            let lower = path.lowercased()
            if [".ckpt", ".pt", ".pth", ".bin"].contains(where: { lower.hasSuffix($0) }) {
                throw ModelFileError.unsupported(
                    path: path,
                    detail: "--vae: pickle files are never loaded (unpickling runs code); convert it to safetensors, e.g. "
                        + "python -c \"import torch, safetensors.torch as st; sd = torch.load('\((path as NSString).lastPathComponent)', weights_only=True); "
                        + "st.save_file({k: v.contiguous() for k, v in sd.get('state_dict', sd).items()}, 'vae.safetensors')\"")
            }
            let file = try SafetensorsFile(path: path)
            func has(_ prefix: String) -> Bool { file.entries.keys.contains { $0.hasPrefix(prefix) } }
            if has("first_stage_model.encoder.down.") {
                layout = .checkpointNames
                config = try Self.inferVAEConfig(file, prefix: OriginalCheckpointNames.vaePrefix, base: vaeConfig)
            } else if has("encoder.down.") {
                layout = .originalNames
                config = try Self.inferVAEConfig(file, prefix: "", base: vaeConfig)
            } else if has("encoder.down_blocks.") {
                layout = .diffusersNames
                let sibling = ((path as NSString).deletingLastPathComponent as NSString).appendingPathComponent("config.json")
                try Self.checkConfigFiles(in: (path as NSString).deletingLastPathComponent)
                if fm.fileExists(atPath: sibling) {
                    config = try loadConfig(AutoencoderKLConfig.self, path: sibling)
                } else {
                    config = try Self.inferDiffusersVAEConfig(file, base: vaeConfig)
                }
            } else {
                throw ModelFileError.unsupported(
                    path: path, detail: "--vae: no VAE tensors found (expected encoder.*/decoder.* or first_stage_model.encoder.*/decoder.*)")
            }
            let levels = config.blockOutChannels.count
            switch layout {
            case .originalNames:
                weights = SafetensorsWeights(files: [file]) { [StoredTensor(OriginalCheckpointNames.vae($0, levels: levels, prefix: ""))] }
            case .checkpointNames:
                weights = SafetensorsWeights(files: [file], scope: OriginalCheckpointNames.vaePrefix) { [StoredTensor(OriginalCheckpointNames.vae($0, levels: levels))] }
            default:
                weights = SafetensorsWeights(files: [file])
            }
            if file.entries.keys.contains(where: { $0.hasPrefix("model_ema.") }) {
                notes.append("separate vae: ignored the model_ema.* tensors")
            }
        }
        guard config.latentChannels == vaeConfig.latentChannels else {
            throw ModelFileError.unsupported(
                path: path, detail: "--vae: this VAE has \(config.latentChannels) latent channels; the model's UNet works on \(vaeConfig.latentChannels)")
        }
        notes += Self.skippedBuffers(weights, "separate vae")
        vaeConfig = config
        vaeWeights = weights
        vaeSource = VAESource(path: path, layout: layout)
        recognised.append("vae replaced by \(path) (\(layout.rawValue))")
        recognised += notes
    }

    /// The shape-given fields of a VAE file with diffusers' names, over `base`.
    static func inferDiffusersVAEConfig(_ file: SafetensorsFile, base: AutoencoderKLConfig) throws -> AutoencoderKLConfig {
        var c = base
        let levels = count(file, "encoder.down_blocks")
        c.layersPerBlock = count(file, "encoder.down_blocks.0.resnets")
        c.blockOutChannels = try (0..<levels).map { try shape(file, "encoder.down_blocks.\($0).resnets.0.conv1.weight")[0] }
        c.latentChannels = try shape(file, "decoder.conv_in.weight")[1]
        c.inChannels = try shape(file, "encoder.conv_in.weight")[1]
        c.outChannels = try shape(file, "decoder.conv_out.weight")[0]
        return c
    }
}
