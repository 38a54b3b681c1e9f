import Foundation
import LumenRuntime

/// The VAE stages: decoding latents into images and encoding an init image into latents, whole or
/// in diffusers' overlapping tiles, with the programs compiled through the pipeline's cache. Usable
/// on its own (`Pipeline.decode(_:tiles:)`, previews of step latents). A faster decoder (TAESD)
/// would be a second type with the same `decode`.
final class VAEStage {
    let config: AutoencoderKLConfig
    let weights: SafetensorsWeights
    private let cache: ProgramCache
    /// Whether LoRAs are merged somewhere in the model (for the hint of a non-finite error).
    private let withLoRAs: Bool
    /// Without it, a tile shape's program is dropped once its tiles are done, so only one tile
    /// program's activations are held at a time.
    var retainsPrograms = true

    init(config: AutoencoderKLConfig, weights: SafetensorsWeights, cache: ProgramCache, withLoRAs: Bool) {
        self.config = config
        self.weights = weights
        self.cache = cache
        self.withLoRAs = withLoRAs
    }

    enum Pass: Sendable { case encode, decode }

    // MARK: Decoding

    /// Decodes latents [N, C, h, w] (scaled, as the denoising loop leaves them) into N images,
    /// whole or in `tiles`, calling `onImage` after each. `statistics`: whether the pipeline
    /// unscales with the config's `latents_mean`/`latents_std` (diffusers' SDXL pipelines do).
    func decode(_ latents: Tensor, tiles: VAETileLayout?, statistics: Bool,
                onImage: (Int, RGBImage) throws -> Void) throws -> [RGBImage] {
        let (n, channels, lh, lw) = (latents.shape[0], latents.shape[1], latents.shape[2], latents.shape[3])
        let f = config.scaleFactor, per = channels * lh * lw
        let values = latents.toFloats(), scaling = config.scalingFactor
        let stats = statistics ? config.latentStatistics : nil
        var images: [RGBImage] = []
        for k in 0..<n {
            let scaled = values[(k * per)..<((k + 1) * per)]
            let unscaled: [Float] = stats.map { s in
                // z · std / scaling + mean, one torch op after another.
                scaled.enumerated().map { i, z in z * s.std[i / (lh * lw)] / scaling + s.mean[i / (lh * lw)] }
            } ?? scaled.map { $0 / scaling }
            let z = try Tensor(shape: [1, channels, lh, lw], values: unscaled)
            let decoded: Tensor
            if let tiles {
                decoded = try decodeTiled(z, layout: tiles)
                guard decoded.shape == [1, config.outChannels, lh * f, lw * f] else {
                    throw GenerationError.invalidRequest("VAE tiling \(tiles) decodes a \(lw * f)x\(lh * f) image to \(decoded.shape)")
                }
            } else {
                decoded = try decoder(height: lh, width: lw).run(["latents": z])[0]
            }
            try ensureFinite(decoded.toFloats(), stage: .vaeDecode, withLoRAs: withLoRAs)
            let image = try RGBImage(decoded: decoded)
            images.append(image)
            try onImage(k, image)
        }
        return images
    }

    /// diffusers' tiled decode of one image's latents [1, C, h, w], each tile shape's program
    /// compiled once.
    private func decodeTiled(_ z: Tensor, layout: VAETileLayout) throws -> Tensor {
        try AutoencoderKL.tiledDecode(latents: z, layout: layout, decodeTile: { tile in
            try decoder(height: tile.shape[2], width: tile.shape[3]).run(["latents": tile])[0]
        }, finishedShape: { th, tw in
            if !retainsPrograms { cache.drop(.decode(height: th, width: tw)) }
        })
    }

    private func decoder(height: Int, width: Int) throws -> CompiledNetwork {
        try cache.network(.decode(height: height, width: width), fullPrecision: config.forceUpcast) { try buildDecode($0, height: height, width: width) }
    }

    // MARK: Encoding

    /// The init image as scaled latents: a sample of the encoder's distribution drawn from the
    /// request's generator (diffusers' `latent_dist.sample(generator)`), × the scaling factor
    /// (with `statistics`, `(x − latents_mean) · scaling / latents_std`, as diffusers' SDXL
    /// img2img pipelines encode). With a tile layout, the image is encoded in overlapping tiles
    /// whose moments are blended (diffusers' `_tiled_encode`), then the log-variance is clamped as one.
    func encode(_ image: InitImage, layout: VAETileLayout?, statistics: Bool, generator: inout TorchGenerator) throws -> [Float] {
        let (mean, logvar) = try moments(image, layout: layout)
        let sample = generator.randn(count: mean.count)
        let scaling = config.scalingFactor
        let drawn = (0..<mean.count).map { mean[$0] + Foundation.exp(0.5 * logvar[$0]) * sample[$0] }
        guard statistics, let stats = config.latentStatistics else { return drawn.map { $0 * scaling } }
        let plane = mean.count / config.latentChannels
        return drawn.enumerated().map { i, v in (v - stats.mean[i / plane]) * scaling / stats.std[i / plane] }
    }

    /// The encoder's mean for the init image, unscaled (diffusers' `latent_dist.mode()`, which
    /// InstructPix2Pix conditions on): no sample is drawn.
    func encodeMode(_ image: InitImage, layout: VAETileLayout?) throws -> [Float] {
        try moments(image, layout: layout).mean
    }

    /// The encoder's mean and (clamped) log-variance for the init image, whole or tiled.
    private func moments(_ image: InitImage, layout: VAETileLayout?) throws -> (mean: [Float], logvar: [Float]) {
        let (h, w) = (image.height, image.width)
        var planar = [Float](repeating: 0, count: 3 * h * w)
        for i in 0..<(h * w) {
            for c in 0..<3 { planar[c * h * w + i] = image.rgb[i * 3 + c] * 2 - 1 }
        }
        let x = try Tensor(shape: [1, 3, h, w], values: planar)
        let mean: [Float], logvar: [Float]
        if let layout {
            let moments = try AutoencoderKL.tiledEncode(image: x, layout: layout, encodeTile: { tile in
                let (th, tw) = (tile.shape[2], tile.shape[3])
                return try cache.network(.encodeMoments(height: th, width: tw), fullPrecision: config.forceUpcast) { try buildEncodeMoments($0, height: th, width: tw) }
                    .run(["image": tile])[0]
            }, finishedShape: { th, tw in
                if !retainsPrograms { cache.drop(.encodeMoments(height: th, width: tw)) }
            })
            let m = moments.toFloats(), half = m.count / 2  // [1, 2·latent, h, w]: the means, then the log-variances
            mean = Array(m[..<half])
            logvar = m[half...].map { min(max($0, -30), 20) }
        } else {
            let out = try cache.network(.encode(height: h, width: w), fullPrecision: config.forceUpcast) { try buildEncode($0, height: h, width: w) }.run(["image": x])
            mean = out[0].toFloats()
            logvar = out[1].toFloats()
        }
        try ensureFinite(mean + logvar, stage: .vaeEncode, withLoRAs: withLoRAs)
        return (mean, logvar)
    }

    // MARK: Planning

    /// Activation bytes of a pass over an h × w image (whole, or one tile of that size).
    func plannedActivations(_ pass: Pass, h: Int, w: Int, tiled: Bool) throws -> Int {
        let f = config.scaleFactor
        switch pass {
        case .decode:
            return try cache.plannedBytes(.decode(height: h / f, width: w / f)) { try buildDecode($0, height: h / f, width: w / f) }
        case .encode:
            return tiled ? try cache.plannedBytes(.encodeMoments(height: h, width: w)) { try buildEncodeMoments($0, height: h, width: w) }
                : try cache.plannedBytes(.encode(height: h, width: w)) { try buildEncode($0, height: h, width: w) }
        }
    }

    private var widestTensors: [String: Int] = [:]

    /// Bytes of the largest tensor of a pass over an h × w image (memoized).
    func widestTensor(_ pass: Pass, h: Int, w: Int) throws -> Int {
        let key = "\(pass)-\(h)x\(w)"
        if let known = widestTensors[key] { return known }
        let vae = AutoencoderKL(config: config), f = config.scaleFactor
        let bytes = pass == .decode ? try vae.widestDecoderTensor(latentHeight: h / f, latentWidth: w / f, weights: weights)
            : try vae.widestEncoderTensor(height: h, width: w, weights: weights)
        widestTensors[key] = bytes
        return bytes
    }

    // MARK: Graphs

    private func buildDecode(_ g: Graph, height: Int, width: Int) throws -> [Value] {
        let z = try g.input("latents", shape: [1, config.latentChannels, height, width])
        return [try AutoencoderKL(config: config).decode(g, latents: z, weights: weights)]
    }

    private func buildEncode(_ g: Graph, height: Int, width: Int) throws -> [Value] {
        let x = try g.input("image", shape: [1, 3, height, width])
        let (mean, logvar) = try AutoencoderKL(config: config).encode(g, image: x, weights: weights)
        return [mean, logvar]
    }

    private func buildEncodeMoments(_ g: Graph, height: Int, width: Int) throws -> [Value] {
        let t = try g.input("image", shape: [1, 3, height, width])
        return [try AutoencoderKL(config: config).encodeMoments(g, image: t, weights: weights)]
    }
}
