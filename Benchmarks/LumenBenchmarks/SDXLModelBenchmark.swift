import Foundation
import Lumen
import LumenRuntime

/// `lumen-bench model --model sdxl`: the full SDXL base architecture (the configs of
/// stabilityai/stable-diffusion-xl-base-1.0 in Tests/Fixtures/sdxl-configs, whose parameter counts
/// SDXLArchitectureTests checks against diffusers') with random f16 weights, written once as a
/// diffusers folder (about 7 GB: UNet 5.1 GB in shards, both text encoders, the VAE), timed phase
/// by phase: both text encoders, one UNet step at 1024×1024 with classifier-free guidance (batch
/// 2, added text embeds and time ids), the VAE decode at 1024×1024 (f32, as its force_upcast
/// config asks), and a whole `lumen generate` with its peak RSS.
extension SD15ModelBenchmark {
    /// The SDXL configs: Tests/Fixtures/sdxl-configs beside the tokenizer folder's fixtures.
    var sdxlConfigs: String { (tokenizerFolder as NSString).deletingLastPathComponent + "/../sdxl-configs" }

    func sdxlConfig<T: Decodable>(_ type: T.Type, _ name: String) throws -> T {
        let path = sdxlConfigs + "/\(name)/config.json"
        do {
            return try JSONDecoder().decode(T.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw ModelFileError.malformed(path: path, detail: "cannot read the SDXL config (pass --tokenizer Tests/Fixtures/tiny-sd/tokenizer from the repository root): \(error)")
        }
    }

    /// Writes the random-weight SDXL base folder once.
    func prepareSDXLModel(log: (String) -> Void) throws -> String {
        let fm = FileManager.default
        let marker = workDir + "/.complete"
        if fm.fileExists(atPath: marker) { return workDir }
        guard fm.fileExists(atPath: tokenizerFolder + "/vocab.json") else {
            throw GenerationError.tokenizerUnavailable("\(tokenizerFolder) has no vocab.json; pass --tokenizer")
        }
        log("writing a random-weight SDXL base model to \(workDir) (once, about 7 GB)")
        let textConfig = try sdxlConfig(CLIPTextConfig.self, "text_encoder")
        let text2Config = try sdxlConfig(CLIPTextConfig.self, "text_encoder_2")
        let unetConfig = try sdxlConfig(UNet2DConditionConfig.self, "unet")
        let vaeConfig = try sdxlConfig(AutoencoderKLConfig.self, "vae")
        for sub in ["unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"] {
            try fm.createDirectory(atPath: workDir + "/" + sub, withIntermediateDirectories: true)
        }
        for (folder, pad) in [("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")] {
            for f in ["vocab.json", "merges.txt"] {
                let dst = workDir + "/\(folder)/" + f
                if fm.fileExists(atPath: dst) { try fm.removeItem(atPath: dst) }
                try fm.copyItem(atPath: tokenizerFolder + "/" + f, toPath: dst)
            }
            try AtomicFile.write(Data(#"{"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "\#(pad)", "unk_token": "<|endoftext|>"}"#.utf8),
                                 to: workDir + "/\(folder)/special_tokens_map.json")
        }
        let g = Graph()
        let text = ShardedRecordingWeights(RandomWeights(seed: 1), folder: workDir + "/text_encoder", base: "model")
        _ = try CLIPTextModel(config: textConfig).build(g, ids: try g.input("ids", shape: [1, 77], dtype: .i32), weights: text)
        try text.finish()
        let text2 = ShardedRecordingWeights(RandomWeights(seed: 4), folder: workDir + "/text_encoder_2", base: "model")
        let encoder2 = CLIPTextModel(config: text2Config)
        let out2 = try encoder2.build(g, ids: try g.input("ids2", shape: [1, 77], dtype: .i32), weights: text2)
        _ = try encoder2.textEmbeds(g, out2, eosRows: try g.input("rows", shape: [1], dtype: .i32), weights: text2)
        try text2.finish()
        let vae = ShardedRecordingWeights(RandomWeights(seed: 2), folder: workDir + "/vae", base: "diffusion_pytorch_model")
        let v = AutoencoderKL(config: vaeConfig)
        _ = try v.decode(g, latents: try g.input("z", shape: [1, 4, 8, 8]), weights: vae)
        _ = try v.encode(g, image: try g.input("x", shape: [1, 3, 64, 64]), weights: vae)
        try vae.finish()
        // The UNet in 1 GB shards, so that no more than one shard is held before it is written.
        let unet = ShardedRecordingWeights(RandomWeights(seed: 3), folder: workDir + "/unet", base: "diffusion_pytorch_model", shardBytes: 1 << 30)
        let pooled = text2Config.projectionDim ?? text2Config.hiddenSize
        _ = try UNet2DConditionModel(config: unetConfig).build(
            g, sample: try g.input("s", shape: [1, 4, 8, 8]), timestep: try g.input("t", shape: [1]),
            context: try g.input("c", shape: [1, 77, unetConfig.crossAttentionDim]), weights: unet,
            added: (try g.input("text_embeds", shape: [1, pooled]), try g.input("time_ids", shape: [1, 6])))
        try unet.finish()
        for name in ["text_encoder", "text_encoder_2", "unet", "vae"] {
            try fm.copyItem(atPath: sdxlConfigs + "/\(name)/config.json", toPath: workDir + "/\(name)/config.json")
        }
        // stable-diffusion-xl-base-1.0's scheduler_config.json and model_index.json (what matters).
        try AtomicFile.write(Data(#"{"_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "interpolation_type": "linear", "prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "leading", "use_karras_sigmas": false}"#.utf8),
                             to: workDir + "/scheduler/scheduler_config.json")
        try AtomicFile.write(Data(#"{"_class_name": "StableDiffusionXLPipeline", "force_zeros_for_empty_prompt": true}"#.utf8), to: workDir + "/model_index.json")
        _ = fm.createFile(atPath: marker, contents: nil)
        return workDir
    }

    /// The SDXL phases: text-encode (both encoders, batch 2), unet-step-N (batch 2 with the added
    /// inputs), vae-decode-N (the first size).
    func runSDXLPhases(model folder: String, log: @escaping (String) -> Void) throws -> [Result] {
        let model = try StableDiffusionModel.load(path: folder)
        guard let xl = model.xl else { throw ModelFileError.unsupported(path: folder, detail: "not an SDXL base folder (no text_encoder_2)") }
        let runner = PhaseRunner(log: log, onResult: onResult)
        if phases.contains("text") {
            runner.attempt("text-encode") {
                let g = Graph()
                let ids = try g.input("ids", shape: [2, 77], dtype: .i32), ids2 = try g.input("ids2", shape: [2, 77], dtype: .i32)
                let rows = try g.input("rows", shape: [2], dtype: .i32)
                let h1 = try CLIPTextModel(config: model.textEncoderConfig).build(g, ids: ids, weights: model.textEncoderWeights).hiddenStates
                let encoder2 = CLIPTextModel(config: xl.textEncoder2Config)
                let out2 = try encoder2.build(g, ids: ids2, weights: xl.textEncoder2Weights)
                let pooled = try encoder2.textEmbeds(g, out2, eosRows: rows, weights: xl.textEncoder2Weights)
                // One output that needs both encoders' penultimate states and the pooled projection.
                let context = try g.concat([h1[h1.count - 2], out2.hiddenStates[out2.hiddenStates.count - 2]], axis: 2)
                let out = try g.concat([try g.reshape(context, [2, 77 * context.shape[2]]), pooled], axis: 1)
                var row = [Int32](repeating: 49407, count: 77)
                row[0] = 49406
                for i in 1..<9 { row[i] = Int32(320 + i) }
                var row2 = row
                for i in 10..<77 { row2[i] = 0 }  // the second tokenizer pads with "!"
                return try time("text-encode", graph: g, output: out, inputs: [
                    "ids": try Tensor(shape: [2, 77], indices: row + row), "ids2": try Tensor(shape: [2, 77], indices: row2 + row2),
                    "rows": try Tensor(shape: [2], indices: [9, 9])])
            }
        }
        let pooled = xl.textEncoder2Config.projectionDim ?? xl.textEncoder2Config.hiddenSize
        for image in imageSizes where phases.contains("unet") {
            let size = image / 8
            runner.attempt("unet-step-\(image)") {
                let g = Graph()
                let x = try g.input("sample", shape: [2, model.unetConfig.inChannels, size, size])
                let t = try g.input("timestep", shape: [2])
                let c = try g.input("context", shape: [2, 77, model.unetConfig.crossAttentionDim])
                let e = try g.input("text_embeds", shape: [2, pooled]), ids = try g.input("time_ids", shape: [2, 6])
                let y = try UNet2DConditionModel(config: model.unetConfig).build(g, sample: x, timestep: t, context: c, weights: model.unetWeights,
                                                                                added: (e, ids), maxTensorBytes: executor.maxTensorBytes)
                let s = Float(image)
                return try time("unet-step-\(image)", graph: g, output: y, inputs: [
                    "sample": try runner.random(x.shape), "timestep": try Tensor([981, 981]), "context": try runner.random(c.shape),
                    "text_embeds": try runner.random(e.shape), "time_ids": try Tensor(shape: [2, 6], values: [s, s, 0, 0, s, s, s, s, 0, 0, s, s])])
            }
        }
        if phases.contains("vae") {
            let image = imageSizes.first ?? 1024
            runner.attempt("vae-decode-\(image)") {
                let g = Graph()
                let z = try g.input("latents", shape: [1, model.vaeConfig.latentChannels, image / 8, image / 8])
                let y = try AutoencoderKL(config: model.vaeConfig).decode(g, latents: z, weights: model.vaeWeights)
                return try time("vae-decode-\(image)", graph: g, output: y, inputs: ["latents": try runner.random(z.shape)])
            }
        }
        return try runner.finish()
    }
}

/// Hands out another store's tensors and writes them as safetensors shards of at most
/// `shardBytes` as they accumulate (one file when they fit in one), with diffusers' index.
final class ShardedRecordingWeights: WeightStore {
    private let store: WeightStore
    private let folder: String, base: String, shardBytes: Int
    private var pending: [(String, Tensor)] = [], pendingBytes = 0
    private var seen: Set<String> = []
    private var shards: [(file: String, names: [String])] = []

    init(_ store: WeightStore, folder: String, base: String, shardBytes: Int = .max) {
        self.store = store
        self.folder = folder
        self.base = base
        self.shardBytes = shardBytes
    }

    func tensor(_ name: String, shape: Shape) throws -> Tensor {
        let t = try store.tensor(name, shape: shape)
        if seen.insert(name).inserted {
            if pendingBytes + t.byteCount > shardBytes && !pending.isEmpty { try flush() }
            pending.append((name, t))
            pendingBytes += t.byteCount
        }
        return t
    }

    private func flush() throws {
        let file = "\(base)-\(String(format: "%05d", shards.count + 1)).safetensors"
        try SafetensorsWriter.write(pending, to: folder + "/" + file)
        shards.append((file, pending.map(\.0)))
        pending.removeAll()
        pendingBytes = 0
    }

    /// Writes what is left: `base.safetensors` when nothing was flushed, else the last shard and
    /// `base.safetensors.index.json`.
    func finish() throws {
        if shards.isEmpty {
            try SafetensorsWriter.write(pending, to: folder + "/\(base).safetensors")
            pending.removeAll()
            return
        }
        if !pending.isEmpty { try flush() }
        var map: [String: String] = [:]
        for s in shards { for n in s.names { map[n] = s.file } }
        let index = try JSONSerialization.data(withJSONObject: ["metadata": [:] as [String: Any], "weight_map": map], options: [.sortedKeys])
        try AtomicFile.write(index, to: folder + "/\(base).safetensors.index.json")
    }
}
