import Foundation
import LumenRuntime

/// The model families Lumen recognises from tensor names and shapes.
public enum ModelFamily: String, Sendable, Hashable {
    case sd1 = "Stable Diffusion 1.x"
    case sd2 = "Stable Diffusion 2.x"
    case sdxl = "Stable Diffusion XL"
    case flux = "Flux"
    case sd3 = "Stable Diffusion 3"
    case unknown = "unknown"
}

/// How the weights were laid out on disk.
public enum ModelLayout: String, Sendable, Hashable {
    case diffusersFolder = "diffusers folder"
    case singleFile = "single-file checkpoint"
}

/// A Stable Diffusion model on disk: the three networks' configs and weights (memory-mapped),
/// ready to be built into graphs.
public final class StableDiffusionModel {
    public let path: String
    public let family: ModelFamily
    public let layout: ModelLayout
    public let textEncoderConfig: CLIPTextConfig
    public let unetConfig: UNet2DConditionConfig
    public let vaeConfig: AutoencoderKLConfig
    public let textEncoderWeights: SafetensorsWeights
    public let unetWeights: SafetensorsWeights
    public let vaeWeights: SafetensorsWeights
    /// The folder holding tokenizer files (vocab.json + merges.txt), if the model has one.
    public let tokenizerPath: String?
    /// The scheduler config file, if the model has one.
    public let schedulerConfigPath: String?

    /// Every file read.
    public var files: [String] {
        var seen = Set<String>()
        return (textEncoderWeights.files + unetWeights.files + vaeWeights.files).map(\.path).filter { seen.insert($0).inserted }
    }

    init(path: String, family: ModelFamily, layout: ModelLayout, text: CLIPTextConfig, unet: UNet2DConditionConfig,
         vae: AutoencoderKLConfig, textWeights: SafetensorsWeights, unetWeights: SafetensorsWeights,
         vaeWeights: SafetensorsWeights, tokenizerPath: String?, schedulerConfigPath: String?) {
        self.path = path
        self.family = family
        self.layout = layout
        self.textEncoderConfig = text
        self.unetConfig = unet
        self.vaeConfig = vae
        self.textEncoderWeights = textWeights
        self.unetWeights = unetWeights
        self.vaeWeights = vaeWeights
        self.tokenizerPath = tokenizerPath
        self.schedulerConfigPath = schedulerConfigPath
    }

    /// Opens a diffusers folder or a single-file `.safetensors` checkpoint. A single file carries
    /// no configs: they are inferred from its tensors' shapes, or read from `configFolder` (a
    /// diffusers folder of the same architecture, as diffusers' `from_single_file(config=…)`).
    public static func load(path: String, configFolder: String? = nil) throws -> StableDiffusionModel {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw ModelFileError.missingFile(path: path, detail: "no such file or folder")
        }
        if isDir.boolValue { return try loadFolder(path) }
        return try loadSingleFile(path, configFolder: configFolder)
    }

    // MARK: - diffusers folders

    private static func loadFolder(_ path: String) throws -> StableDiffusionModel {
        let fm = FileManager.default
        func sub(_ s: String) -> String { (path as NSString).appendingPathComponent(s) }
        let contents = (try? fm.contentsOfDirectory(atPath: path)) ?? []
        guard !contents.isEmpty else {
            throw ModelFileError.missingFile(path: path, detail: "the folder is empty; expected a diffusers model (model_index.json, unet/, vae/, text_encoder/) or a .safetensors file")
        }
        if contents.contains("text_encoder_2") || contents.contains("transformer") {
            let family: ModelFamily = contents.contains("transformer") ? (contents.contains("text_encoder_3") ? .sd3 : .flux) : .sdxl
            throw ModelFileError.unsupported(path: path, detail: "this is a \(family.rawValue) model, which Lumen does not support yet (Stable Diffusion 1.x only)")
        }
        for part in ["unet", "vae", "text_encoder"] where !contents.contains(part) {
            throw ModelFileError.missingFile(path: sub(part), detail: "missing: a diffusers Stable Diffusion folder has unet/, vae/ and text_encoder/")
        }
        let text = try loadConfig(CLIPTextConfig.self, path: sub("text_encoder/config.json"))
        let unet = try loadConfig(UNet2DConditionConfig.self, path: sub("unet/config.json"))
        let vae = try loadConfig(AutoencoderKLConfig.self, path: sub("vae/config.json"))
        let textWeights = SafetensorsWeights(files: try weightFiles(in: sub("text_encoder"), base: "model")) { name in
            // transformers 4 writes `text_model.…`; transformers 5 may drop the prefix.
            name.hasPrefix("text_model.") ? [name, String(name.dropFirst("text_model.".count))] : [name]
        }
        let unetWeights = SafetensorsWeights(files: try weightFiles(in: sub("unet"), base: "diffusion_pytorch_model"))
        let vaeWeights = SafetensorsWeights(files: try weightFiles(in: sub("vae"), base: "diffusion_pytorch_model"))
        let family: ModelFamily = unet.crossAttentionDim == 1024 || text.hiddenSize == 1024 ? .sd2 : .sd1
        let tokenizer = fm.fileExists(atPath: sub("tokenizer")) ? sub("tokenizer") : nil
        let scheduler = fm.fileExists(atPath: sub("scheduler/scheduler_config.json")) ? sub("scheduler/scheduler_config.json") : nil
        return StableDiffusionModel(path: path, family: family, layout: .diffusersFolder, text: text, unet: unet, vae: vae,
                                    textWeights: textWeights, unetWeights: unetWeights, vaeWeights: vaeWeights,
                                    tokenizerPath: tokenizer, schedulerConfigPath: scheduler)
    }

    /// The safetensors files of one network: the plain file, else the fp16 variant, else the
    /// shards an index names. Pickle files are refused without being read.
    static func weightFiles(in folder: String, base: String, preferFP16: Bool = false) throws -> [SafetensorsFile] {
        let fm = FileManager.default
        func file(_ name: String) -> String { (folder as NSString).appendingPathComponent(name) }
        let candidates = preferFP16 ? ["\(base).fp16.safetensors", "\(base).safetensors"] : ["\(base).safetensors", "\(base).fp16.safetensors"]
        for c in candidates where fm.fileExists(atPath: file(c)) {
            return [try SafetensorsFile(path: file(c))]
        }
        for index in ["\(base).safetensors.index.json", "\(base).safetensors.index.fp16.json", "\(base).fp16.safetensors.index.json"]
            where fm.fileExists(atPath: file(index)) {
            guard let data = fm.contents(atPath: file(index)),
                  let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let map = json["weight_map"] as? [String: String]
            else {
                throw ModelFileError.malformed(path: file(index), detail: "expected a JSON object with a weight_map")
            }
            return try Set(map.values).sorted().map { try SafetensorsFile(path: file($0)) }
        }
        let listing = (try? fm.contentsOfDirectory(atPath: folder)) ?? []
        if let pickle = listing.first(where: { $0.hasSuffix(".bin") || $0.hasSuffix(".ckpt") || $0.hasSuffix(".pt") }) {
            throw ModelFileError.unsupported(
                path: file(pickle),
                detail: "pickle weights are never loaded (unpickling runs code); convert them to safetensors, e.g. "
                    + "python -c \"import torch, safetensors.torch as st; st.save_file(torch.load('\(pickle)', weights_only=True), '\(base).safetensors')\"")
        }
        throw ModelFileError.missingFile(path: folder, detail: "no \(base).safetensors (or .fp16.safetensors, or a sharded index) found")
    }
}
