import LumenRuntime

extension Pipeline {
    /// The memory `request` will take and how its VAE passes run (see `MemoryPlan`), decided
    /// before any work. With `VAETiling.auto` the VAE decodes (and encodes) whole whenever the
    /// executor can bind every tensor and the whole request fits the memory budget, as diffusers
    /// does; only otherwise does it tile, with the largest tile that fits.
    /// A hires-fix request is planned at its second pass's size, the larger of its two.
    public func memoryPlan(for request: GenerationRequest) throws -> MemoryPlan {
        var request = try preparedMask(request).request  // a mask crop runs at the output size
        if let hires = request.hires {
            let (first, _) = try hiresPasses(request, hires)
            let (width, height) = size(for: first)
            let f = model.vaeConfig.scaleFactor
            request = first
            request.width = Int(Double(width) * hires.scale) / f * f
            request.height = Int(Double(height) * hires.scale) / f * f
        }
        lock.lock()
        defer { lock.unlock() }
        try validate(request)
        return try plan(request)
    }

    /// Bytes the weights of its networks (text encoders, UNet, VAE; EMA copies left out) take
    /// once compiled: their element count times what the executor holds a weight in (4 bytes on
    /// the CPU, which widens every weight to f32 as it packs it; 2 where it prefers f16), whatever
    /// the files store. Opening a pipeline maps its files and reads nothing; this is what keeping
    /// it loaded and used costs beyond the activations (a server bounding its loaded models by
    /// memory counts it). ControlNets and LoRA files a request adds are not counted.
    public var weightBytes: Int {
        let stores = [model.textEncoderWeights, model.unetWeights, model.vaeWeights] + (model.xl.map { [$0.textEncoder2Weights] } ?? [])
        return stores.reduce(0) { $0 + $1.elementCount } * (executor.prefersHalfPrecisionWeights ? 2 : 4)
    }

    /// The tiles the VAE decodes a request's latents in, or nil to decode them whole.
    public func vaeTileLayout(for request: GenerationRequest) throws -> VAETileLayout? {
        try memoryPlan(for: request).decodeTiles
    }

    /// The tiles the VAE encodes a request's init image in, or nil to encode it whole.
    public func vaeEncodeTileLayout(for request: GenerationRequest) throws -> VAETileLayout? {
        try memoryPlan(for: request).encodeTiles
    }

    func plan(_ r: GenerationRequest) throws -> MemoryPlan {
        let budget = try memoryBudget ?? executor.memoryBudget()
        let (width, height) = size(for: r)
        let f = model.vaeConfig.scaleFactor, lh = height / f, lw = width / f
        let n = r.count, cfg = isGuided(r), rows = rowGroups(r)
        let chunks = try conditioning.promptChunkCount(r, guided: cfg)  // A1111 prompts (#20): one encoder row per chunk
        let length = conditioning.contextLength * chunks
        let latentBytes = n * model.vaeConfig.latentChannels * lh * lw * 4

        let textWeights = conditioning.weightBytes
        let text = MemoryPlan.Stage(name: "text encoding", weights: textWeights,
                                    activations: try cache.plannedBytes(.text(count: rows * chunks, clipSkip: r.clipSkip)) {
                                        try conditioning.buildEncoders($0, count: rows * chunks, clipSkip: r.clipSkip)
                                    },
                                    staging: 2 * rows * n * length * model.unetConfig.crossAttentionDim * 4, how: "whole")
        let batch = rows * n
        let controlled = !r.controlNets.isEmpty
        let unetKey = ProgramKey.unet(batch: batch, height: lh, width: lw, contextLength: length, controlled: controlled)
        var denoisingWeights = model.unetWeights.fileBytes
        var denoisingActivations = try cache.plannedBytes(unetKey) {
            try buildUNet($0, batch: batch, height: lh, width: lw, contextLength: length, controlled: controlled)
        }
        for input in r.controlNets {
            let net = try controlNet(input.path)
            denoisingWeights += net.weights.fileBytes
            denoisingActivations += try cache.plannedBytes(.controlNet(path: input.path, batch: batch, height: lh, width: lw, contextLength: length)) {
                try buildControlNet($0, net, batch: batch, height: lh, width: lw, contextLength: length)
            }
        }
        if let previews = r.previews {  // TAESD previews run between the UNet's steps
            let taesd = try taesdStage(previews.taesdPath)
            denoisingWeights += (taesd.decoder.weights as? SafetensorsWeights)?.fileBytes ?? 0
            denoisingActivations += try taesd.plannedActivations(batch: n, height: lh, width: lw)
        }
        let unet = MemoryPlan.Stage(name: "denoising", weights: denoisingWeights, activations: denoisingActivations,
                                    staging: latentBytes * (4 + 3 * rows), how: "whole")
        let vaeWeights = model.vaeWeights.fileBytes
        let imageBytes = model.vaeConfig.outChannels * height * width * 4

        // The peak: with retainsPrograms every program stays; without (one-shot use), the text
        // and image encoders' programs and the text encoders' pages are let go before denoising.
        func peak(encode: MemoryPlan.Stage?, decode: MemoryPlan.Stage?) -> Int {
            let encodeBytes = encode.map { $0.weights + $0.activations + $0.staging } ?? 0
            let phases: [Int]
            if retainsPrograms {
                phases = [text.weights + unet.weights + vaeWeights + text.activations + unet.activations
                          + (encode?.activations ?? 0) + (decode?.activations ?? 0) + unet.staging + (decode?.staging ?? 0)]
            } else {
                phases = [text.weights + text.activations + text.staging + encodeBytes,
                          unet.weights + unet.activations + unet.staging,
                          (decode.map { $0.weights + $0.activations + $0.staging } ?? 0) + latentBytes]
            }
            return budget.inUse + phases.max()!
        }

        var decisions: [String] = []
        /// One VAE pass over an h × w image, given the other pass's stage (or nil).
        func vaeStage(_ pass: VAEStage.Pass, h: Int, w: Int, other: MemoryPlan.Stage?) throws -> (MemoryPlan.Stage, VAETileLayout?) {
            let name = pass == .decode ? "decoding" : "image encoding"
            let staging = pass == .decode ? 3 * imageBytes + n * height * width * 3 : 4 * imageBytes
            func stage(_ layout: VAETileLayout?, _ how: String) throws -> MemoryPlan.Stage {
                let side = layout?.sampleTileSize
                return MemoryPlan.Stage(name: name, weights: vaeWeights,
                                        activations: try vae.plannedActivations(pass, h: side ?? h, w: side ?? w, tiled: layout != nil),
                                        staging: staging, how: how)
            }
            func total(_ s: MemoryPlan.Stage) -> Int { pass == .decode ? peak(encode: other, decode: s) : peak(encode: s, decode: other) }
            let unit = 4 * f
            func tiles(_ l: VAETileLayout) -> Bool {
                pass == .decode ? l.tiles(latentHeight: h / f, latentWidth: w / f) : l.tilesImage(height: h, width: w)
            }
            switch r.vaeTiling {
            case .off:
                return (try stage(nil, "whole (--vae-tiling off)"), nil)
            case .tiles(let size):
                let layout = VAETileLayout(config: model.vaeConfig, sampleSize: size)
                return tiles(layout) ? (try stage(layout, "tiles of \(size) px, as asked"), layout) : (try stage(nil, "whole (one tile covers it)"), nil)
            case .auto:
                let limit = executor.maxTensorBytes
                let widestWhole = try vae.widestTensor(pass, h: h, w: w)
                let whole = try stage(nil, "whole")
                let binds = limit.map { widestWhole <= $0 } ?? true
                if binds && total(whole) <= budget.bytes { return (whole, nil) }
                let reason = binds
                    ? "whole, the request would peak at \(MemoryBudget.format(total(whole))), over the \(budget) budget"
                    : "whole, its largest tensor (\(MemoryBudget.format(widestWhole))) exceeds what the device binds (\(MemoryBudget.format(limit!)))"
                // The largest tile that binds and fits, a multiple of 4 latents (so that diffusers'
                // stride of 3/4 tile is whole latents and the tiles join to exactly the image).
                var tile = max(unit, (max(h, w) - 1) / unit * unit)
                var chosen: (MemoryPlan.Stage, VAETileLayout)? = nil
                while tile >= unit {
                    let layout = VAETileLayout(latentTileSize: tile / f, sampleTileSize: tile)
                    if tiles(layout), try limit.map({ try vae.widestTensor(pass, h: tile, w: tile) <= $0 }) ?? true {
                        chosen = (try stage(layout, "tiles of \(tile) px: \(reason)"), layout)
                        if total(chosen!.0) <= budget.bytes { break }
                    }
                    tile -= unit
                }
                guard let chosen else { return (whole, nil) }
                decisions.append("the VAE \(pass == .decode ? "decodes" : "encodes the init image") in \(chosen.1): \(reason)")
                return chosen
            }
        }
        var encode: MemoryPlan.Stage? = nil, encodeTiles: VAETileLayout? = nil
        if let image = r.initImage, case .taesd(let path) = r.encoder {  // TAESD encodes whole
            let taesd = try taesdEncodeStage(path)
            encode = MemoryPlan.Stage(name: "image encoding", weights: taesd.encoder.weights.fileBytes,
                                      activations: try taesd.plannedActivations(height: image.height, width: image.width),
                                      staging: 4 * imageBytes, how: "whole (TAESD)")
        } else if let image = r.initImage {
            (encode, encodeTiles) = try vaeStage(.encode, h: image.height, w: image.width, other: nil)
        }
        let (decode, decodeTiles) = try vaeStage(.decode, h: height, w: width, other: encode)
        let unetChunks = executor.maxTensorBytes.map { _ in "the UNet's feed-forwards run in chunks where a tensor exceeds the binding limit" }
        if let unetChunks { decisions.append(unetChunks) }
        if !retainsPrograms { decisions.append("programs are dropped once their stage is done (one-shot use)") }
        return MemoryPlan(stages: [text] + (encode.map { [$0] } ?? []) + [unet, decode], baseline: budget.inUse,
                          peak: peak(encode: encode, decode: decode), budget: budget,
                          decodeTiles: decodeTiles, encodeTiles: encodeTiles, decisions: decisions)
    }

}
