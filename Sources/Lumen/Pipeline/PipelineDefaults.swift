/// The defaults of the diffusers pipeline a request maps to, for callers that leave a value unset
/// (`lumen generate` without `--steps`, `--guidance` or `--strength`): the same call in diffusers,
/// without those arguments, then draws the same image.
///
/// | pipeline (diffusers 0.42)                            | steps | guidance | strength |
/// |------------------------------------------------------|-------|----------|----------|
/// | StableDiffusion(Img2Img/ControlNet)Pipeline          | 50    | 7.5      | 0.8      |
/// | StableDiffusion(ControlNet)InpaintPipeline           | 50    | 7.5      | 1.0      |
/// | StableDiffusionXL(Img2Img/ControlNet)Pipeline        | 50    | 5.0      | 0.3      |
/// | StableDiffusionXLInpaintPipeline                     | 50    | 7.5      | 0.9999   |
/// | StableDiffusionInstructPix2PixPipeline               | 100   | 7.5      | (none)   |
///
/// The ControlNet pipelines' `controlnet_conditioning_scale`: 1.0 for text-to-image, 0.8 for
/// image-to-image (SD and SDXL), 0.5 for SD inpainting, 1.0 for SDXL inpainting.
public struct PipelineDefaults: Sendable, Hashable {
    public var steps: Int
    public var guidanceScale: Float
    /// The image-to-image strength (with a mask: the inpainting pipeline's).
    public var strength: Float
    /// A ControlNet's conditioning scale when the request gives none.
    public var controlNetScale: Float = 1

    public init(steps: Int, guidanceScale: Float, strength: Float, controlNetScale: Float = 1) {
        (self.steps, self.guidanceScale, self.strength, self.controlNetScale) = (steps, guidanceScale, strength, controlNetScale)
    }

    /// For a model (SDXL base or refiner, or SD 1.x/2.x), whether the request has a mask, and
    /// whether it starts from an image (which the ControlNet scale depends on).
    public init(model: StableDiffusionModel, masked: Bool, fromImage: Bool = false) {
        let xl = model.xl != nil || model.refiner != nil
        steps = model.isInstructPix2Pix ? 100 : 50
        guidanceScale = xl && !masked ? 5.0 : 7.5
        strength = masked ? (xl ? 0.9999 : 1.0) : (xl ? 0.3 : 0.8)
        controlNetScale = masked ? (xl ? 1.0 : 0.5) : (fromImage ? 0.8 : 1.0)
    }
}
