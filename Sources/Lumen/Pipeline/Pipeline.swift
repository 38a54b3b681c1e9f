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
    /// The memory requests are planned against; nil: the executor's (`LUMEN_MEMORY_BUDGET`, else
    /// the available RAM on the CPU, the device-local memory on Vulkan).
    public var memoryBudget: MemoryBudget?
    private var programs: [ProgramKey: (program: any Program, outputs: [Value])] = [:]
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
        if case .auto = backend, executor.backendKind == .cpu {
            let devices = (try? VulkanExecutor.devices()) ?? []
            note = devices.isEmpty ? "no Vulkan device found: running on the CPU"
                : "no Vulkan GPU found (only \(devices.map(\.name).joined(separator: ", "))): running on the CPU"
        }
        try self.init(modelPath: modelPath, executor: executor, configFolder: configFolder, vaePath: vaePath,
                      precision: precision, loras: loras, backendNote: note)
    }

    /// Opens the model with an executor of the caller's (for example a `VulkanExecutor` with
    /// particular options).
    public init(modelPath: String, executor: any Executor, configFolder: String? = nil, vaePath: String? = nil,
                precision: WeightPrecision = .auto, loras: [LoRAWeight] = [], backendNote: String? = nil) throws {
        self.executor = executor
        self.backendNote = backendNote
        // The CPU executor widens every weight to f32 as it packs it, so it reads the plain files;
        // a GPU holds f16 weights, which a folder's .fp16 files give it for half the reading.
        let resolved = precision != .auto ? precision : (executor.prefersHalfPrecisionWeights ? WeightPrecision.fp16 : .fp32)
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

    static func makeExecutor(_ backend: Backend) throws -> any Executor {
        switch backend {
        case .cpu:
            return CPUExecutor()
        case .vulkan(let device):
            return try VulkanExecutor(device: device)
        case .auto:
            // A real GPU if there is one; a Vulkan driver on the CPU (lavapipe) is slower than the
            // CPU executor, so it is used only when asked for.
            let gpus = ((try? VulkanExecutor.devices()) ?? []).filter(\.isGPU)
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
        try run(request, decode: true, onEvent: onEvent).images
    }

    /// Final latents of a request, before the VAE (diffusers' `output_type="latent"`): the VAE
    /// does not run.
    public func latents(for request: GenerationRequest, onEvent: (GenerationEvent) throws -> Void = { _ in }) throws -> Tensor {
        try run(request, decode: false, onEvent: onEvent).latents
    }

    /// The generation: conditioning, denoising and, with `decode`, the VAE.
    private func run(_ request: GenerationRequest, decode: Bool,
                     onEvent: (GenerationEvent) throws -> Void) throws -> (images: [RGBImage], latents: Tensor) {
        lock.lock()
        defer { lock.unlock() }
        defer { plannedGraphs.removeAll() }
        try validate(request)
        // Everything the request will hold is known now: refuse it before the first step, never
        // after the last, when it cannot fit even tiled.
        let plan = try self.plan(request)
        guard plan.fits else { throw GenerationError.insufficientMemory(plan: plan.description) }
        let (width, height) = size(for: request)
        let f = model.vaeConfig.scaleFactor
        let (lh, lw) = (height / f, width / f)
        let n = request.count
        let latentChannels = model.unetConfig.inChannels
        let latentCount = n * latentChannels * lh * lw
        let cfg = request.guidanceScale > 1
        var generator = TorchGenerator(seed: request.seed)

        let conditioning = try condition(request, guided: cfg, width: width, height: height)
        let context = conditioning.context
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
            let encoded = try encodeImage(initImage, layout: plan.encodeTiles, generator: &generator)  // [1, 4, lh, lw], scaled
            var initLatents: [Float] = []
            for _ in 0..<n { initLatents += encoded }
            let noise = generator.randn(count: latentCount)
            latents = scheduler.addNoise(original: initLatents, noise: noise, step: first)
        } else {
            latents = generator.randn(count: latentCount).map { $0 * scheduler.initNoiseSigma }
        }

        // The UNet program in a scope of its own, so that its activations are freed before the VAE
        // runs (the pipeline's cache lets go of it below when it does not retain programs).
        do {
            let unet = try unetProgram(batch: (cfg ? 2 : 1) * n, height: lh, width: lw, contextLength: context.shape[1])
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
                ].merging(conditioning.addedInputs) { a, _ in a })
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
        }

        if !retainsPrograms {
            programs = programs.filter { $0.key.stage == .decoding }
            dropResidentWeights(of: model.unetWeights)
            dropResidentWeights(of: model.textEncoderWeights)
            if let (_, weights2) = model.textEncoder2 { dropResidentWeights(of: weights2) }
        }
        let finalLatents = try Tensor(shape: [n, latentChannels, lh, lw], values: latents)
        guard decode else { return ([], finalLatents) }
        defer { if !retainsPrograms { programs.removeAll() } }
        let images = try decodeImages(finalLatents, tiles: plan.decodeTiles) { k, image in try onEvent(.image(index: k, image: image)) }
        return (images, finalLatents)
    }

    // MARK: - Decoding

    /// Decodes latents [N, C, h, w] (as `latents(for:)` or a step event gives them) into images
    /// with the model's VAE, whole or in `tiles`: the decoding stage on its own, for previews or
    /// latents made elsewhere.
    public func decode(_ latents: Tensor, tiles: VAETileLayout? = nil) throws -> [RGBImage] {
        lock.lock()
        defer { lock.unlock() }
        let channels = model.vaeConfig.latentChannels
        guard latents.shape.rank == 4, latents.shape[1] == channels, latents.shape[2] > 0, latents.shape[3] > 0 else {
            throw GenerationError.invalidRequest("latents to decode must be [N, \(channels), h, w] (got \(latents.shape))")
        }
        return try decodeImages(latents, tiles: tiles) { _, _ in }
    }

    private func decodeImages(_ latents: Tensor, tiles: VAETileLayout?, onImage: (Int, RGBImage) throws -> Void) throws -> [RGBImage] {
        let (n, channels, lh, lw) = (latents.shape[0], latents.shape[1], latents.shape[2], latents.shape[3])
        let f = model.vaeConfig.scaleFactor, per = channels * lh * lw
        let values = latents.toFloats(), scaling = model.vaeConfig.scalingFactor
        var images: [RGBImage] = []
        for k in 0..<n {
            let z = try Tensor(shape: [1, channels, lh, lw], values: values[(k * per)..<((k + 1) * per)].map { $0 / scaling })
            let decoded: Tensor
            if let tiles {
                decoded = try decodeTiled(z, layout: tiles)
                guard decoded.shape == [1, model.vaeConfig.outChannels, lh * f, lw * f] else {
                    throw GenerationError.invalidRequest("VAE tiling \(tiles) decodes a \(lw * f)x\(lh * f) image to \(decoded.shape)")
                }
            } else {
                let decode = try decodeProgram(height: lh, width: lw)
                decoded = try decode.program.run(["latents": z])[decode.outputs[0]]!
            }
            try checkFinite(decoded.toFloats(), stage: .vaeDecode)
            let image = try RGBImage(decoded: decoded)
            images.append(image)
            try onImage(k, image)
        }
        return images
    }

    // MARK: - Memory plan and VAE tiling

    /// The memory `request` will take and how its VAE passes run (see `MemoryPlan`), decided
    /// before any work. With `VAETiling.auto` the VAE decodes (and encodes) whole whenever the
    /// executor can bind every tensor and the whole request fits the memory budget, as diffusers
    /// does; only otherwise does it tile, with the largest tile that fits.
    public func memoryPlan(for request: GenerationRequest) throws -> MemoryPlan {
        lock.lock()
        defer { lock.unlock() }
        try validate(request)
        return try plan(request)
    }

    /// The tiles the VAE decodes a request's latents in, or nil to decode them whole.
    public func vaeTileLayout(for request: GenerationRequest) throws -> VAETileLayout? {
        try memoryPlan(for: request).decodeTiles
    }

    /// The tiles the VAE encodes a request's init image in, or nil to encode it whole.
    public func vaeEncodeTileLayout(for request: GenerationRequest) throws -> VAETileLayout? {
        try memoryPlan(for: request).encodeTiles
    }

    private enum VAEPass { case encode, decode }

    private func plan(_ r: GenerationRequest) throws -> MemoryPlan {
        let budget = try memoryBudget ?? executor.memoryBudget()
        let (width, height) = size(for: r)
        let f = model.vaeConfig.scaleFactor, lh = height / f, lw = width / f
        let n = r.count, cfg = r.guidanceScale > 1, rows = cfg ? 2 : 1
        let length = model.textEncoderConfig.maxPositionEmbeddings
        let latentBytes = n * model.unetConfig.inChannels * lh * lw * 4

        let textWeights = model.textEncoderWeights.fileBytes + (model.textEncoder2?.weights.fileBytes ?? 0)
        let text = MemoryPlan.Stage(name: "text encoding", weights: textWeights,
                                    activations: try plannedBytes(textKey(rows, r.clipSkip)) { try buildText($0, count: rows, clipSkip: r.clipSkip) },
                                    staging: 2 * rows * n * length * model.unetConfig.crossAttentionDim * 4, how: "whole")
        let batch = rows * n
        let unetKey = ProgramKey.unet(batch: batch, height: lh, width: lw, contextLength: length)
        let unet = MemoryPlan.Stage(name: "denoising", weights: model.unetWeights.fileBytes,
                                    activations: try plannedBytes(unetKey) { try buildUNet($0, batch: batch, height: lh, width: lw, contextLength: length) },
                                    staging: latentBytes * (4 + 3 * rows), how: "whole")
        let vaeWeights = model.vaeWeights.fileBytes
        let imageBytes = model.vaeConfig.outChannels * height * width * 4

        // The peak: while denoising, the text encoder's program and weights (and the image
        // encoder's) are still held; with retainsPrograms every program stays.
        func peak(encode: MemoryPlan.Stage?, decode: MemoryPlan.Stage?) -> Int {
            let encodeBytes = encode.map { $0.weights + $0.activations + $0.staging } ?? 0
            let phases: [Int]
            if retainsPrograms {
                phases = [text.weights + unet.weights + vaeWeights + text.activations + unet.activations
                          + (encode?.activations ?? 0) + (decode?.activations ?? 0) + unet.staging + (decode?.staging ?? 0)]
            } else {
                phases = [text.weights + text.activations + text.staging + encodeBytes,
                          text.weights + text.activations + encodeBytes + unet.weights + unet.activations + unet.staging,
                          (decode.map { $0.weights + $0.activations + $0.staging } ?? 0) + latentBytes]
            }
            return budget.inUse + phases.max()!
        }

        var decisions: [String] = []
        /// One VAE pass over an h × w image, given the other pass's stage (or nil).
        func vaeStage(_ pass: VAEPass, h: Int, w: Int, other: MemoryPlan.Stage?) throws -> (MemoryPlan.Stage, VAETileLayout?) {
            let name = pass == .decode ? "decoding" : "image encoding"
            let staging = pass == .decode ? 3 * imageBytes + n * height * width * 3 : 4 * imageBytes
            func stage(_ layout: VAETileLayout?, _ how: String) throws -> MemoryPlan.Stage {
                let side = layout?.sampleTileSize
                return MemoryPlan.Stage(name: name, weights: vaeWeights,
                                        activations: try vaeActivations(pass, h: side ?? h, w: side ?? w, tiled: layout != nil),
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
                let widestWhole = try widestTensor(pass, h: h, w: w)
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
                    if tiles(layout), try limit.map({ try widestTensor(pass, h: tile, w: tile) <= $0 }) ?? true {
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
        if let image = r.initImage {
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

    private var plannedActivations: [ProgramKey: Int] = [:]
    /// Graphs built for the plan, handed to `cached` when the request compiles them; those it
    /// does not compile (tile sizes not chosen) are dropped when the request ends. `memoryPlan(for:)`
    /// leaves its graphs here for the generation that follows it.
    private var plannedGraphs: [ProgramKey: (Graph, [Value])] = [:]

    /// Activation bytes of the program cached under `key`: 0 when it is compiled and held,
    /// otherwise what the executor would allocate for it (memoized).
    private func plannedBytes(_ key: ProgramKey, _ build: (Graph) throws -> [Value]) throws -> Int {
        if programs[key] != nil { return 0 }
        if let known = plannedActivations[key] { return known }
        let g = Graph()
        let outputs = try build(g)
        // The request compiles this very graph (building it again would merge LoRAs twice).
        plannedGraphs[key] = (g, outputs)
        let bytes = executor.plannedActivationBytes(g, outputs: outputs)
        plannedActivations[key] = bytes
        return bytes
    }

    private func vaeActivations(_ pass: VAEPass, h: Int, w: Int, tiled: Bool) throws -> Int {
        let f = model.vaeConfig.scaleFactor
        switch pass {
        case .decode:
            return try plannedBytes(.decode(height: h / f, width: w / f)) { try buildDecode($0, height: h / f, width: w / f) }
        case .encode:
            return tiled ? try plannedBytes(.encodeMoments(height: h, width: w)) { try buildEncodeMoments($0, height: h, width: w) }
                : try plannedBytes(.encode(height: h, width: w)) { try buildEncode($0, height: h, width: w) }
        }
    }

    private var widestTensors: [String: Int] = [:]

    /// Bytes of the largest tensor of a VAE pass over an h × w image (memoized).
    private func widestTensor(_ pass: VAEPass, h: Int, w: Int) throws -> Int {
        let key = "\(pass)-\(h)x\(w)"
        if let known = widestTensors[key] { return known }
        let vae = AutoencoderKL(config: model.vaeConfig), f = model.vaeConfig.scaleFactor
        let bytes = pass == .decode ? try vae.widestDecoderTensor(latentHeight: h / f, latentWidth: w / f, weights: model.vaeWeights)
            : try vae.widestEncoderTensor(height: h, width: w, weights: model.vaeWeights)
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
            if !retainsPrograms { programs[.decode(height: th, width: tw)] = nil }
        })
    }

    // MARK: - Pieces

    /// Memory-mapped weights a finished network no longer needs leave the resident set.
    private func dropResidentWeights(of store: SafetensorsWeights) {
        store.files.forEach { $0.dropResidentPages() }
    }

    private func cached(_ key: ProgramKey, _ build: (Graph) throws -> [Value]) throws -> (program: any Program, outputs: [Value]) {
        if let p = programs[key] { return p }
        let (g, outputs) = try plannedGraphs.removeValue(forKey: key) ?? {
            let g = Graph()
            return (g, try build(g))
        }()
        let entry = (try executor.compile(g, outputs: outputs), outputs)
        programs[key] = entry
        return entry
    }

    /// Last hidden states [T, 77, D] of the given texts.
    func encodeText(_ texts: [String], clipSkip: Int) throws -> Tensor {
        let length = model.textEncoderConfig.maxPositionEmbeddings
        let p = try cached(textKey(texts.count, clipSkip)) { try buildText($0, count: texts.count, clipSkip: clipSkip) }
        let ids = texts.flatMap { tokenizer.ids($0, length: length) }
        return try p.program.run(["ids": try Tensor(shape: [texts.count, length], indices: ids)])[p.outputs[0]]!
    }

    /// SDXL: [T, 77, D1 + D2] penultimate states of both encoders (layer -(clipSkip + 2)) and the
    /// second encoder's text_embeds [T, P].
    func encodeTextXL(_ texts: [String], clipSkip: Int) throws -> (Tensor, Tensor) {
        guard let (config2, weights2) = model.textEncoder2, let tokenizer2 else {
            throw GenerationError.invalidRequest("the model has no second text encoder")
        }
        let l1 = model.textEncoderConfig.maxPositionEmbeddings, l2 = config2.maxPositionEmbeddings
        let ids1 = texts.map { tokenizer.ids($0, length: l1) }, ids2 = texts.map { tokenizer2.ids($0, length: l2) }
        let p = try cached(textKey(texts.count, clipSkip)) { try buildText($0, count: texts.count, clipSkip: clipSkip) }
        let out = try p.program.run([
            "ids": try Tensor(shape: [texts.count, l1], indices: Array(ids1.joined())),
            "ids2": try Tensor(shape: [texts.count, l2], indices: Array(ids2.joined())),
            "eos2": try Tensor(shape: [texts.count], indices: CLIPTextModel.eosRows(ids2)),
        ])
        return (out[p.outputs[0]]!, out[p.outputs[1]]!)
    }

    // MARK: - Graphs (shared by the programs and the memory plan)

    private func textKey(_ count: Int, _ clipSkip: Int) -> ProgramKey { .text(count: count, clipSkip: clipSkip) }

    /// The text encoder(s) for `count` texts: SD's last hidden states [T, 77, D]; SDXL's
    /// penultimate states of both encoders side by side and the second's text_embeds.
    private func buildText(_ g: Graph, count: Int, clipSkip: Int) throws -> [Value] {
        let l1 = model.textEncoderConfig.maxPositionEmbeddings
        let a = try g.input("ids", shape: [count, l1], dtype: .i32)
        guard let (config2, weights2) = model.textEncoder2 else {
            return [try CLIPTextModel(config: model.textEncoderConfig).build(g, ids: a, weights: model.textEncoderWeights,
                                                                               clipSkip: clipSkip).lastHiddenState]
        }
        let b = try g.input("ids2", shape: [count, config2.maxPositionEmbeddings], dtype: .i32)
        let rows = try g.input("eos2", shape: [count], dtype: .i32)
        let out1 = try CLIPTextModel(config: model.textEncoderConfig).build(g, ids: a, weights: model.textEncoderWeights)
        let encoder2 = CLIPTextModel(config: config2)
        let out2 = try encoder2.build(g, ids: b, weights: weights2)
        guard clipSkip + 2 <= min(out1.hiddenStates.count, out2.hiddenStates.count) else {
            throw GenerationError.invalidRequest("clip skip \(clipSkip) leaves no text-encoder layer")
        }
        let h1 = out1.hiddenStates[out1.hiddenStates.count - 2 - clipSkip], h2 = out2.hiddenStates[out2.hiddenStates.count - 2 - clipSkip]
        return [try g.concat([h1, h2], axis: 2), try encoder2.textEmbeds(g, out2, eosRows: rows, weights: weights2)]
    }

    private func buildUNet(_ g: Graph, batch: Int, height: Int, width: Int, contextLength: Int) throws -> [Value] {
        let x = try g.input("sample", shape: [batch, model.unetConfig.inChannels, height, width])
        let t = try g.input("timestep", shape: [batch])
        let c = try g.input("context", shape: [batch, contextLength, model.unetConfig.crossAttentionDim])
        let added = try model.textEncoder2.map { encoder2 in
            (textEmbeds: try g.input("text_embeds", shape: [batch, encoder2.config.projectionDim ?? encoder2.config.hiddenSize]),
             timeIds: try g.input("time_ids", shape: [batch, 6]))
        }
        return [try UNet2DConditionModel(config: model.unetConfig).build(g, sample: x, timestep: t, context: c, weights: model.unetWeights,
                                                                        added: added, maxTensorBytes: executor.maxTensorBytes)]
    }

    private func buildDecode(_ g: Graph, height: Int, width: Int) throws -> [Value] {
        let z = try g.input("latents", shape: [1, model.vaeConfig.latentChannels, height, width])
        return [try AutoencoderKL(config: model.vaeConfig).decode(g, latents: z, weights: model.vaeWeights)]
    }

    private func buildEncode(_ g: Graph, height: Int, width: Int) throws -> [Value] {
        let x = try g.input("image", shape: [1, 3, height, width])
        let (mean, logvar) = try AutoencoderKL(config: model.vaeConfig).encode(g, image: x, weights: model.vaeWeights)
        return [mean, logvar]
    }

    private func buildEncodeMoments(_ g: Graph, height: Int, width: Int) throws -> [Value] {
        let t = try g.input("image", shape: [1, 3, height, width])
        return [try AutoencoderKL(config: model.vaeConfig).encodeMoments(g, image: t, weights: model.vaeWeights)]
    }

    /// `t` with its first row (along dimension 0) set to zero.
    func zeroingFirstRow(_ t: Tensor) throws -> Tensor {
        var v = t.toFloats()
        let per = t.count / t.shape[0]
        for i in 0..<per { v[i] = 0 }
        return try Tensor(shape: t.shape, values: v)
    }

    /// [T, …] → [T·n, …], each row repeated n times in place (diffusers' repeat + view).
    func repeatEmbeddings(_ e: Tensor, times n: Int) throws -> Tensor {
        if n == 1 { return e }
        let rows = e.toFloats(), per = e.count / e.shape[0]
        var out: [Float] = []
        out.reserveCapacity(rows.count * n)
        for t in 0..<e.shape[0] {
            for _ in 0..<n { out += rows[(t * per)..<((t + 1) * per)] }
        }
        return try Tensor(shape: Shape([e.shape[0] * n] + e.shape.dims.dropFirst()), values: out)
    }

    private func unetProgram(batch: Int, height: Int, width: Int, contextLength: Int) throws -> (program: any Program, outputs: [Value]) {
        try cached(.unet(batch: batch, height: height, width: width, contextLength: contextLength)) {
            try buildUNet($0, batch: batch, height: height, width: width, contextLength: contextLength)
        }
    }

    private func decodeProgram(height: Int, width: Int) throws -> (program: any Program, outputs: [Value]) {
        try cached(.decode(height: height, width: width)) { try buildDecode($0, height: height, width: width) }
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
                let p = try cached(.encodeMoments(height: tile.shape[2], width: tile.shape[3])) {
                    try buildEncodeMoments($0, height: tile.shape[2], width: tile.shape[3])
                }
                return try p.program.run(["image": tile])[p.outputs[0]]!
            }, finishedShape: { th, tw in
                if !retainsPrograms { programs[.encodeMoments(height: th, width: tw)] = nil }
            })
            let m = moments.toFloats(), half = m.count / 2  // [1, 2·latent, h, w]: the means, then the log-variances
            mean = Array(m[..<half])
            logvar = m[half...].map { min(max($0, -30), 20) }
        } else {
            let p = try cached(.encode(height: h, width: w)) { try buildEncode($0, height: h, width: w) }
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
