import ArgumentParser
import Foundation
import Lumen

/// `lumen info MODEL`: what Lumen recognised in a model folder or file.
struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info", abstract: "Show the family, layout, files, parameters and configs of a model.")

    @Argument(help: "A diffusers folder or a single-file .safetensors checkpoint.")
    var model: String

    @OptionGroup var files: ModelFileOptions

    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
        let m = try StableDiffusionModel.load(path: model, configFolder: files.config, vaePath: files.vae,
                                              precision: files.precision)
        let notices = try m.checkRunnable()  // what `generate` would refuse, info refuses too
        for notice in notices { FileHandle.standardError.write(Data("lumen: \(notice)\n".utf8)) }
        let networks = m.summary()
        if json {
            struct Info: Codable {
                let path, family, variant, layout: String
                let networks: [StableDiffusionModel.NetworkSummary]
                let text_encoder: CLIPTextConfig
                let unet: UNet2DConditionConfig
                let vae: AutoencoderKLConfig
                let tokenizer: String?
                let scheduler: String?
                let vae_path: String?
                let vae_layout: String?
                let recognised: [String]
                /// Single files: the repository whose configs stand in for the missing ones, and the scheduler config used.
                let defaults_from: String?
                let scheduler_defaults: SchedulerConfig?
            }
            let info = Info(path: m.path, family: m.family.rawValue, variant: m.variant, layout: m.layout.rawValue, networks: networks,
                            text_encoder: m.textEncoderConfig, unet: m.unetConfig, vae: m.vaeConfig,
                            tokenizer: m.tokenizerPath, scheduler: m.schedulerConfigPath,
                            vae_path: m.vaeSource?.path, vae_layout: m.vaeSource?.layout.rawValue, recognised: m.recognised,
                            defaults_from: m.singleFileDefaults?.repository, scheduler_defaults: m.schedulerDefaults)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(info), as: UTF8.self))
            return
        }
        print("model:   \(m.path)")
        print("family:  \(m.family.rawValue)")
        print("variant: \(m.variant)")
        print("layout:  \(m.layout.rawValue)")
        for note in m.recognised { print("    \(note)") }
        for n in networks {
            let dtypes = n.dtypes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            print("\(n.name.padding(toLength: 14, withPad: " ", startingAt: 0)) \(formatCount(n.parameters)) parameters (\(dtypes))")
            for f in n.files { print("    read \(f)") }
        }
        let t = m.textEncoderConfig, u = m.unetConfig, v = m.vaeConfig
        print("text encoder: hidden \(t.hiddenSize), \(t.numHiddenLayers) layers, \(t.numAttentionHeads) heads, \(t.hiddenAct.rawValue), vocab \(t.vocabSize)")
        if let xl = m.xl {
            let t2 = xl.textEncoder2Config
            print("text encoder 2: hidden \(t2.hiddenSize), \(t2.numHiddenLayers) layers, \(t2.numAttentionHeads) heads, \(t2.hiddenAct.rawValue), "
                  + "projection \(t2.projectionDim ?? 0); tokenizer \(xl.tokenizer2Path ?? "none")")
        }
        print("unet:    channels \(u.blockOutChannels), \(u.layersPerBlock) layers/block, cross-attention \(u.crossAttentionDim), "
              + "heads \(u.blockOutChannels.indices.map { u.heads(block: $0) }), linear projection \(u.useLinearProjection)")
        print("         down \(u.downBlockTypes.map(\.rawValue)), up \(u.upBlockTypes.map(\.rawValue))")
        print("vae:     channels \(v.blockOutChannels), \(v.layersPerBlock) layers/block, latent \(v.latentChannels), "
              + "scale factor \(v.scaleFactor), scaling \(v.scalingFactor)"
              + (v.latentStatistics.map { ", latents mean \($0.mean) std \($0.std) (SDXL pipelines)" } ?? ""))
        let pad = m.tokenizerPadToken.map { ", padded with \"\($0)\"" } ?? ""
        print("tokenizer: \(m.tokenizerPath ?? "none (the bundled CLIP vocabulary would be used\(pad))")")
        let defaults = m.schedulerDefaults.map { s in
            "none: \(s.className ?? "PNDMScheduler") as \(m.singleFileDefaults?.repository ?? "Stable Diffusion 1.x") ships it (\((s.noiseScheduleSummary + ["\(s.predictionType ?? "epsilon") prediction"]).joined(separator: ", ")))"
        }
        print("scheduler: \(m.schedulerConfigPath ?? defaults ?? "none (defaults)")")
    }

    private func formatCount(_ n: Int) -> String {
        let s = String(n)
        var out = ""
        for (i, c) in s.reversed().enumerated() {
            if i > 0 && i % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return String(out.reversed())
    }
}
