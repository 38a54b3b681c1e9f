import LumenRuntime

/// Something that attaches to the denoising loop without changing it: ControlNet adds residual
/// inputs to the UNet at each step; inpainting blends the known latents back outside its mask
/// after each step. Both methods have do-nothing defaults.
protocol DenoisingHook {
    /// Extra UNet inputs for step `step` (an index into the scheduler's timesteps), given the
    /// model input of that step [batch, C, h, w] (guided rows included).
    func unetInputs(step: Int, timestep: Float, modelInput: Tensor) throws -> [String: Tensor]
    /// Called after the scheduler's step `step` with the new latents [count · C · h · w], which the
    /// hook may change in place; `generator` is the request's, for noise drawn in diffusers' order.
    func afterStep(_ latents: inout [Float], step: Int, scheduler: any Scheduler, generator: inout TorchGenerator) throws
}

extension DenoisingHook {
    func unetInputs(step: Int, timestep: Float, modelInput: Tensor) throws -> [String: Tensor] { [:] }
    func afterStep(_ latents: inout [Float], step: Int, scheduler: any Scheduler, generator: inout TorchGenerator) throws {}
}

/// The denoising stage: from start latents through a range of the scheduler's steps, one UNet
/// evaluation per step with classifier-free guidance (the unconditional and conditional rows in
/// one batch), the scheduler's step, and the hooks. It knows nothing of text, images or the VAE;
/// a second pass (hires fix, a refiner's `denoising_start`) is another loop over another range.
struct DenoisingLoop {
    /// The UNet: sample [batch, C, h, w], timestep [batch] and the conditioning's inputs (plus the
    /// hooks') → the prediction [batch, C, h, w].
    let unet: ([String: Tensor]) throws -> Tensor
    let conditioning: Conditioning
    var scheduler: any Scheduler
    /// Classifier-free guidance scale; at 1 or below the loop runs the conditional rows only.
    let guidanceScale: Float
    /// The share of the guided prediction rescaled to the conditional one's standard deviation
    /// (diffusers' `guidance_rescale`); 0 leaves it as it is.
    var guidanceRescale: Float = 0
    /// InstructPix2Pix's image guidance: with guidance the batch is three groups (unconditional
    /// text with no image, unconditional text with the image, the prompt with the image) and the
    /// prediction `u + s (c − i) + s_image (i − u)`, as diffusers combines them. nil: two groups.
    var imageGuidanceScale: Float? = nil
    /// Whether `guidanceRescale` applies to the three-group guidance too (diffusers' SDXL
    /// InstructPix2Pix pipeline has it, toward the prompt's prediction; the SD one has none).
    var imageGuidanceRescales = false
    /// Images in the batch, and the latent shape of one.
    let count: Int, channels: Int, height: Int, width: Int
    var hooks: [any DenoisingHook] = []

    var guided: Bool { guidanceScale > 1 }
    var latentCount: Int { count * channels * height * width }
    /// Row groups of the UNet's batch: 1 unguided, 2 with classifier-free guidance, 3 for InstructPix2Pix's.
    var groups: Int { guided ? (imageGuidanceScale != nil ? 3 : 2) : 1 }

    /// Runs steps `steps` (indices into the scheduler's timesteps) from `latents`, drawing the
    /// schedulers' noise from `generator`. `onStep(k, n, latents)` follows each step (k of n, from
    /// 1), after the hooks; it may throw to stop.
    mutating func run(from latents: [Float], steps: Range<Int>, generator: inout TorchGenerator,
                      onStep: (Int, Int, [Float]) throws -> Void) throws -> [Float] {
        guard latents.count == latentCount, steps.lowerBound >= 0, steps.upperBound <= scheduler.timesteps.count else {
            throw GenerationError.invalidRequest("denoising \(latents.count) latent values over steps \(steps) of "
                                                 + "\(scheduler.timesteps.count); expected \(latentCount) values")
        }
        var latents = latents
        let batch = groups * count
        for i in steps {
            let t = scheduler.timesteps[i]
            let scaled = scheduler.scaleModelInput(latents, step: i)
            let sample = try Tensor(shape: [batch, channels, height, width], values: Array([[Float]](repeating: scaled, count: groups).joined()))
            var inputs = conditioning.addedInputs
            inputs["sample"] = sample
            inputs["timestep"] = try Tensor(shape: [batch], values: [Float](repeating: t, count: batch))
            inputs["context"] = conditioning.context
            for hook in hooks {
                inputs.merge(try hook.unetInputs(step: i, timestep: t, modelInput: sample)) { _, new in new }
            }
            let prediction = try unet(inputs).toFloats()
            var guidedPrediction = prediction
            if guided, let imageScale = imageGuidanceScale {
                let n = latentCount, g = guidanceScale
                guidedPrediction = (0..<n).map { k in
                    let (u, img, c) = (prediction[k], prediction[n + k], prediction[2 * n + k])
                    return u + g * (c - img) + imageScale * (img - u)
                }
                if imageGuidanceRescales && guidanceRescale > 0 {
                    Self.rescale(&guidedPrediction, toDeviationOf: prediction[(2 * n)...], images: count, share: guidanceRescale)
                }
            } else if guided {
                let half = latentCount, g = guidanceScale
                guidedPrediction = (0..<half).map { prediction[$0] + g * (prediction[half + $0] - prediction[$0]) }
                if guidanceRescale > 0 {
                    Self.rescale(&guidedPrediction, toDeviationOf: prediction[half...], images: count, share: guidanceRescale)
                }
            }
            let noise = scheduler.needsNoise(step: i) ? generator.randn(count: latentCount) : nil
            latents = scheduler.step(modelOutput: guidedPrediction, sample: latents, step: i, noise: noise)
            for hook in hooks {
                try hook.afterStep(&latents, step: i, scheduler: scheduler, generator: &generator)
            }
            try onStep(i - steps.lowerBound + 1, steps.count, latents)
        }
        return latents
    }

    /// diffusers' `rescale_noise_cfg`: each image's guided prediction times σ(conditional) /
    /// σ(guided) (unbiased standard deviations over the image's values), mixed with the guided
    /// prediction as `share · rescaled + (1 − share) · guided`. The sums are in double; torch's
    /// float32 reductions differ from them by a few ulps of σ.
    static func rescale(_ guided: inout [Float], toDeviationOf conditional: ArraySlice<Float>, images: Int, share: Float) {
        let per = guided.count / images
        guard per > 1 else { return }
        func deviation<C: Collection>(_ x: C) -> Double where C.Element == Float {
            let mean = x.reduce(0.0) { $0 + Double($1) } / Double(per)
            return (x.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(per - 1)).squareRoot()
        }
        let keep = Float(1 - Double(share))
        for k in 0..<images {
            let range = k * per..<(k + 1) * per
            let sigmaCFG = Float(deviation(guided[range]))
            guard sigmaCFG > 0 else { continue }  // a constant prediction: diffusers divides 0 by 0
            let ratio = Float(deviation(conditional[conditional.startIndex + range.lowerBound..<conditional.startIndex + range.upperBound])) / sigmaCFG
            for i in range { guided[i] = share * (guided[i] * ratio) + keep * guided[i] }
        }
    }
}
