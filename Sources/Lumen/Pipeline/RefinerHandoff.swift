import LumenRuntime

/// SDXL's base-to-refiner handoff (diffusers' "ensemble of experts"): the base runs the noisiest
/// part of the schedule and stops (`denoising_end`, `output_type="latent"`), and the refiner, a
/// second `Pipeline`, finishes from those latents (`denoising_start`, `image=latents`) and decodes
/// them with its own VAE. Both passes take the request's prompt, steps, guidance, scheduler and
/// seed (each pass draws from a generator seeded anew, as two diffusers calls with a fresh
/// `torch.Generator` do).
extension Pipeline {
    /// The two requests of a handoff at `refinerStart` (the fraction of the schedule the base
    /// runs, diffusers' `denoising_end` = `denoising_start`): the base's, and the refiner's for
    /// the base's latents.
    public func refinerPasses(_ request: GenerationRequest, refinerStart: Double) throws
        -> (base: GenerationRequest, refiner: (Tensor) -> GenerationRequest) {
        guard refinerStart > 0 && refinerStart < 1 else {
            throw GenerationError.invalidRequest("refiner start must be in (0, 1), the fraction of the noise schedule the base runs (got \(refinerStart))")
        }
        guard request.denoisingStart == nil, request.denoisingEnd == nil, request.initLatents == nil else {
            throw GenerationError.invalidRequest("a refiner handoff sets denoising end and start itself; give the request without denoisingStart, denoisingEnd or initLatents")
        }
        guard request.hires == nil else { throw GenerationError.invalidRequest("a refiner handoff cannot be combined with the hires fix") }
        guard request.mask == nil else {
            throw GenerationError.invalidRequest("a refiner handoff with a mask (inpainting) is not supported: the refiner pass would repaint the whole image")
        }
        var base = request
        base.denoisingEnd = refinerStart
        let second: (Tensor) -> GenerationRequest = { latents in
            var r = request
            r.initImage = nil
            r.width = nil  // the latents' size
            r.height = nil
            r.controlNets = []  // a ControlNet is the base's
            r.initLatents = Latents(latents)
            r.denoisingStart = refinerStart
            return r
        }
        return (base, second)
    }

    /// Runs `request` on this (base) pipeline up to `refinerStart` and finishes it on `refiner`,
    /// returning the refiner's decoded images. Step events come from each pass in turn (each
    /// counting its own steps).
    @discardableResult
    public func generate(_ request: GenerationRequest, refiner: Pipeline, refinerStart: Double = 0.8,
                         onEvent: (GenerationEvent) throws -> Void = { _ in }) throws -> [RGBImage] {
        let (mine, theirs) = (model.vaeConfig, refiner.model.vaeConfig)
        guard mine.latentChannels == theirs.latentChannels, mine.scaleFactor == theirs.scaleFactor else {
            throw GenerationError.invalidRequest("the refiner \(refiner.model.path) has \(theirs.latentChannels) latent channels at 1/\(theirs.scaleFactor) scale; "
                                                 + "the base \(model.path) has \(mine.latentChannels) at 1/\(mine.scaleFactor): their latents are not interchangeable")
        }
        let (first, second) = try refinerPasses(request, refinerStart: refinerStart)
        let latents = try self.latents(for: first, onEvent: onEvent)
        return try refiner.generate(second(latents), onEvent: onEvent)
    }
}
