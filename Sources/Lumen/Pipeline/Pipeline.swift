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
    let schedulerConfig: SchedulerConfig
    let defaultScheduler: SchedulerKind
    /// diffusers' `is_cosxl_edit` for this model (`Pipeline.isCosXLEdit`).
    let cosXLEdit: Bool
    /// One-line notices about what loading chose in the user's place (a scheduler run instead of
    /// one Lumen lacks, defaults for a missing config), for a front end to show; `notices(for:)`
    /// adds a request's own.
    public private(set) var notices: [String] = []
    private let logger = Logger(label: "lumen.pipeline")
    let lock = NSLock()
    /// The memory requests are planned against; nil: the executor's (`LUMEN_MEMORY_BUDGET`, else
    /// the available RAM on the CPU, the device-local memory on Vulkan).
    public var memoryBudget: MemoryBudget?
    /// Every compiled network, by stage and shape.
    let cache: ProgramCache
    /// The model family's conditioning stage (text encoders → `Conditioning`).
    let conditioning: any ConditioningStage
    /// The VAE: decoding and the init image's encoding.
    let vae: VAEStage
    /// ControlNets opened by requests, by folder.
    var loadedControlNets: [String: ControlNet] = [:]
    /// TAESD decoders opened by requests (previews, fast decodes), by path.
    var loadedTAESDs: [String: AutoencoderTinyDecoder] = [:]
    /// TAESD encoders opened by requests (`ImageEncoder.taesd`), by path.
    var loadedTAESDEncoders: [String: AutoencoderTinyEncoder] = [:]
    /// Keep every compiled network (and its activation memory) for later requests. Off, each
    /// network's program is dropped once the request no longer needs it, so the UNet's and the
    /// decoder's activations are never held at the same time: the right choice for one-shot use
    /// such as the CLI.
    public var retainsPrograms = true {
        didSet { vae.retainsPrograms = retainsPrograms }
    }

    /// Opens the model at `modelPath` (diffusers folder or single file) for `backend`, with its
    /// VAE replaced by the one at `vaePath` when given. `precision` picks between a folder's
    /// plain and `.fp16` weight files; `.auto` lets the backend choose. `loras` are merged into the
    /// UNet and text-encoder weights as the networks are built; `embeddings` are textual-inversion
    /// tokens the prompts may use.
    public convenience init(modelPath: String, backend: Backend = .auto, configFolder: String? = nil, vaePath: String? = nil,
                            precision: WeightPrecision = .auto, loras: [LoRAWeight] = [], embeddings: [TextualInversion] = [],
                            schedulerConfigPath: String? = nil) throws {
        let executor = try Pipeline.makeExecutor(backend)
        var note: String? = nil
        if case .auto = backend, executor.backendKind == .cpu {
            let devices = (try? VulkanExecutor.devices()) ?? []
            note = devices.isEmpty ? "no Vulkan device found: running on the CPU"
                : "no Vulkan GPU found (only \(devices.map(\.name).joined(separator: ", "))): running on the CPU"
        }
        try self.init(modelPath: modelPath, executor: executor, configFolder: configFolder, vaePath: vaePath,
                      precision: precision, loras: loras, embeddings: embeddings, schedulerConfigPath: schedulerConfigPath, backendNote: note)
    }

    /// Opens the model with an executor of the caller's (for example a `VulkanExecutor` with
    /// particular options).
    /// `schedulerConfigPath`: a `scheduler_config.json` used in place of the model's own.
    public init(modelPath: String, executor: any Executor, configFolder: String? = nil, vaePath: String? = nil,
                precision: WeightPrecision = .auto, loras: [LoRAWeight] = [], embeddings: [TextualInversion] = [],
                schedulerConfigPath: String? = nil, backendNote: String? = nil) throws {
        self.executor = executor
        self.backendNote = backendNote
        // The CPU executor widens every weight to f32 as it packs it, so it reads the plain files;
        // a GPU holds f16 weights, which a folder's .fp16 files give it for half the reading.
        let resolved = precision != .auto ? precision : (executor.prefersHalfPrecisionWeights ? WeightPrecision.fp16 : .fp32)
        model = try StableDiffusionModel.load(path: modelPath, configFolder: configFolder, vaePath: vaePath, precision: resolved)
        if let schedulerConfigPath { try model.replaceSchedulerConfig(with: schedulerConfigPath) }
        _ = try model.checkRunnable()
        try model.apply(loras: loras)
        try model.add(embeddings: embeddings)  // textual inversion (#20)
        // Single-file checkpoints carry no tokenizer: SD 1.x and 2.x use the standard CLIP
        // vocabulary, which the default model has (2.x pads with "!").
        guard let tokenizerPath = model.tokenizerPath ?? DefaultModel.clipTokenizerFolder else {
            throw GenerationError.tokenizerUnavailable(
                "\(modelPath) has no tokenizer folder and no CLIP vocabulary is at hand; pass a diffusers folder of the same model with --config")
        }
        tokenizer = try CLIPTokenizer(folder: tokenizerPath, padToken: model.tokenizerPath == nil ? model.tokenizerPadToken : nil)
        tokenizer2 = try model.xl?.tokenizer2Path.map { [pad2 = model.xl?.tokenizer2PadToken] in try CLIPTokenizer(folder: $0, padToken: pad2) }  // SDXL single files pad with "!"
        schedulerConfig = try model.schedulerConfigPath.map { try SchedulerConfig(path: $0) } ?? model.schedulerDefaults ?? SchedulerConfig()
        (defaultScheduler, notices) = try Pipeline.defaultScheduler(model: model, config: schedulerConfig)
        cosXLEdit = Self.isCosXLEdit(model)
        notices += model.loras.compactMap(\.lora.notice)
        cache = ProgramCache(executor: executor)
        conditioning = try makeConditioningStage(model: model, tokenizer: tokenizer, tokenizer2: tokenizer2)
        vae = VAEStage(config: model.vaeConfig, weights: model.vaeWeights, cache: cache, withLoRAs: !model.loras.isEmpty)
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

    /// The scheduler config as diffusers' pipeline for this request leaves it. Its Stable Diffusion
    /// 1.x/2.x pipelines rewrite an outdated config as they are built (`StableDiffusionPipeline`
    /// and its image-to-image pipeline: `steps_offset` to 1 and `clip_sample` to false; the
    /// inpainting pipeline: `steps_offset` only; the ControlNet and SDXL pipelines: neither).
    /// The folder's own scheduler reads the rewritten values; one chosen instead
    /// (`X.from_config(pipe.scheduler.config)`, what `--scheduler` means) takes only the values
    /// the file held, rewritten, and its own defaults for the rest (diffusers drops the values
    /// that were defaults). Without this a folder whose DDIM config sets `clip_sample` (or leaves
    /// it to DDIM's default, true) clipped every step's prediction where diffusers does not, and a
    /// `steps_offset` of 0 moved every timestep by one.
    func pipelineSchedulerConfig(_ request: GenerationRequest) -> SchedulerConfig {
        var c = schedulerConfig
        guard model.xl == nil, request.controlNets.isEmpty else { return c }
        let clipToo = request.mask == nil
        if request.scheduler == nil {
            c.stepsOffset = 1
            if clipToo, c.clipSample ?? defaultScheduler.classDefaults.clipSample { c.clipSample = false }
        } else {
            if c.stepsOffset != nil { c.stepsOffset = 1 }
            if clipToo, c.clipSample == true { c.clipSample = false }
        }
        return c
    }

    /// The size a request produces.
    public func size(for request: GenerationRequest) -> (width: Int, height: Int) {
        let f = model.vaeConfig.scaleFactor
        let fallback = model.unetConfig.sampleSize * f
        let fromLatents = request.initLatents.flatMap { $0.shape.count == 4 ? ($0.shape[3] * f, $0.shape[2] * f) : nil }
        return (request.width ?? request.initImage?.width ?? fromLatents?.0 ?? fallback,
                request.height ?? request.initImage?.height ?? fromLatents?.1 ?? fallback)
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
        let (request, overlay) = try preparedMask(request)
        if let overlay {
            // The crop's images laid back into the init image before anyone sees them.
            var laid: [RGBImage] = []
            _ = try run(request, decode: true) { event in
                guard case .image(let k, let image) = event else { return try onEvent(event) }
                laid.append(try overlay.apply(to: image))
                try onEvent(.image(index: k, image: laid[laid.count - 1]))
            }
            return laid
        }
        guard let hires = request.hires else { return try run(request, decode: true, onEvent: onEvent).images }
        let (first, second) = try hiresPasses(request, hires)
        let latents = try run(first, decode: false, onEvent: onEvent).latents
        return try run(try second(latents), decode: true, onEvent: onEvent).images
    }

    /// Final latents of a request, before the VAE (diffusers' `output_type="latent"`): the VAE
    /// does not run.
    public func latents(for request: GenerationRequest, onEvent: (GenerationEvent) throws -> Void = { _ in }) throws -> Tensor {
        let request = try preparedMask(request).request
        guard let hires = request.hires else { return try run(request, decode: false, onEvent: onEvent).latents }
        let (first, second) = try hiresPasses(request, hires)
        let latents = try run(first, decode: false, onEvent: onEvent).latents
        return try run(try second(latents), decode: false, onEvent: onEvent).latents
    }

    /// The generation, stage by stage: plan, conditioning, start latents, denoising and, with
    /// `decode`, decoding.
    private func run(_ request: GenerationRequest, decode: Bool,
                     onEvent: (GenerationEvent) throws -> Void) throws -> (images: [RGBImage], latents: Tensor) {
        lock.lock()
        defer { lock.unlock() }
        defer { cache.dropPlannedGraphs() }
        try validate(request)
        // Everything the request will hold is known now: refuse it before the first step, never
        // after the last, when it cannot fit even tiled.
        let plan = try self.plan(request)
        guard plan.fits else { throw GenerationError.insufficientMemory(plan: plan.description) }
        let (width, height) = size(for: request)
        let f = model.vaeConfig.scaleFactor
        let (lh, lw) = (height / f, width / f)
        let n = request.count
        let latentChannels = model.vaeConfig.latentChannels
        let guided = isGuided(request), groups = rowGroups(request)
        var generator = TorchGenerator(seed: request.seed)

        var conditions = try conditioning.condition(request, guided: guided, width: width, height: height, cache: cache)
        if guided && model.isInstructPix2Pix {
            // InstructPix2Pix's three groups: the unconditional text twice (with no image, then
            // with the image), then the prompt; SDXL's time ids are the prompt's in every group.
            conditions = Conditioning(context: try Self.repeatingFirstHalf(conditions.context),
                                      pooled: try conditions.pooled.map(Self.repeatingFirstHalf),
                                      timeIds: try conditions.timeIds.map(Self.secondHalfThrice))
        }
        try checkFinite(conditions.context.toFloats(), stage: .textEncoder)

        var config = pipelineSchedulerConfig(request)
        if let prediction = request.predictionType { config.predictionType = prediction.rawValue }
        let scheduler = try schedulerKind(for: request).make(config: config, steps: request.steps, eta: request.eta)
        let (start, first, hook) = try startLatents(request, scheduler: scheduler, plan: plan, generator: &generator)
        let end = try lastStep(request, scheduler: scheduler, first: first)
        try checkZeroSignalStart(config, kind: schedulerKind(for: request), scheduler: scheduler, first: first)
        if !retainsPrograms {
            // The prompt is encoded, and the init image too where there is one: the text and image
            // encoders' programs and the text encoders' weight pages are not needed while
            // denoising (about 1.5 GiB of SDXL's 6.9 GiB peak); the memory plan counts on it.
            cache.keepOnly([.denoising, .decoding])
            conditioning.dropResidentWeights()
        }

        // The UNet program in a scope of its own, so that its activations are freed before the VAE
        // runs (the cache lets go of it below when the pipeline does not retain programs).
        var latents: [Float]
        do {
            let batch = groups * n
            let controlled = !request.controlNets.isEmpty
            let unet = try unetNetwork(batch: batch, height: lh, width: lw, contextLength: conditions.context.shape[1], controlled: controlled)
            try model.checkLoRAsApplied()  // both networks are built by now
            var hooks = hook.map { [$0] } ?? []
            if controlled {
                hooks.append(try controlNetHook(request, conditioning: conditions, batch: batch, height: lh, width: lw, steps: first..<end))
            }
            hooks += try lcmGuidanceHook(request, batch: batch)
            latents = try withoutActuallyEscaping(onEvent) { onEvent in
                // Previews last: they see the latents as the other hooks leave them (diffusers'
                // callback_on_step_end after the inpainting blend).
                if let previews = request.previews {
                    hooks.append(PreviewHook(stage: try taesdStage(previews.taesdPath), every: previews.every, steps: first..<end,
                                             shape: [n, latentChannels, lh, lw], withLoRAs: !model.loras.isEmpty) { k, steps, images in
                        try onEvent(.preview(index: k, count: steps, images: images))
                    })
                }
                var loop = DenoisingLoop(unet: { try unet.run($0)[0] }, conditioning: conditions, scheduler: scheduler,
                                         guidanceScale: guided ? request.guidanceScale : 1, guidanceRescale: request.guidanceRescale,
                                         imageGuidanceScale: model.isInstructPix2Pix ? request.imageGuidanceScale : nil,
                                         imageGuidanceRescales: model.xl != nil,
                                         count: n, channels: latentChannels, height: lh, width: lw, hooks: hooks)
                return try loop.run(from: start, steps: first..<end, generator: &generator) { k, steps, latents in
                    try checkFinite(latents, stage: .unetStep(k, of: steps), request: request)
                    try onEvent(.step(index: k, count: steps, latents: try Tensor(shape: [n, latentChannels, lh, lw], values: latents)))
                }
            }
        }

        if !retainsPrograms {
            cache.keepOnly([.decoding])
            dropResidentWeights(of: model.unetWeights)
        }
        let finalLatents = try Tensor(shape: [n, latentChannels, lh, lw], values: latents)
        guard decode else { return ([], finalLatents) }
        defer { if !retainsPrograms { cache.dropAll() } }
        if case .taesd(let path) = request.decoder {
            let images = try taesdStage(path).decode(finalLatents, withLoRAs: !model.loras.isEmpty)
            for (k, image) in images.enumerated() { try onEvent(.image(index: k, image: image)) }
            return (images, finalLatents)
        }
        let images = try vae.decode(finalLatents, tiles: plan.decodeTiles, statistics: latentStatistics(request).decode) { k, image in
            try onEvent(.image(index: k, image: image))
        }
        return (images, finalLatents)
    }

    /// The latents the denoising loop starts from and the index of its first step: noise scaled
    /// to the scheduler's first sigma; or the encoded init image (or given init latents) noised to
    /// the step its strength starts at (diffusers' img2img `get_timesteps` and `prepare_latents`);
    /// or, with `denoisingStart`, the init latents as they are from the first step below the cutoff.
    /// With a mask, also the hook that keeps the unmasked area (`MaskBlend`), and diffusers'
    /// inpainting start: pure noise at strength 1.
    private func startLatents(_ request: GenerationRequest, scheduler: any Scheduler, plan: MemoryPlan,
                              generator: inout TorchGenerator) throws -> (latents: [Float], first: Int, hook: (any DenoisingHook)?) {
        let (width, height) = size(for: request)
        let f = model.vaeConfig.scaleFactor
        let latentCount = request.count * model.vaeConfig.latentChannels * (height / f) * (width / f)
        guard request.initImage != nil || request.initLatents != nil else {
            return (generator.randn(count: latentCount).map { $0 * scheduler.initNoiseSigma }, 0, nil)
        }
        if model.isInstructPix2Pix, let image = request.initImage {
            // diffusers: the image's latent mode (the encoder's mean, unscaled: no draw), then
            // noise for every step; no strength.
            var imageLatents = try vae.encodeMode(image, layout: plan.encodeTiles)
            if model.xl != nil && cosXLEdit {  // diffusers' is_cosxl_edit: the mean times the scaling factor
                imageLatents = imageLatents.map { $0 * model.vaeConfig.scalingFactor }
            }
            let hook = InstructPix2PixInputs(imageLatents: imageLatents, count: request.count, guided: isGuided(request),
                                             channels: model.vaeConfig.latentChannels, height: height / f, width: width / f)
            return (generator.randn(count: latentCount).map { $0 * scheduler.initNoiseSigma }, 0, hook)
        }
        let first: Int
        if let start = request.denoisingStart {
            // diffusers: the steps below the cutoff, one more for a second-order scheduler left even.
            let cutoff = Self.timestepCutoff(start, scheduler: schedulerConfig)
            var remaining = scheduler.timesteps.filter { $0 < Float(cutoff) }.count
            if scheduler.order == 2 && remaining % 2 == 0 { remaining += 1 }
            first = scheduler.timesteps.count - remaining
        } else {
            first = type(of: scheduler).firstStep(steps: request.steps, strength: Double(request.strength), order: scheduler.order)
        }
        guard first < scheduler.timesteps.count else {
            throw GenerationError.invalidRequest(request.denoisingStart.map { "denoising start \($0) with \(request.steps) steps leaves no step to run" }
                                                 ?? "strength \(request.strength) with \(request.steps) steps leaves no step to run")
        }
        if model.isInpainting, let image = request.initImage, let mask = request.mask {
            return try inpaintingStart(request, image: image, mask: mask, scheduler: scheduler, first: first, plan: plan, generator: &generator)
        }
        let initLatents: [Float]
        if let given = request.initLatents {
            initLatents = given.values
        } else {
            let encoded = try encodeInitImage(request.initImage!, request, plan: plan, generator: &generator)  // [1, 4, lh, lw], scaled
            initLatents = Array([[Float]](repeating: encoded, count: request.count).joined())
        }
        if request.denoisingStart != nil { return (initLatents, first, nil) }
        let noise = generator.randn(count: latentCount)
        guard let mask = request.mask else {
            return (scheduler.addNoise(original: initLatents, noise: noise, step: first), first, nil)
        }
        // diffusers also encodes the masked image (for 9-channel UNets) with the request's
        // generator, so that the steps' noise comes after that sample (TAESD's encoder draws none).
        if request.encoder == .vae { _ = generator.randn(count: latentCount / request.count) }
        let blend = MaskBlend(mask: MaskBlend.latentMask(mask, latentHeight: height / f, latentWidth: width / f),
                              imageLatents: initLatents, noise: noise, channels: model.vaeConfig.latentChannels)
        let start = request.strength == 1 ? noise.map { $0 * scheduler.initNoiseSigma }
            : scheduler.addNoise(original: initLatents, noise: noise, step: first)
        return (start, first, blend)
    }

    /// An inpainting UNet's start, as diffusers' `StableDiffusionInpaintPipeline` draws it: the
    /// init image's latents (only below strength 1, which starts from pure noise), the noise, then
    /// the masked image's latents (the init image grey where it is repainted), each from the
    /// request's generator in that order.
    private func inpaintingStart(_ request: GenerationRequest, image: InitImage, mask: InitImage, scheduler: any Scheduler,
                                 first: Int, plan: MemoryPlan, generator: inout TorchGenerator)
        throws -> (latents: [Float], first: Int, hook: (any DenoisingHook)?) {
        let f = model.vaeConfig.scaleFactor, channels = model.vaeConfig.latentChannels
        let (lh, lw) = (image.height / f, image.width / f)
        let latentCount = request.count * channels * lh * lw
        var start: [Float]
        if request.strength == 1 {
            start = generator.randn(count: latentCount).map { $0 * scheduler.initNoiseSigma }
        } else {
            let encoded = try encodeInitImage(image, request, plan: plan, generator: &generator)
            let noise = generator.randn(count: latentCount)
            start = scheduler.addNoise(original: Array([[Float]](repeating: encoded, count: request.count).joined()), noise: noise, step: first)
        }
        // diffusers multiplies the [-1, 1] image by (mask < 0.5): the repainted area is 0, which is
        // 0.5 in [0, 1].
        let binary = MaskBlend.latentMask(mask, latentHeight: image.height, latentWidth: image.width)
        var masked = image.rgb
        for p in 0..<(image.width * image.height) where binary[p] == 1 {
            masked[3 * p] = 0.5; masked[3 * p + 1] = 0.5; masked[3 * p + 2] = 0.5
        }
        let maskedLatents = try encodeInitImage(InitImage(width: image.width, height: image.height, rgb: masked), request,
                                                plan: plan, generator: &generator)
        let hook = InpaintInputs(mask: MaskBlend.latentMask(mask, latentHeight: lh, latentWidth: lw),
                                 maskedImageLatents: maskedLatents, channels: channels, height: lh, width: lw)
        return (start, first, hook)
    }

    /// The end of the step range: all the scheduler's steps, or with `denoisingEnd` those whose
    /// timestep is at least its cutoff (diffusers' `denoising_end`).
    private func lastStep(_ request: GenerationRequest, scheduler: any Scheduler, first: Int) throws -> Int {
        guard let end = request.denoisingEnd else { return scheduler.timesteps.count }
        let cutoff = Float(Self.timestepCutoff(end, scheduler: schedulerConfig))
        let last = first + scheduler.timesteps[first...].prefix { $0 >= cutoff }.count
        guard last > first else {
            throw GenerationError.invalidRequest("denoising end \(end) with \(request.steps) steps leaves no step to run")
        }
        return last
    }

    /// diffusers' `discrete_timestep_cutoff` of a denoising fraction: round(T − fraction · T).
    static func timestepCutoff(_ fraction: Double, scheduler config: SchedulerConfig) -> Int {
        let t = Double(config.numTrainTimesteps ?? 1000)
        return Int((t - fraction * t).rounded(.toNearestOrEven))
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
        return try vae.decode(latents, tiles: tiles, statistics: model.xl != nil) { _, _ in }
    }

    /// diffusers' `is_cosxl_edit` from a folder's model_index.json (the SDXL InstructPix2Pix
    /// pipeline then scales the image latents by the VAE's scaling factor); false elsewhere, as
    /// the pipeline's default. Read once, when the pipeline opens the model.
    static func isCosXLEdit(_ model: StableDiffusionModel) -> Bool {
        guard model.isInstructPix2Pix, model.layout == .diffusersFolder,
              let data = try? RegularFile.read(model.path + "/model_index.json", limit: 1 << 20),
              let index = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return false }
        return index["is_cosxl_edit"] as? Bool ?? false
    }

    /// Row groups of the UNet's batch: 1 unguided, 2 with classifier-free guidance, 3 for
    /// InstructPix2Pix's guidance (the denoising loop's `groups`, for the run and its memory plan).
    func rowGroups(_ request: GenerationRequest) -> Int {
        isGuided(request) ? (model.isInstructPix2Pix ? 3 : 2) : 1
    }

    /// Whether the request runs guided: classifier-free guidance above 1 (not for UNets that embed
    /// the scale, #15); for InstructPix2Pix also an image guidance of at least 1, as diffusers.
    func isGuided(_ request: GenerationRequest) -> Bool {
        guard request.guidanceScale > 1 && !model.unetConfig.embedsGuidance else { return false }
        return !model.isInstructPix2Pix || request.imageGuidanceScale >= 1
    }

    /// The rows [u₁…uₙ, c₁…cₙ] of a guided context as [u…, u…, c…].
    static func repeatingFirstHalf(_ context: Tensor) throws -> Tensor {
        let rows = context.shape[0], per = context.count / rows, values = context.toFloats()
        let half = values[..<(rows / 2 * per)]
        return try Tensor(shape: Shape([rows / 2 * 3] + context.shape.dims.dropFirst()), values: Array(half) + values)
    }

    /// The rows [u₁…uₙ, c₁…cₙ] as [c…, c…, c…].
    static func secondHalfThrice(_ t: Tensor) throws -> Tensor {
        let rows = t.shape[0], per = t.count / rows, values = t.toFloats()
        let half = Array(values[(rows / 2 * per)...])
        return try Tensor(shape: Shape([rows / 2 * 3] + t.shape.dims.dropFirst()), values: half + half + half)
    }

    /// Where diffusers' pipeline for the request unscales latents with the VAE's `latents_mean` and
    /// `latents_std` (Playground v2.5): the SDXL pipelines decode so, except ControlNet inpainting;
    /// of those, only image-to-image (with or without ControlNet) encodes its init image so.
    /// SDXL inpainting encodes with the scaling factor alone and decodes with the statistics, as
    /// diffusers does. Stable Diffusion 1.x/2.x pipelines never read them.
    func latentStatistics(_ request: GenerationRequest) -> (decode: Bool, encode: Bool) {
        guard model.xl != nil, model.vaeConfig.latentStatistics != nil else { return (false, false) }
        if request.mask != nil { return (request.controlNets.isEmpty, false) }
        return (true, true)
    }

    // MARK: - The UNet

    /// Memory-mapped weights a finished network no longer needs leave the resident set.
    private func dropResidentWeights(of store: SafetensorsWeights) {
        store.files.forEach { $0.dropResidentPages() }
    }

    func buildUNet(_ g: Graph, batch: Int, height: Int, width: Int, contextLength: Int, controlled: Bool = false) throws -> [Value] {
        let x = try g.input("sample", shape: [batch, model.unetConfig.inChannels, height, width])
        let t = try g.input("timestep", shape: [batch])
        let c = try g.input("context", shape: [batch, contextLength, model.unetConfig.crossAttentionDim])
        let added = try conditioning.addedUNetInputs(g, batch: batch)
        let cond = try model.unetConfig.timeCondProjDim.map { try g.input("timestep_cond", shape: [batch, $0]) }  // LCM
        let unet = try UNet2DConditionModel(config: model.unetConfig)
        var residuals: (down: [Value], mid: Value)? = nil
        if controlled {
            let shapes = unet.residualShapes(batch: batch, height: height, width: width)
            residuals = (try shapes.down.enumerated().map { try g.input("down_residual_\($0)", shape: $1) },
                         try g.input("mid_residual", shape: shapes.mid))
        }
        return [try unet.build(g, sample: x, timestep: t, context: c, weights: model.unetWeights,
                               added: added, timestepCond: cond, maxTensorBytes: executor.maxTensorBytes, residuals: residuals)]
    }

    private func unetNetwork(batch: Int, height: Int, width: Int, contextLength: Int, controlled: Bool) throws -> CompiledNetwork {
        try cache.network(.unet(batch: batch, height: height, width: width, contextLength: contextLength, controlled: controlled)) {
            try buildUNet($0, batch: batch, height: height, width: width, contextLength: contextLength, controlled: controlled)
        }
    }

    // MARK: - ControlNets

    /// The ControlNet at `path`, opened once and checked against the model.
    func controlNet(_ path: String) throws -> ControlNet {
        if let net = loadedControlNets[path] { return net }
        let net = try ControlNet(path: path, precision: executor.prefersHalfPrecisionWeights ? .fp16 : .fp32, model: model.unetConfig)
        let c = net.config.unet, u = model.unetConfig
        guard c.crossAttentionDim == u.crossAttentionDim, c.blockOutChannels == u.blockOutChannels,
              c.layersPerBlock == u.layersPerBlock, c.inChannels == model.vaeConfig.latentChannels,
              (c.additionEmbedType == nil) == (u.additionEmbedType == nil) else {
            throw GenerationError.invalidRequest("the ControlNet \(path) was made for another model family (cross-attention \(c.crossAttentionDim), "
                                                 + "blocks \(c.blockOutChannels); the model has \(u.crossAttentionDim), \(u.blockOutChannels))")
        }
        loadedControlNets[path] = net
        return net
    }

    func buildControlNet(_ g: Graph, _ net: ControlNet, batch: Int, height: Int, width: Int, contextLength: Int) throws -> [Value] {
        let f = model.vaeConfig.scaleFactor
        let x = try g.input("sample", shape: [batch, model.vaeConfig.latentChannels, height, width])
        let t = try g.input("timestep", shape: [batch])
        let c = try g.input("context", shape: [batch, contextLength, model.unetConfig.crossAttentionDim])
        let image = try g.input("condition", shape: [batch, net.config.conditioningChannels, height * f, width * f])
        let added = try conditioning.addedUNetInputs(g, batch: batch)
        let out = try ControlNetModel(config: net.config).build(g, sample: x, timestep: t, context: c, condition: image,
                                                               weights: net.weights, added: added, maxTensorBytes: executor.maxTensorBytes)
        return out.down + [out.mid]
    }

    private func controlNetHook(_ request: GenerationRequest, conditioning conditions: Conditioning, batch: Int, height: Int, width: Int,
                                steps: Range<Int>) throws -> ControlNetHook {
        let length = conditions.context.shape[1]
        let nets = try request.controlNets.map { input in
            let net = try controlNet(input.path)
            let network = try cache.network(.controlNet(path: input.path, batch: batch, height: height, width: width, contextLength: length)) {
                try buildControlNet($0, net, batch: batch, height: height, width: width, contextLength: length)
            }
            // diffusers' control image: RGB in [0, 1], planar, one copy per row of the batch.
            let (w, h) = (input.image.width, input.image.height)
            var planar = [Float](repeating: 0, count: 3 * h * w)
            for p in 0..<(h * w) { for c in 0..<3 { planar[c * h * w + p] = input.image.rgb[3 * p + c] } }
            let image = try Tensor(shape: [batch, 3, h, w], values: Array([[Float]](repeating: planar, count: batch).joined()))
            return ControlNetHook.Net(network: network, image: image, input: input)
        }
        let shapes = try UNet2DConditionModel(config: model.unetConfig).residualShapes(batch: batch, height: height, width: width)
        return ControlNetHook(nets: nets, conditioning: conditions, shapes: shapes, steps: steps)
    }
}
