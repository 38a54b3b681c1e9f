/// The stages whose output the pipeline checks for NaN and infinity: a value that leaves the float
/// range (an fp16 VAE overflowing, a LoRA at strength 1e30, guidance of 1e38, weights holding NaN)
/// poisons everything after it and would come out as a black or grey image; stopping at the first
/// stage that goes non-finite says where it happened and what to change.
enum GenerationStage {
    case textEncoder
    case vaeEncode
    case unetStep(Int, of: Int)
    case vaeDecode
    case taesdDecode
    case taesdEncode

    var name: String {
        switch self {
        case .textEncoder: return "text encoder"
        case .vaeEncode: return "VAE encoder (of the init image)"
        case .unetStep(let k, let n): return "UNet at step \(k) of \(n)"
        case .vaeDecode: return "VAE decoder"
        case .taesdDecode: return "TAESD decoder"
        case .taesdEncode: return "TAESD encoder (of the init image)"
        }
    }
}

extension Pipeline {
    /// Throws `GenerationError.nonFinite` when `values` hold a NaN or an infinity.
    func checkFinite(_ values: [Float], stage: GenerationStage, request: GenerationRequest? = nil) throws {
        try ensureFinite(values, stage: stage, withLoRAs: !model.loras.isEmpty, request: request)
    }
}

/// Throws `GenerationError.nonFinite` when `values` hold a NaN or an infinity, with a hint for
/// `stage` (which mentions the LoRA strength when LoRAs are merged).
func ensureFinite(_ values: [Float], stage: GenerationStage, withLoRAs: Bool, request: GenerationRequest? = nil) throws {
    // One pass with no early exit vectorises; this runs once per step on the latents only.
    var bad = false
    for v in values where !v.isFinite { bad = true; break }
    guard bad else { return }
    let lora = withLoRAs ? ", a lower LoRA strength" : ""
    let hint: String
    switch stage {
    case .textEncoder:
        hint = "its weights\(withLoRAs ? " (with the LoRA merged)" : "") overflow or hold NaN; try --precision fp32\(lora), or check the text encoder's file"
    case .vaeEncode:
        hint = "the VAE overflows on this image (fp16 VAEs can): try f32 (--precision fp32 or --backend cpu), or --vae with an fp16-safe VAE"
    case .unetStep(let k, _):
        let options = [request.map { "a lower guidance scale (now \($0.guidanceScale))" }, withLoRAs ? "a lower LoRA strength" : nil,
                       "f32 weights (--precision fp32 or --backend cpu)"].compactMap { $0 }
        hint = "try " + (options.count > 1 ? options.dropLast().joined(separator: ", ") + ", or " : "") + options[options.count - 1]
            + (k == 1 ? "; NaN at the first step also means the UNet's weights may hold NaN or Inf" : "")
    case .taesdDecode:
        hint = "the TAESD decoder's weights may hold NaN or Inf: check the TAESD file, or decode with the model's VAE"
    case .taesdEncode:
        hint = "the TAESD encoder's weights may hold NaN or Inf: check the TAESD file, or encode with the model's VAE"
    case .vaeDecode:
        hint = "fp16 VAEs overflow (SDXL's original VAE does): decode in f32 (--precision fp32 or --backend cpu), or pass --vae with an fp16-safe VAE (e.g. madebyollin/sdxl-vae-fp16-fix)"
    }
    throw GenerationError.nonFinite(stage: stage.name, hint: hint)
}
