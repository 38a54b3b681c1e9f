import Foundation
import LumenRuntime

extension StableDiffusionModel {
    /// What kind of model of its family this is, as far as the files show: SDXL base, an
    /// inpainting UNet, an LCM-distilled UNet, a few-step (Turbo-style) scheduler config. For
    /// `lumen info`.
    public var variant: String {
        var parts: [String] = []
        if let refiner {
            parts.append("refiner (OpenCLIP bigG only; " + (refiner.requiresAestheticsScore
                ? "aesthetic-score conditioning: 6.0, negative 2.5 unless the request says"
                : "size conditioning, no aesthetic score") + "; force_zeros_for_empty_prompt \(refiner.forceZerosForEmptyPrompt); "
                + "image-to-image, or after a base with --refiner)")
        } else if family == .sdxl { parts.append("base (two text encoders)") }
        if unetConfig.inChannels == 9 { parts.append("inpainting (9-channel UNet)") }
        if let w = unetConfig.timeCondProjDim { parts.append("LCM-distilled UNet (guidance embedding, time_cond_proj_dim \(w))") }
        if let path = schedulerConfigPath, let s = try? SchedulerConfig(path: path) {
            if s.className == "EulerAncestralDiscreteScheduler" && s.timestepSpacing == "trailing" {
                parts.append("Turbo-style scheduler config (Euler ancestral, trailing spacing: 1–4 steps, guidance 0)")
            } else if s.className == "LCMScheduler" {
                parts.append("LCM scheduler config")
            }
            if s.predictionType == "v_prediction" { parts.append("v-prediction") }
        }
        return parts.isEmpty ? "standard" : parts.joined(separator: ", ")
    }

    /// Folders of families Lumen does not run, refused naming what was found (`model_index.json`'s
    /// pipeline class, or the text encoder's architecture).
    static func refuseOtherFamilies(folder: String) throws {
        func read(_ name: String) -> [String: Any]? {
            guard let data = try? RegularFile.read((folder as NSString).appendingPathComponent(name)) else { return nil }
            return try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        }
        let pipelineClass = read("model_index.json")?["_class_name"] as? String ?? ""
        let architectures = (read("text_encoder/config.json")?["architectures"] as? [String]) ?? []
        if pipelineClass.contains("Kolors") || architectures.contains(where: { $0.contains("ChatGLM") }) {
            throw ModelFileError.unsupported(
                path: folder, detail: "this is a Kolors model (\(pipelineClass.isEmpty ? "" : pipelineClass + ", ")ChatGLM text encoder), which Lumen does not support (Stable Diffusion 1.x, 2.x and XL only)")
        }
        for (needle, family) in [("StableDiffusion3", "Stable Diffusion 3"), ("Flux", "Flux"), ("PixArt", "PixArt"),
                                 ("StableCascade", "Stable Cascade"), ("HunyuanDiT", "Hunyuan-DiT")] where pipelineClass.contains(needle) {
            throw ModelFileError.unsupported(path: folder, detail: "this is a \(family) model (\(pipelineClass)), which Lumen does not support (Stable Diffusion 1.x, 2.x and XL only)")
        }
    }
}
