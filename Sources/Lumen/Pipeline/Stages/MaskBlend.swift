/// Masked image-to-image with an ordinary (4-channel) UNet, as diffusers'
/// `StableDiffusionInpaintPipeline` runs it for such a UNet: after each step, outside the mask the
/// latents are replaced by the init image's latents noised to the next step's level (not noised
/// after the last step), so only the masked area is repainted. A `DenoisingHook`: the loop is
/// unchanged.
struct MaskBlend: DenoisingHook {
    /// 1 where the image is repainted, 0 where it is kept, per latent pixel [h · w].
    let mask: [Float]
    /// The init image's scaled latents and the start noise, [count · C · h · w] each.
    let imageLatents: [Float]
    let noise: [Float]
    let channels: Int

    func afterStep(_ latents: inout [Float], step: Int, scheduler: any Scheduler, generator: inout TorchGenerator) throws {
        let known = step + 1 < scheduler.timesteps.count
            ? scheduler.addNoise(original: imageLatents, noise: noise, step: step + 1) : imageLatents
        let pixels = mask.count
        // diffusers' (1 - m) · known + m · latents with m ∈ {0, 1}: exactly one or the other.
        for i in latents.indices where mask[i % pixels] == 0 {
            latents[i] = known[i]
        }
    }

    /// The mask as diffusers' mask processor and `prepare_mask_latents` make it: grey as PIL's
    /// `convert("L")` computes it from 8-bit RGB, binarized at 0.5 (white = repaint), then
    /// resized to the latent grid by nearest neighbour (`torch.nn.functional.interpolate`).
    static func latentMask(_ image: InitImage, latentHeight h: Int, latentWidth w: Int) -> [Float] {
        let (iw, ih) = (image.width, image.height)
        var binary = [Float](repeating: 0, count: iw * ih)
        for p in 0..<(iw * ih) {
            let r = Int((image.rgb[3 * p] * 255).rounded()), g = Int((image.rgb[3 * p + 1] * 255).rounded())
            let b = Int((image.rgb[3 * p + 2] * 255).rounded())
            let grey = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16
            binary[p] = Float(grey) / 255 < 0.5 ? 0 : 1
        }
        let sy = Float(ih) / Float(h), sx = Float(iw) / Float(w)
        var out = [Float](repeating: 0, count: h * w)
        for y in 0..<h {
            let srcY = min(Int((Float(y) * sy).rounded(.down)), ih - 1)
            for x in 0..<w {
                let srcX = min(Int((Float(x) * sx).rounded(.down)), iw - 1)
                out[y * w + x] = binary[srcY * iw + srcX]
            }
        }
        return out
    }
}

/// An inpainting UNet's extra input channels, as diffusers' `StableDiffusionInpaintPipeline`
/// builds them for a 9-channel UNet: at every step the model input is the scaled latents, the mask
/// and the masked image's latents side by side ([latents, 1, latents] channels), the last two
/// repeated for the guided rows.
struct InpaintInputs: DenoisingHook {
    /// [h · w], 1 = repaint.
    let mask: [Float]
    /// The masked image's scaled latents for one image [C · h · w].
    let maskedImageLatents: [Float]
    let channels: Int, height: Int, width: Int

    func unetInputs(step: Int, timestep: Float, modelInput: Tensor) throws -> [String: Tensor] {
        let batch = modelInput.shape[0], plane = height * width, per = channels * plane
        let x = modelInput.toFloats()
        var out: [Float] = []
        out.reserveCapacity(batch * (2 * channels + 1) * plane)
        for b in 0..<batch {
            out += x[(b * per)..<((b + 1) * per)]
            out += mask
            out += maskedImageLatents
        }
        return ["sample": try Tensor(shape: [batch, 2 * channels + 1, height, width], values: out)]
    }
}

/// InstructPix2Pix's UNet inputs: each row's latents with the image's latents after them in the
/// channel axis (zeros for the first, unconditional group when guided, as diffusers).
struct InstructPix2PixInputs: DenoisingHook {
    /// The image's latents (the encoder's mean, unscaled) for one image [C · h · w].
    let imageLatents: [Float]
    let count: Int
    let guided: Bool
    let channels: Int, height: Int, width: Int

    func unetInputs(step: Int, timestep: Float, modelInput: Tensor) throws -> [String: Tensor] {
        let batch = modelInput.shape[0], per = channels * height * width
        let x = modelInput.toFloats(), zeros = [Float](repeating: 0, count: per)
        var out: [Float] = []
        out.reserveCapacity(batch * 2 * per)
        for b in 0..<batch {
            out += x[(b * per)..<((b + 1) * per)]
            out += guided && b < count ? zeros : imageLatents
        }
        return ["sample": try Tensor(shape: [batch, 2 * channels, height, width], values: out)]
    }
}
