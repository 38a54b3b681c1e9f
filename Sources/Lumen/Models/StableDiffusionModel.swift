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

/// Which weight files to read when a diffusers folder holds both the plain files and the
/// `.fp16.safetensors` variant (`--precision`). A folder with only one of them is read as it is.
public enum WeightPrecision: String, Sendable, Hashable, CaseIterable {
    /// What the backend computes best from: the plain (full-precision) files, since every
    /// executor so far accumulates in f32 and widens f16 weights exactly.
    case auto
    /// The plain files.
    case fp32
    /// The `.fp16.safetensors` variant files.
    case fp16

    var prefersFP16: Bool { self == .fp16 }
}

/// A Stable Diffusion model on disk: the three networks' configs and weights (memory-mapped),
/// ready to be built into graphs.
public final class StableDiffusionModel {
    public let path: String
    public let family: ModelFamily
    public let layout: ModelLayout
    public let textEncoderConfig: CLIPTextConfig
    public let unetConfig: UNet2DConditionConfig
    /// The VAE's config: the model's own, or that of the separate VAE that replaced it.
    public internal(set) var vaeConfig: AutoencoderKLConfig
    public let textEncoderWeights: SafetensorsWeights
    public let unetWeights: SafetensorsWeights
    public internal(set) var vaeWeights: SafetensorsWeights
    /// The separate VAE that replaced the model's own (`--vae`), if any.
    public internal(set) var vaeSource: VAESource?
    /// What the loader recognised beyond family and layout, for `lumen info`: the naming
    /// conventions, variant files chosen, defaults applied and tensors skipped.
    public internal(set) var recognised: [String] = []
    /// A single file's own marks of how it was trained, which diffusers' `from_single_file` does
    /// not read: `v_pred` (v-prediction) and `ztsnr` (zero terminal SNR), the empty tensors
    /// NoobAI-XL's v-prediction files and others carry, and `edm_vpred.sigma_max` (CosXL's EDM
    /// v-prediction, with its sigma range). Read only to say so (`Pipeline.notices(for:)`).
    public internal(set) var trainingMarkers: [String] = []
    /// The folder holding tokenizer files (vocab.json + merges.txt, or tokenizer.json), if the model has one.
    public let tokenizerPath: String?
    /// The scheduler config file, if the model has one.
    public internal(set) var schedulerConfigPath: String?
    /// The scheduler settings when there is no `scheduler_config.json` (a single file without
    /// `--config`: its family's, see `singleFileDefaults`).
    public internal(set) var schedulerDefaults: SchedulerConfig?
    /// For a single file, the defaults of its family that diffusers' `from_single_file` would use
    /// (applied to whatever `--config` does not give).
    public internal(set) var singleFileDefaults: SingleFileDefaults?
    /// The padding token when it differs from the tokenizer folder's (SD 2.x single files: "!").
    public internal(set) var tokenizerPadToken: String?
    /// What SDXL has beyond SD 1.x/2.x (nil for those).
    public internal(set) var xl: SDXLParts?
    /// SDXL's second text encoder, from `xl`.
    public var textEncoder2: (config: CLIPTextConfig, weights: SafetensorsWeights)? {
        xl.map { ($0.textEncoder2Config, $0.textEncoder2Weights) }
    }
    /// What an SDXL refiner has beyond its one text encoder (nil for other models). A refiner's
    /// `textEncoderConfig`/`textEncoderWeights` are its only encoder, OpenCLIP bigG (diffusers'
    /// `text_encoder_2`), and `xl` is nil (StableDiffusionModel+Refiner.swift).
    public internal(set) var refiner: SDXLRefinerParts?
    /// SDXL's `force_zeros_for_empty_prompt` (false for the other families).
    public var forceZerosForEmptyPrompt: Bool { xl?.forceZerosForEmptyPrompt ?? refiner?.forceZerosForEmptyPrompt ?? false }

    /// Textual-inversion embeddings the text encoders know (`add(embeddings:)`, TextualInversion.swift).
    public internal(set) var embeddings: [TextualInversion] = []
    /// LoRAs merged into the UNet and text-encoder weights as they are read (`apply(loras:)`).
    public private(set) var loras: [(lora: LoRA, strength: Float)] = []
    /// LoRA modules merged so far, by file: every one must find its weight (`checkLoRAsApplied`).
    private var appliedLoRAModules: [ObjectIdentifier: Set<String>] = [:]

    /// Merges `loras` into the UNet and text encoder(s) as their weights are read; call before any
    /// network is built.
    public func apply(loras specs: [LoRAWeight]) throws {
        for spec in specs {
            try spec.checkStrength()
            loras.append((try LoRA(path: spec.path), spec.strength))
        }
        guard !loras.isEmpty else { return }
        let L = unetConfig.layersPerBlock, upTypes = unetConfig.upBlockTypes
        // A refiner's one encoder is diffusers' text_encoder_2 (bigG).
        var stores = [(unetWeights, LoRA.Network.unet), (textEncoderWeights, refiner == nil ? .textEncoder : .textEncoder2)]
        if let xl { stores.append((xl.textEncoder2Weights, .textEncoder2)) }
        for (store, network) in stores {
            store.transform = { [unowned self] name, tensor in
                var t = tensor
                // kohya names SDXL's UNet modules as the original checkpoints do.
                let original = network == .unet ? String(OriginalCheckpointNames.unet(name, layersPerBlock: L, upBlockHasAttention: {
                    upTypes[$0] == .crossAttention
                }).dropFirst(OriginalCheckpointNames.unetPrefix.count)) : nil
                for (lora, strength) in self.loras {
                    guard let f = lora.factors(network, weightName: name, originalName: original) else { continue }
                    t = try lora.merged(f, weightName: name, weight: t, strength: strength)
                    self.appliedLoRAModules[ObjectIdentifier(lora), default: []].insert(f.key)
                }
                return t
            }
        }
    }

    /// Throws when a LoRA holds a module that no weight of the built networks matched: an
    /// adapter for another model (an SDXL LoRA on SD 1.5, …) would otherwise change nothing silently.
    public func checkLoRAsApplied() throws {
        for (lora, _) in loras {
            let applied = appliedLoRAModules[ObjectIdentifier(lora)] ?? []
            let missing = Set(lora.modules.values.flatMap { $0.values.map(\.key) }).subtracting(applied).sorted()
            if !missing.isEmpty {
                throw ModelFileError.unsupported(
                    path: lora.path, detail: "\(missing.count) of its \(lora.moduleCount) modules match no layer of this \(family.rawValue) model "
                        + "(an adapter for another model?), e.g. '\(missing[0])'")
            }
        }
    }

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
    /// `vaePath` replaces the model's VAE with another (a single-file VAE or a diffusers `vae/`
    /// folder); `precision` picks between plain and `.fp16` files where a folder has both.
    public static func load(path: String, configFolder: String? = nil, vaePath: String? = nil,
                            precision: WeightPrecision = .auto) throws -> StableDiffusionModel {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw ModelFileError.missingFile(path: path, detail: "no such file or folder")
        }
        try checkConfigFiles(in: isDir.boolValue ? path : nil, configFolder)
        let model = isDir.boolValue ? try loadFolder(path, precision: precision) : try loadSingleFile(inferring: path, configFolder: configFolder)
        if let vaePath {
            try model.replaceVAE(with: vaePath, precision: precision)
            try model.checkReplacedVAEConfig(vaePath)
        }
        return model
    }

    /// Uses the scheduler config at `path` in place of the model's own (a folder's, or a single
    /// file's family defaults): for the files whose training diffusers cannot tell from their
    /// tensors (v-prediction, zero terminal SNR, EDM). Throws `SchedulerError` naming the file
    /// when it cannot be read.
    func replaceSchedulerConfig(with path: String) throws {
        _ = try SchedulerConfig(path: path)
        recognised.append("scheduler config \(path) in place of " + (schedulerConfigPath ?? "the family's defaults"))
        schedulerConfigPath = path
        schedulerDefaults = nil
    }

    // MARK: - diffusers folders

    private static func loadFolder(_ path: String, precision: WeightPrecision) throws -> StableDiffusionModel {
        let fm = FileManager.default
        func sub(_ s: String) -> String { (path as NSString).appendingPathComponent(s) }
        let contents = (try? fm.contentsOfDirectory(atPath: path)) ?? []
        guard !contents.isEmpty else {
            throw ModelFileError.missingFile(path: path, detail: "the folder is empty; expected a diffusers model (model_index.json, unet/, vae/, text_encoder/) or a .safetensors file")
        }
        try refuseOtherFamilies(folder: path)  // #15: Kolors, SD3, Flux, … named by their pipeline class
        if contents.contains("transformer") {
            let family: ModelFamily = contents.contains("text_encoder_3") ? .sd3 : .flux
            throw ModelFileError.unsupported(path: path, detail: "this is a \(family.rawValue) model, which Lumen does not support yet (Stable Diffusion 1.x, 2.x and XL only)")
        }
        let xl = contents.contains("text_encoder_2")
        if xl {
            for part in ["tokenizer_2"] where !contents.contains(part) {
                throw ModelFileError.missingFile(path: sub(part), detail: "missing: an SDXL folder has text_encoder_2/ and tokenizer_2/")
            }
        }
        // An SDXL refiner has only the second (bigG) encoder: it is the model's one text encoder.
        let isRefiner = xl && !contents.contains("text_encoder")
        let textFolder = isRefiner ? "text_encoder_2" : "text_encoder"
        for part in ["unet", "vae", "text_encoder"] where !contents.contains(part) && !(part == "text_encoder" && isRefiner) {
            throw ModelFileError.missingFile(path: sub(part), detail: "missing: a diffusers Stable Diffusion folder has unet/, vae/ and text_encoder/")
        }
        let text = try loadConfig(CLIPTextConfig.self, path: sub("\(textFolder)/config.json"))
        let unet = try loadConfig(UNet2DConditionConfig.self, path: sub("unet/config.json"))
        let vae = try loadConfig(AutoencoderKLConfig.self, path: sub("vae/config.json"))
        var recognised: [String] = []
        let textFiles = try weightFiles(in: sub(textFolder), base: "model", preferFP16: precision.prefersFP16, notes: &recognised)
        let textWeights = SafetensorsWeights(files: textFiles) { name in
            StoredTensor.transformersText(name)
        }
        let unetWeights = SafetensorsWeights(files: try weightFiles(in: sub("unet"), base: "diffusion_pytorch_model",
                                                                    preferFP16: precision.prefersFP16, notes: &recognised))
        let vaeWeights = SafetensorsWeights(files: try weightFiles(in: sub("vae"), base: "diffusion_pytorch_model",
                                                                   preferFP16: precision.prefersFP16, notes: &recognised))
        let prefixed = textFiles.contains { f in f.entries.keys.contains { $0.hasPrefix("text_model.") } }
        recognised.append(prefixed ? "text encoder names with the text_model. prefix (transformers 4)"
                                   : "text encoder names without the text_model. prefix (transformers 5)")
        recognised += skippedBuffers(textWeights, "text encoder") + skippedBuffers(unetWeights, "unet") + skippedBuffers(vaeWeights, "vae")
        if !configHasKey(sub("vae/config.json"), "scaling_factor") {
            recognised.append("vae config has no scaling_factor: \(vae.scalingFactor) (the Stable Diffusion 1.x/2.x value)")
        }
        // 2.x: OpenCLIP's text tower (GELU; 1.x's CLIP ViT-L uses quick_gelu), 1024 wide.
        let family: ModelFamily = xl ? .sdxl : text.hiddenAct == .gelu || unet.crossAttentionDim == 1024 || text.hiddenSize == 1024 ? .sd2 : .sd1
        let tokenizerFolder = sub(isRefiner ? "tokenizer_2" : "tokenizer")
        let tokenizer = fm.fileExists(atPath: tokenizerFolder) ? tokenizerFolder : nil
        if let tokenizer {
            let classic = fm.fileExists(atPath: tokenizer + "/vocab.json") && fm.fileExists(atPath: tokenizer + "/merges.txt")
            recognised.append(classic ? "tokenizer as vocab.json + merges.txt"
                                      : fm.fileExists(atPath: tokenizer + "/tokenizer.json") ? "tokenizer as tokenizer.json only (transformers 5)"
                                      : "tokenizer folder without vocab.json + merges.txt or tokenizer.json")
        }
        let scheduler = fm.fileExists(atPath: sub("scheduler/scheduler_config.json")) ? sub("scheduler/scheduler_config.json") : nil
        let model = StableDiffusionModel(path: path, family: family, layout: .diffusersFolder, text: text, unet: unet, vae: vae,
                                         textWeights: textWeights, unetWeights: unetWeights, vaeWeights: vaeWeights,
                                         tokenizerPath: tokenizer, schedulerConfigPath: scheduler)
        if isRefiner {
            recognised += try model.setRefinerParts(folder: path)  // StableDiffusionModel+Refiner.swift
        } else if xl {
            let config2 = try loadConfig(CLIPTextConfig.self, path: sub("text_encoder_2/config.json"))
            guard config2.projectionDim != nil else {
                throw ModelFileError.malformed(path: sub("text_encoder_2/config.json"), detail: "no projection_dim: SDXL's second text encoder is a CLIPTextModelWithProjection")
            }
            let files2 = try weightFiles(in: sub("text_encoder_2"), base: "model", preferFP16: precision.prefersFP16, notes: &recognised)
            var forceZeros = true  // StableDiffusionXLPipeline's default
            if let data = try? RegularFile.read(sub("model_index.json")),
               let index = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
                forceZeros = index["force_zeros_for_empty_prompt"] as? Bool ?? true
            }
            model.xl = SDXLParts(textEncoder2Config: config2,
                                 textEncoder2Weights: SafetensorsWeights(files: files2) { StoredTensor.transformersText($0) },
                                 tokenizer2Path: sub("tokenizer_2"), forceZerosForEmptyPrompt: forceZeros)
            recognised.append("SDXL: text_encoder_2 (with projection) and tokenizer_2; force_zeros_for_empty_prompt \(model.forceZerosForEmptyPrompt)")
        }
        model.recognised = recognised
        return model
    }

    /// Integer tensors of a network's files (such as transformers' `position_ids` buffer): the
    /// model never reads them, so they are skipped rather than rejected. One note per network.
    static func skippedBuffers(_ store: SafetensorsWeights, _ network: String) -> [String] {
        let names = store.files.flatMap { f in
            f.entries.filter { key, e in
                !(e.dtype?.isFloatingPoint ?? false) && !key.hasPrefix("model_ema.") && (store.scope.map { key.hasPrefix($0) } ?? true)
            }.map(\.key)
        }.sorted()
        guard !names.isEmpty else { return [] }
        let shown = names.prefix(3).joined(separator: ", ") + (names.count > 3 ? ", …" : "")
        return ["\(network): skipped \(names.count) integer buffer\(names.count == 1 ? "" : "s") the model does not use (\(shown))"]
    }

    /// Whether a JSON config file sets `key` (to tell a default from a stated value).
    /// The JSON files a folder may hold, relative to it.
    static let configFiles = [
        "model_index.json", "text_encoder/config.json", "text_encoder_2/config.json", "unet/config.json", "vae/config.json",
        "scheduler/scheduler_config.json", "config.json",
    ]

    /// Refuses a FIFO, socket, device or folder in place of a config file of the model folder, the
    /// `--config` folder or a `--vae` folder before anything reads it (reading a FIFO blocks
    /// forever); the configs' own readers then see only regular files or missing ones.
    static func checkConfigFiles(in folders: String?...) throws {
        for case let folder? in folders {
            for name in configFiles {
                let path = (folder as NSString).appendingPathComponent(name)
                do { try RegularFile.checkIfPresent(path) } catch let error as FileError {
                    throw ModelFileError.cannotOpen(path: path, reason: error.reason)
                }
            }
        }
    }

    static func configHasKey(_ path: String, _ key: String) -> Bool {
        guard let data = try? RegularFile.read(path),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return false }
        return object[key] != nil
    }

    /// The safetensors files of one network: the plain file or the fp16 variant (the one
    /// `preferFP16` asks for when both are there, else whichever exists), else the shards an
    /// index names. Pickle files are refused without being read. A choice between two files is
    /// noted in `notes`.
    static func weightFiles(in folder: String, base: String, preferFP16: Bool, notes: inout [String]) throws -> [SafetensorsFile] {
        let fm = FileManager.default
        func file(_ name: String) -> String { (folder as NSString).appendingPathComponent(name) }
        let plain = "\(base).safetensors", half = "\(base).fp16.safetensors"
        let candidates = preferFP16 ? [half, plain] : [plain, half]
        for c in candidates where fm.fileExists(atPath: file(c)) {
            let other = c == plain ? half : plain
            let network = (folder as NSString).lastPathComponent
            if fm.fileExists(atPath: file(other)) {
                notes.append("\(network): both \(plain) and \(half) present; read \(c)"
                             + (preferFP16 ? " (precision fp16)" : " (precision fp32/auto; --precision fp16 reads the other)"))
            } else if c == half {
                notes.append("\(network): only the fp16 variant \(half)")
            }
            return [try SafetensorsFile(path: file(c))]
        }
        let indices = ["\(base).safetensors.index.json", "\(base).safetensors.index.fp16.json", "\(base).fp16.safetensors.index.json"]
        for index in preferFP16 ? Array(indices.reversed()) : indices
            where fm.fileExists(atPath: file(index)) {
            let data: Data
            do { data = try RegularFile.read(file(index)) } catch let error as FileError {
                throw ModelFileError.cannotOpen(path: file(index), reason: error.reason)
            }
            guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let map = json["weight_map"] as? [String: String]
            else {
                throw ModelFileError.malformed(path: file(index), detail: "expected a JSON object with a weight_map")
            }
            // Shards lie beside the index: a name with a slash would read a file elsewhere.
            if let outside = map.values.first(where: { $0.contains("/") || $0 == ".." || $0.isEmpty }) {
                throw ModelFileError.malformed(path: file(index), detail: "weight_map names '\(outside)', not a file beside the index")
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

/// SDXL's parts beyond SD 1.x/2.x: the second text encoder (OpenCLIP bigG as a
/// CLIPTextModelWithProjection), its tokenizer, and whether no negative prompt means zero
/// unconditional inputs (the pipeline's `force_zeros_for_empty_prompt`).
public struct SDXLParts {
    public let textEncoder2Config: CLIPTextConfig
    public let textEncoder2Weights: SafetensorsWeights
    public let tokenizer2Path: String?
    /// The second tokenizer's padding token when its folder is not the model's (SDXL single files: "!").
    public var tokenizer2PadToken: String? = nil
    public let forceZerosForEmptyPrompt: Bool
}
