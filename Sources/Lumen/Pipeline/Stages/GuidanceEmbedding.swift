import Foundation
import LumenRuntime

/// An LCM-distilled UNet's guidance input (`time_cond_proj_dim`): the guidance scale w is not
/// applied by mixing two batches but fed to the UNet as a sinusoidal embedding of (w − 1)·1000
/// (diffusers' `get_guidance_scale_embedding`: sin of the first half of the frequencies, then cos,
/// frequencies exp(−k·ln 10000 / (half − 1)), a zero column when the width is odd), added to the
/// timestep embedding through `time_embedding.cond_proj`. A hook so that the denoising loop
/// stays unaware of it: the same input every step.
struct GuidanceEmbedding: DenoisingHook {
    /// [batch, dim].
    let embedding: Tensor

    init(guidanceScale: Float, dim: Int, batch: Int) throws {
        embedding = try Tensor(shape: [batch, dim], values: Array(repeating: Self.values(guidanceScale: guidanceScale, dim: dim), count: batch).flatMap { $0 })
    }

    /// One row, computed in f32 as torch does.
    static func values(guidanceScale: Float, dim: Int) -> [Float] {
        let half = dim / 2
        let w = (guidanceScale - 1) * 1000
        let step = Float(log(10000.0)) / Float(max(half - 1, 1))
        let freqs = (0..<half).map { Float(exp(Float($0) * -step)) }
        var row = freqs.map { sin(w * $0) } + freqs.map { cos(w * $0) }
        if dim % 2 == 1 { row.append(0) }
        return row
    }

    func unetInputs(step: Int, timestep: Float, modelInput: Tensor) throws -> [String: Tensor] {
        ["timestep_cond": embedding]
    }
}

extension UNet2DConditionConfig {
    /// Whether guidance goes into the UNet as an embedding (LCM-distilled), not as a second batch.
    var embedsGuidance: Bool { timeCondProjDim != nil }
}

extension Pipeline {
    /// The guidance-embedding hook of an LCM-distilled UNet, none for others.
    func lcmGuidanceHook(_ request: GenerationRequest, batch: Int) throws -> [any DenoisingHook] {
        guard let d = model.unetConfig.timeCondProjDim else { return [] }
        return [try GuidanceEmbedding(guidanceScale: request.guidanceScale, dim: d, batch: batch)]
    }
}
