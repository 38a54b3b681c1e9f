import LumenRuntime

/// AUTOMATIC1111's hires fix: generate at the request's size, upscale the latents, then run an
/// image-to-image pass at the larger size from them (a second request on the same pipeline, through
/// the `initLatents` seam). The second pass is diffusers' `StableDiffusionImg2ImgPipeline` given
/// the upscaled latents: noised to `strength` of `steps` steps, with the request's prompt,
/// guidance and seed (a generator seeded anew), as tools/make_hires_fixtures.py builds it.
public struct HiresFix: Sendable, Hashable {
    /// The factor of the width and height (A1111's `hr_scale`); the larger size is rounded down
    /// to whole latents.
    public var scale: Double
    /// Steps of the second pass (nil: the request's).
    public var steps: Int? = nil
    /// How much of the upscaled image the second pass repaints (A1111's hires denoising strength).
    public var strength: Float = 0.7
    public var upscaler: HiresUpscaler = .latent

    public init(scale: Double, steps: Int? = nil, strength: Float = 0.7, upscaler: HiresUpscaler = .latent) {
        self.scale = scale
        self.steps = steps
        self.strength = strength
        self.upscaler = upscaler
    }
}

/// How the hires fix upscales: A1111's latent upscalers, as `torch.nn.functional.interpolate`
/// computes them, or its Lanczos pixel upscaler (decode, resize as Pillow does, encode again).
public enum HiresUpscaler: String, Sendable, Hashable, CaseIterable {
    /// "Latent": bilinear, corners not aligned, no antialiasing.
    case latent
    /// "Latent (nearest)".
    case latentNearest = "latent-nearest"
    /// "Lanczos": the first pass's image resized with Pillow's Lanczos filter.
    case lanczos

    /// `latents` [N, C, h, w] resized to [N, C, outH, outW].
    public func upscale(_ latents: Tensor, height outH: Int, width outW: Int) throws -> Tensor {
        let (n, c, h, w) = (latents.shape[0], latents.shape[1], latents.shape[2], latents.shape[3])
        let x = latents.toFloats()
        var out = [Float](repeating: 0, count: n * c * outH * outW)
        let sy = Float(h) / Float(outH), sx = Float(w) / Float(outW)
        switch self {
        case .lanczos:
            throw GenerationError.invalidRequest("the Lanczos upscaler resizes images, not latents")
        case .latentNearest:
            let ys = (0..<outH).map { min(Int((Float($0) * sy).rounded(.down)), h - 1) }
            let xs = (0..<outW).map { min(Int((Float($0) * sx).rounded(.down)), w - 1) }
            for plane in 0..<(n * c) {
                for (oy, iy) in ys.enumerated() {
                    for (ox, ix) in xs.enumerated() { out[(plane * outH + oy) * outW + ox] = x[(plane * h + iy) * w + ix] }
                }
            }
        case .latent:
            // torch's upsample_bilinear2d with align_corners=False: source index (dst + 0.5)·scale − 0.5,
            // clamped at 0, and the two neighbours weighted by the fraction.
            func taps(_ size: Int, _ scale: Float, _ count: Int) -> [(Int, Int, Float, Float)] {
                (0..<count).map { d in
                    let real = max(scale * (Float(d) + 0.5) - 0.5, 0)
                    let i0 = Int(real), step = i0 < size - 1 ? 1 : 0
                    let l1 = real - Float(i0)
                    return (i0, i0 + step, 1 - l1, l1)
                }
            }
            let ty = taps(h, sy, outH), tx = taps(w, sx, outW)
            for plane in 0..<(n * c) {
                let base = plane * h * w
                for (oy, (y0, y1, wy0, wy1)) in ty.enumerated() {
                    for (ox, (x0, x1, wx0, wx1)) in tx.enumerated() {
                        let top = wx0 * x[base + y0 * w + x0] + wx1 * x[base + y0 * w + x1]
                        let bottom = wx0 * x[base + y1 * w + x0] + wx1 * x[base + y1 * w + x1]
                        out[(plane * outH + oy) * outW + ox] = wy0 * top + wy1 * bottom
                    }
                }
            }
        }
        return try Tensor(shape: [n, c, outH, outW], values: out)
    }
}

extension Pipeline {
    /// The two requests of a hires-fix generation: the first at the base size without the hires
    /// fix, and a function that makes the second from the first's latents.
    func hiresPasses(_ request: GenerationRequest, _ hires: HiresFix) throws -> (first: GenerationRequest, second: (Tensor) throws -> GenerationRequest) {
        if hires.upscaler == .lanczos && request.count != 1 {
            throw GenerationError.invalidRequest("hires fix: the Lanczos upscaler repaints one image per request (count \(request.count)); use a latent upscaler or count 1")
        }
        func invalid(_ s: String) -> GenerationError { .invalidRequest("hires fix: " + s) }
        guard request.initImage == nil, request.initLatents == nil, request.mask == nil,
              request.denoisingStart == nil, request.denoisingEnd == nil else {
            throw invalid("it runs on text-to-image requests only (no init image, init latents, mask or denoising start/end)")
        }
        guard hires.scale.isFinite, hires.scale >= 1, hires.scale <= 8 else { throw invalid("scale must be 1…8 (got \(hires.scale))") }
        guard hires.strength.isFinite, hires.strength > 0, hires.strength <= 1 else {
            throw invalid("strength must be in (0, 1] (got \(hires.strength))")
        }
        if let steps = hires.steps, !(1...1000).contains(steps) { throw invalid("steps must be 1…1000 (got \(steps))") }
        var first = request
        first.hires = nil
        let (width, height) = size(for: first)
        let f = model.vaeConfig.scaleFactor
        let (lh, lw) = (Int(Double(height) * hires.scale) / f, Int(Double(width) * hires.scale) / f)
        guard lh * f <= GenerationRequest.maxSide, lw * f <= GenerationRequest.maxSide else {
            throw invalid("\(width)x\(height) × \(hires.scale) is larger than \(GenerationRequest.maxSide) pixels a side")
        }
        return (first, { latents in
            var second = first
            second.width = lw * f
            second.height = lh * f
            if hires.upscaler == .lanczos {
                // Decode, resize as Pillow does, and let the second pass encode it again.
                let image = try self.decode(latents)[0].resizedLanczos(width: lw * f, height: lh * f)
                second.initImage = InitImage(width: image.width, height: image.height, rgb: image.pixels.map { Float($0) / 255 })
            } else {
                second.initLatents = Latents(try hires.upscaler.upscale(latents, height: lh, width: lw))
            }
            second.strength = hires.strength
            second.steps = hires.steps ?? request.steps
            return second
        })
    }
}
