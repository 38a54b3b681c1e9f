import Foundation
import Logging
import LumenCPU
import LumenRuntime
import LumenVulkan

/// Text-to-image and image-to-image with a Stable Diffusion model, as diffusers'
/// `StableDiffusionPipeline` / `StableDiffusionImg2ImgPipeline` compute them: the same
/// tokenizer, schedulers, seeds (torch's CPU generator) and classifier-free guidance, so a
/// diffusers user gets the same picture.
///
/// The networks are compiled once per shape and reused by later requests. One request runs
/// at a time; concurrent requests wait for each other.
public final class Pipeline: @unchecked Sendable {
    public let model: StableDiffusionModel
    public let executor: any Executor
    /// Why `.auto` chose the CPU, when it did (for a one-line notice).
    public let backendNote: String?
    public let tokenizer: CLIPTokenizer
    /// SDXL's second tokenizer (for `text_encoder_2`).
    public let tokenizer2: CLIPTokenizer?
    private let schedulerConfig: SchedulerConfig
    private let defaultScheduler: SchedulerKind
    /// One-line notices about what loading chose in the user's place (a scheduler run instead of
    /// one Lumen lacks, defaults for a missing config), for a front end to show; `notices(for:)`
    /// adds a request's own.
    public private(set) var notices: [String] = []
    private let logger = Logger(label: "lumen.pipeline")
    private let lock = NSLock()
    private var programs: [String: (program: any Program, outputs: [Value])] = [:]
    /// Keep every compiled network (and its activation memory) for later requests. Off, each
    /// network's program is dropped once the request no longer needs it, so the UNet's and the
    /// decoder's activations are never held at the same time: the right choice for one-shot use
    /// such as the CLI.
    public var retainsPrograms = true

    /// Opens the model at `modelPath` (diffusers folder or single file) for `backend`, with its
    /// VAE replaced by the one at `vaePath` when given. `precision` picks between a folder's
    /// plain and `.fp16` weight files; `.auto` lets the backend choose. `loras` are merged into the
    /// UNet and text-encoder weights as the networks are built.
    public convenience init(modelPath: String, backend: Backend = .auto, configFolder: String? = nil, vaePath: String? = nil,
                            precision: WeightPrecision = .auto, loras: [LoRAWeight] = []) throws {
        let executor = try Pipeline.makeExecutor(backend)
        var note: String? = nil
        if case .auto = backend, executor is CPUExecutor {
            let devices = (try? VulkanExecutor.devices()) ?? []
            note = devices.isEmpty ? "no Vulkan device found: running on the CPU"
                : "no Vulkan GPU found (only \(devices.map(\.name).joined(separator: ", "))): running on the CPU"
        }
        try self.init(modelPath: modelPath, executor: executor, configFolder: configFolder, vaePath: vaePath,
                      precision: Pipeline.weightPrecision(precision, for: backend), loras: loras, backendNote: note)
    }

    /// Opens the model with an executor of the caller's (for example a `VulkanExecutor` with
    /// particular options).
    public init(modelPath: String, executor: any Executor, configFolder: String? = nil, vaePath: String? = nil,
                precision: WeightPrecision = .auto, loras: [LoRAWeight] = [], backendNote: String? = nil) throws {
        self.executor = executor
        self.backendNote = backendNote
        let resolved = precision != .auto ? precision : (executor is CPUExecutor ? WeightPrecision.fp32 : .fp16)
        model = try StableDiffusionModel.load(path: modelPath, configFolder: configFolder, vaePath: vaePath, precision: resolved)
        _ = try model.checkRunnable()
        try model.apply(loras: loras)
        // Single-file checkpoints carry no tokenizer: SD 1.x and 2.x use the standard CLIP
        // vocabulary, which the default model has (2.x pads with "!").
        guard let tokenizerPath = model.tokenizerPath ?? DefaultModel.clipTokenizerFolder else {
            throw GenerationError.tokenizerUnavailable(
                "\(modelPath) has no tokenizer folder and no CLIP vocabulary is at hand; pass a diffusers folder of the same model with --config")
        }
        tokenizer = try CLIPTokenizer(folder: tokenizerPath, padToken: model.tokenizerPath == nil ? model.tokenizerPadToken : nil)
        tokenizer2 = try model.tokenizer2Path.map { try CLIPTokenizer(folder: $0) }
        schedulerConfig = try model.schedulerConfigPath.map { try SchedulerConfig(path: $0) } ?? model.schedulerDefaults ?? SchedulerConfig()
        (defaultScheduler, notices) = try Pipeline.defaultScheduler(model: model, config: schedulerConfig)
    }

    /// The weight files a backend reads when the caller has no preference: the CPU executor
    /// widens every weight to f32 as it packs it, so it reads the plain (full-precision) files;
    /// a GPU holds its weights in f16, so the fp16 variant gives it the same values for half the reading.
    static func weightPrecision(_ requested: WeightPrecision, for backend: Backend) -> WeightPrecision {
        guard requested == .auto else { return requested }
        switch backend {
        case .cpu, .auto: return .fp32
        case .vulkan: return .fp16
        }
    }

    static func makeExecutor(_ backend: Backend) throws -> any Executor {
        switch backend {
        case .cpu:
            return CPUExecutor()
        case .vulkan(let device):
            return try VulkanExecutor(device: device)
        case .auto:
            // A real GPU if there is one; a Vulkan driver on the CPU (lavapipe) is slower than the
            // CPU executor, so it is used only when asked for.
            let gpus = ((try? VulkanExecutor.devices()) ?? []).filter { $0.type == "discrete" || $0.type == "integrated" }
            if let gpu = gpus.first, let executor = try? VulkanExecutor(device: gpu.index) {
                return executor
            }
            return CPUExecutor()
        }
    }

    /// The scheduler a request gets: its own choice, else the model's scheduler config.
    public func schedulerKind(for request: GenerationRequest) -> SchedulerKind {
        request.scheduler ?? defaultScheduler
    }

    /// The size a request produces.
    public func size(for request: GenerationRequest) -> (width: Int, height: Int) {
        let f = model.vaeConfig.scaleFactor
        let fallback = model.unetConfig.sampleSize * f
        return (request.width ?? request.initImage?.width ?? fallback, request.height ?? request.initImage?.height ?? fallback)
    }

    // MARK: - Async API

    /// Runs a request, reporting each step and then each image. Cancelling the consuming task
    /// stops the generation between steps.
    public func images(for request: GenerationRequest) -> AsyncThrowingStream<GenerationEvent, Error> {
        AsyncThrowingStream { continuation in
            let task = Task.detached { [self] in
                do {
                    _ = try self.generate(request) { event in
                        try Task.checkCancellation()
                        continuation.yield(event)
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    // MARK: - The generation

    /// Runs a request synchronously, calling `onEvent` after each step and image (it may throw
    /// to stop, e.g. `CancellationError`). Returns the images.
    @discardableResult
    public func generate(_ request: GenerationRequest, onEvent: (GenerationEvent) throws -> Void = { _ in }) throws -> [RGBImage] {
        lock.lock()
        defer { lock.unlock() }
        try validate(request)
        let (width, height) = size(for: request)
        let f = model.vaeConfig.scaleFactor
        let (lh, lw) = (height / f, width / f)
        let n = request.count
        let latentChannels = model.unetConfig.inChannels
        let latentCount = n * latentChannels * lh * lw
        let cfg = request.guidanceScale > 1
        var generator = TorchGenerator(seed: request.seed)

        // Text: [negative, prompt] in one batch when guiding.
        let texts = cfg ? [request.negativePrompt, request.prompt] : [request.prompt]
        var added: [String: Tensor] = [:]
        let context: Tensor
        if model.textEncoder2 != nil {
            // SDXL: both encoders' penultimate states side by side, the pooled projection of the
            // second and the size conditioning (original size, crop top-left, target size); with
            // force_zeros_for_empty_prompt, no negative prompt means zero unconditional inputs.
            var (states, pooled) = try encodeTextXL(texts, clipSkip: request.clipSkip)
            if cfg && request.negativePrompt.isEmpty && model.forceZerosForEmptyPrompt {
                states = try zeroingFirstRow(states)
                pooled = try zeroingFirstRow(pooled)
            }
            context = try repeatEmbeddings(states, times: n)
            added["text_embeds"] = try repeatEmbeddings(pooled, times: n)
            let ids: [Float] = [Float(height), Float(width), 0, 0, Float(height), Float(width)]
            added["time_ids"] = try Tensor(shape: [context.shape[0], 6], values: Array([[Float]](repeating: ids, count: context.shape[0]).joined()))
        } else {
            let embeddings = try encodeText(texts, clipSkip: request.clipSkip)  // [T, 77, D]
            context = try repeatEmbeddings(embeddings, times: n)                // [T·n, 77, D]
        }
        try checkFinite(context.toFloats(), stage: .textEncoder)

        var config = schedulerConfig
        if let prediction = request.predictionType { config.predictionType = prediction.rawValue }
        var scheduler = try schedulerKind(for: request).make(config: config, steps: request.steps)
        var first = 0
        var latents: [Float]
        if let initImage = request.initImage {
            first = type(of: scheduler).firstStep(steps: request.steps, strength: Double(request.strength), order: scheduler.order)
            guard first < scheduler.timesteps.count else {
                throw GenerationError.invalidRequest("strength \(request.strength) with \(request.steps) steps leaves no step to run")
            }
            let encoded = try encodeImage(initImage, layout: try encodeTileLayout(for: request), generator: &generator)  // [1, 4, lh, lw], scaled
            var initLatents: [Float] = []
            for _ in 0..<n { initLatents += encoded }
            let noise = generator.randn(count: latentCount)
            latents = scheduler.addNoise(original: initLatents, noise: noise, step: first)
        } else {
            latents = generator.randn(count: latentCount).map { $0 * scheduler.initNoiseSigma }
        }

        let unet = try unetProgram(batch: (cfg ? 2 : 1) * n, height: lh, width: lw, contextLength: context.shape[1],
                                   pooledWidth: added["text_embeds"]?.shape[1])
        try model.checkLoRAsApplied()  // both networks are built by now
        let steps = scheduler.timesteps.count
        for i in first..<steps {
            let t = scheduler.timesteps[i]
            let scaled = scheduler.scaleModelInput(latents, step: i)
            let input = cfg ? scaled + scaled : scaled
            let batch = (cfg ? 2 : 1) * n
            let result = try unet.program.run([
                "sample": try Tensor(shape: [batch, latentChannels, lh, lw], values: input),
                "timestep": try Tensor(shape: [batch], values: [Float](repeating: t, count: batch)),
                "context": context,
            ].merging(added) { a, _ in a })
            let prediction = result[unet.outputs[0]]!.toFloats()
            var guided = prediction
            if cfg {
                let half = latentCount
                let g = request.guidanceScale
                guided = (0..<half).map { prediction[$0] + g * (prediction[half + $0] - prediction[$0]) }
            }
            let noise = scheduler.needsNoise(step: i) ? generator.randn(count: latentCount) : nil
            latents = scheduler.step(modelOutput: guided, sample: latents, step: i, noise: noise)
            try checkFinite(latents, stage: .unetStep(i - first + 1, of: steps - first), request: request)
            try onEvent(.step(index: i - first + 1, count: steps - first,
                              latents: try Tensor(shape: [n, latentChannels, lh, lw], values: latents)))
        }

        if !retainsPrograms {
            programs = programs.filter { !$0.key.hasPrefix("unet-") && !$0.key.hasPrefix("text") && !$0.key.hasPrefix("encode-") }
            dropResidentWeights(of: model.unetWeights)
            dropResidentWeights(of: model.textEncoderWeights)
            if let (_, weights2) = model.textEncoder2 { dropResidentWeights(of: weights2) }
        }
        var images: [RGBImage] = []
        let per = latentChannels * lh * lw
        defer { if !retainsPrograms { programs.removeAll() } }
        let tiling = try tileLayout(for: request)
        let scaling = model.vaeConfig.scalingFactor
        for k in 0..<n {
            let z = try Tensor(shape: [1, latentChannels, lh, lw], values: latents[(k * per)..<((k + 1) * per)].map { $0 / scaling })
            let decoded: Tensor
            if let tiling {
                decoded = try decodeTiled(z, layout: tiling)
                guard decoded.shape == [1, model.vaeConfig.outChannels, height, width] else {
                    throw GenerationError.invalidRequest("VAE tiling \(tiling) decodes a \(width)x\(height) image to \(decoded.shape)")
                }
            } else {
                let decode = try decodeProgram(height: lh, width: lw)
                decoded = try decode.program.run(["latents": z])[decode.outputs[0]]!
            }
            try checkFinite(decoded.toFloats(), stage: .vaeDecode)
            let image = try RGBImage(decoded: decoded)
            images.append(image)
            try onEvent(.image(index: k, image: image))
        }
        return images
    }

    // MARK: - Tiled VAE decoding

    /// The tiles the VAE decodes a request's latents in, or nil to decode them whole (see
    /// `VAETiling`). Tiles are multiples of 4 latents, so that diffusers' overlap stride
    /// (3/4 of a tile) times the scale factor equals its row limit and the tiles join to
    /// exactly the image's size.
    public func vaeTileLayout(for request: GenerationRequest) throws -> VAETileLayout? {
        lock.lock()
        defer { lock.unlock() }
        return try tileLayout(for: request)
    }

    private func tileLayout(for request: GenerationRequest) throws -> VAETileLayout? {
        let (width, height) = size(for: request)
        return try layout(.decode, request.vaeTiling, height: height, width: width)
    }

    /// The tiles the VAE encodes a request's init image in (diffusers' tiled encoding), or nil
    /// to encode it whole: with `.auto`, when the image exceeds twice the VAE's sample_size²
    /// pixels or the device cannot bind the untiled encoder's largest tensor.
    public func vaeEncodeTileLayout(for request: GenerationRequest) throws -> VAETileLayout? {
        lock.lock()
        defer { lock.unlock() }
        return try encodeTileLayout(for: request)
    }

    private func encodeTileLayout(for request: GenerationRequest) throws -> VAETileLayout? {
        guard let image = request.initImage else { return nil }
        return try layout(.encode, request.vaeTiling, height: image.height, width: image.width)
    }

    private enum VAEPass { case encode, decode }

    /// The tile layout of one VAE pass over an h × w image, following `tiling`.
    private func layout(_ pass: VAEPass, _ tiling: VAETiling, height h: Int, width w: Int) throws -> VAETileLayout? {
        let config = model.vaeConfig, f = config.scaleFactor
        func tiles(_ l: VAETileLayout) -> Bool {
            pass == .decode ? l.tiles(latentHeight: h / f, latentWidth: w / f) : l.tilesImage(height: h, width: w)
        }
        func widest(_ th: Int, _ tw: Int) throws -> Int {
            pass == .decode ? try widestDecoderTensor(height: th / f, width: tw / f) : try widestEncoderTensor(height: th, width: tw)
        }
        switch tiling {
        case .off:
            return nil
        case .tiles(let sampleSize):
            let layout = VAETileLayout(config: config, sampleSize: sampleSize)
            return tiles(layout) ? layout : nil
        case .auto:
            let limit = (executor as? VulkanExecutor)?.activationBindingLimit
            var needed = w * h > 2 * config.sampleSize * config.sampleSize
            if !needed, let limit { needed = try widest(h, w) > limit }
            guard needed else { return nil }
            // Tiles of a multiple of 4 latents, so that the stride (3/4 of a tile) is whole latents
            // and the cropped tiles join to exactly the image's size.
            let unit = 4 * f
            var tile = max(unit, config.sampleSize / unit * unit)
            if let limit {
                while tile > unit, try widest(tile, tile) > limit { tile -= unit }
            }
            let layout = VAETileLayout(latentTileSize: tile / f, sampleTileSize: tile)
            return tiles(layout) ? layout : nil
        }
    }

    private var widestTensors: [String: Int] = [:]

    /// Bytes of the largest tensor of the encoder for an h × w image (memoized).
    private func widestEncoderTensor(height: Int, width: Int) throws -> Int {
        try memoizedWidth("encode-\(height)x\(width)") {
            try AutoencoderKL(config: model.vaeConfig).widestEncoderTensor(height: height, width: width, weights: model.vaeWeights)
        }
    }

    /// Bytes of the largest tensor of the decoder for an h × w latent (memoized).
    private func widestDecoderTensor(height: Int, width: Int) throws -> Int {
        try memoizedWidth("decode-\(height)x\(width)") {
            try AutoencoderKL(config: model.vaeConfig).widestDecoderTensor(latentHeight: height, latentWidth: width, weights: model.vaeWeights)
        }
    }

    private func memoizedWidth(_ key: String, _ compute: () throws -> Int) throws -> Int {
        if let known = widestTensors[key] { return known }
        let bytes = try compute()
        widestTensors[key] = bytes
        return bytes
    }

    /// diffusers' tiled decode of one image's latents [1, C, h, w], each tile shape's program
    /// compiled once; without `retainsPrograms` a shape's program is dropped once its tiles are
    /// decoded, so only one tile program's activations are held at a time.
    private func decodeTiled(_ z: Tensor, layout: VAETileLayout) throws -> Tensor {
        try AutoencoderKL.tiledDecode(latents: z, layout: layout, decodeTile: { tile in
            let p = try decodeProgram(height: tile.shape[2], width: tile.shape[3])
            return try p.program.run(["latents": tile])[p.outputs[0]]!
        }, finishedShape: { th, tw in
            if !retainsPrograms { programs["decode-\(th)-\(tw)"] = nil }
        })
    }

    /// Final latents of a request, before the VAE (diffusers' `output_type="latent"`).
    public func latents(for request: GenerationRequest) throws -> Tensor {
        struct Done: Error {}
        var last: Tensor?
        do {
            try generate(request) { event in
                switch event {
                case .step(_, _, let latents): last = latents
                case .image: throw Done()
                }
            }
        } catch is Done {}
        return last!
    }

    // MARK: - Pieces

    /// Memory-mapped weights a finished network no longer needs leave the resident set.
    private func dropResidentWeights(of store: SafetensorsWeights) {
        store.files.forEach { $0.dropResidentPages() }
    }

    private func cached(_ key: String, _ build: (Graph) throws -> [Value]) throws -> (program: any Program, outputs: [Value]) {
        if let p = programs[key] { return p }
        let g = Graph()
        let outputs = try build(g)
        let entry = (try executor.compile(g, outputs: outputs), outputs)
        programs[key] = entry
        return entry
    }

    /// Last hidden states [T, 77, D] of the given texts.
    private func encodeText(_ texts: [String], clipSkip: Int) throws -> Tensor {
        let length = model.textEncoderConfig.maxPositionEmbeddings
        let p = try cached("text-\(texts.count)-\(clipSkip)") { g in
            let ids = try g.input("ids", shape: [texts.count, length], dtype: .i32)
            return [try CLIPTextModel(config: model.textEncoderConfig).build(g, ids: ids, weights: model.textEncoderWeights,
                                                                               clipSkip: clipSkip).lastHiddenState]
        }
        let ids = texts.flatMap { tokenizer.ids($0, length: length) }
        return try p.program.run(["ids": try Tensor(shape: [texts.count, length], indices: ids)])[p.outputs[0]]!
    }

    /// SDXL: [T, 77, D1 + D2] penultimate states of both encoders (layer -(clipSkip + 2)) and the
    /// second encoder's text_embeds [T, P].
    private func encodeTextXL(_ texts: [String], clipSkip: Int) throws -> (Tensor, Tensor) {
        guard let (config2, weights2) = model.textEncoder2, let tokenizer2 else {
            throw GenerationError.invalidRequest("the model has no second text encoder")
        }
        let l1 = model.textEncoderConfig.maxPositionEmbeddings, l2 = config2.maxPositionEmbeddings
        let ids1 = texts.map { tokenizer.ids($0, length: l1) }, ids2 = texts.map { tokenizer2.ids($0, length: l2) }
        let p = try cached("textxl-\(texts.count)-\(clipSkip)") { g in
            let a = try g.input("ids", shape: [texts.count, l1], dtype: .i32)
            let b = try g.input("ids2", shape: [texts.count, l2], dtype: .i32)
            let rows = try g.input("eos2", shape: [texts.count], dtype: .i32)
            let out1 = try CLIPTextModel(config: model.textEncoderConfig).build(g, ids: a, weights: model.textEncoderWeights)
            let encoder2 = CLIPTextModel(config: config2)
            let out2 = try encoder2.build(g, ids: b, weights: weights2)
            guard clipSkip + 2 <= min(out1.hiddenStates.count, out2.hiddenStates.count) else {
                throw GenerationError.invalidRequest("clip skip \(clipSkip) leaves no text-encoder layer")
            }
            let h1 = out1.hiddenStates[out1.hiddenStates.count - 2 - clipSkip], h2 = out2.hiddenStates[out2.hiddenStates.count - 2 - clipSkip]
            return [try g.concat([h1, h2], axis: 2), try encoder2.textEmbeds(g, out2, eosRows: rows, weights: weights2)]
        }
        let out = try p.program.run([
            "ids": try Tensor(shape: [texts.count, l1], indices: Array(ids1.joined())),
            "ids2": try Tensor(shape: [texts.count, l2], indices: Array(ids2.joined())),
            "eos2": try Tensor(shape: [texts.count], indices: CLIPTextModel.eosRows(ids2)),
        ])
        return (out[p.outputs[0]]!, out[p.outputs[1]]!)
    }

    /// `t` with its first row (along dimension 0) set to zero.
    private func zeroingFirstRow(_ t: Tensor) throws -> Tensor {
        var v = t.toFloats()
        let per = t.count / t.shape[0]
        for i in 0..<per { v[i] = 0 }
        return try Tensor(shape: t.shape, values: v)
    }

    /// [T, …] → [T·n, …], each row repeated n times in place (diffusers' repeat + view).
    private func repeatEmbeddings(_ e: Tensor, times n: Int) throws -> Tensor {
        if n == 1 { return e }
        let rows = e.toFloats(), per = e.count / e.shape[0]
        var out: [Float] = []
        out.reserveCapacity(rows.count * n)
        for t in 0..<e.shape[0] {
            for _ in 0..<n { out += rows[(t * per)..<((t + 1) * per)] }
        }
        return try Tensor(shape: Shape([e.shape[0] * n] + e.shape.dims.dropFirst()), values: out)
    }

    private func unetProgram(batch: Int, height: Int, width: Int, contextLength: Int,
                             pooledWidth: Int? = nil) throws -> (program: any Program, outputs: [Value]) {
        try cached("unet-\(batch)-\(height)-\(width)-\(contextLength)") { g in
            let x = try g.input("sample", shape: [batch, model.unetConfig.inChannels, height, width])
            let t = try g.input("timestep", shape: [batch])
            let c = try g.input("context", shape: [batch, contextLength, model.unetConfig.crossAttentionDim])
            let added = try pooledWidth.map { (textEmbeds: try g.input("text_embeds", shape: [batch, $0]),
                                               timeIds: try g.input("time_ids", shape: [batch, 6])) }
            return [try UNet2DConditionModel(config: model.unetConfig).build(g, sample: x, timestep: t, context: c, weights: model.unetWeights,
                                                                            added: added,
                                                                            maxTensorBytes: (executor as? VulkanExecutor)?.activationBindingLimit)]
        }
    }

    private func decodeProgram(height: Int, width: Int) throws -> (program: any Program, outputs: [Value]) {
        try cached("decode-\(height)-\(width)") { g in
            let z = try g.input("latents", shape: [1, model.vaeConfig.latentChannels, height, width])
            return [try AutoencoderKL(config: model.vaeConfig).decode(g, latents: z, weights: model.vaeWeights)]
        }
    }

    /// The init image as scaled latents: a sample of the encoder's distribution drawn from the
    /// request's generator (diffusers' `latent_dist.sample(generator)`), × the scaling factor.
    /// With a tile layout, the image is encoded in overlapping tiles whose moments are blended
    /// (diffusers' `_tiled_encode`), then the log-variance is clamped as one.
    private func encodeImage(_ image: InitImage, layout: VAETileLayout?, generator: inout TorchGenerator) throws -> [Float] {
        let (h, w) = (image.height, image.width)
        var planar = [Float](repeating: 0, count: 3 * h * w)
        for i in 0..<(h * w) {
            for c in 0..<3 { planar[c * h * w + i] = image.rgb[i * 3 + c] * 2 - 1 }
        }
        let x = try Tensor(shape: [1, 3, h, w], values: planar)
        let mean: [Float], logvar: [Float]
        if let layout {
            let moments = try AutoencoderKL.tiledEncode(image: x, layout: layout, encodeTile: { tile in
                let p = try cached("encode-moments-\(tile.shape[2])-\(tile.shape[3])") { g in
                    let t = try g.input("image", shape: tile.shape)
                    return [try AutoencoderKL(config: model.vaeConfig).encodeMoments(g, image: t, weights: model.vaeWeights)]
                }
                return try p.program.run(["image": tile])[p.outputs[0]]!
            }, finishedShape: { th, tw in
                if !retainsPrograms { programs["encode-moments-\(th)-\(tw)"] = nil }
            })
            let m = moments.toFloats(), half = m.count / 2  // [1, 2·latent, h, w]: the means, then the log-variances
            mean = Array(m[..<half])
            logvar = m[half...].map { min(max($0, -30), 20) }
        } else {
            let p = try cached("encode-\(h)-\(w)") { g in
                let x = try g.input("image", shape: [1, 3, h, w])
                let (mean, logvar) = try AutoencoderKL(config: model.vaeConfig).encode(g, image: x, weights: model.vaeWeights)
                return [mean, logvar]
            }
            let out = try p.program.run(["image": x])
            mean = out[p.outputs[0]]!.toFloats()
            logvar = out[p.outputs[1]]!.toFloats()
        }
        try checkFinite(mean + logvar, stage: .vaeEncode)
        let sample = generator.randn(count: mean.count)
        let scaling = model.vaeConfig.scalingFactor
        return (0..<mean.count).map { (mean[$0] + Foundation.exp(0.5 * logvar[$0]) * sample[$0]) * scaling }
    }
}
