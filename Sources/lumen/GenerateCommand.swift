import ArgumentParser
import Foundation
import Lumen

#if canImport(Glibc)
import Glibc
#endif

/// `lumen generate`: a prompt in, PNGs out.
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate", abstract: "Generate images from a text prompt (and optionally a starting image).")

    @Argument(help: "What to draw.")
    var prompt: String

    @Option(help: "A diffusers folder or a single-file .safetensors checkpoint (default: the built-in model).")
    var model: String?

    @OptionGroup var files: ModelFileOptions

    @Option(name: .customLong("negative-prompt"),
            help: "What not to draw. Absent means none (SDXL: zero unconditional inputs, as diffusers' negative_prompt=None); \"\" is an explicit empty prompt, which SDXL encodes.")
    var negativePrompt: String?

    @Option(name: .customLong("prompt-syntax"),
            help: "How prompts are read: a1111 (attention weights (a) [a] (a:1.3), escapes \\(, BREAK, any length in 75-token chunks, as AUTOMATIC1111) or plain (the text as it is, 77 tokens, as diffusers).")
    var promptSyntax: PromptSyntax = .a1111

    @Option(name: .customLong("steps"), help: "Denoising steps (default 50, diffusers' default).")
    var stepsOption: Int?

    @Option(name: .customLong("guidance"),
            help: "Classifier-free guidance scale, at most 1 disables guidance (default diffusers' for the model: 7.5, SDXL 5.0, SDXL inpainting 7.5).")
    var guidanceOption: Float?

    @Option(name: .customLong("image-guidance"),
            help: "An InstructPix2Pix model's image guidance (diffusers' image_guidance_scale, default 1.5): how closely the edit keeps to --init-image.")
    var imageGuidance: Float = 1.5

    @Option(name: .customLong("guidance-rescale"),
            help: "Rescale the guided prediction to the conditional one's standard deviation, in this share 0…1 (diffusers' guidance_rescale; 0.7 for models trained with zero terminal SNR, 0 is off).")
    var guidanceRescale: Float = 0

    @Option(name: .customLong("scheduler-config"), help: "A scheduler_config.json used in place of the model's own (a folder's, or a single file's family defaults): for files trained in a way diffusers cannot tell from their tensors, e.g. prediction_type v_prediction with rescale_betas_zero_snr, or an EDMEulerScheduler config for an EDM file. --scheduler still picks the scheduler class.")
    var schedulerConfig: String?

    @Option(help: "diffusers' eta, 0…1: DDIM's share of fresh noise in each step (0, deterministic, by default) and TCD's gamma (TCD LoRAs suggest 0.3); the other schedulers have none.")
    var eta: Float = 0

    @Option(help: "Width in pixels (a multiple of 8; default: the model's size or the init image's).")
    var width: Int?

    @Option(help: "Height in pixels (a multiple of 8).")
    var height: Int?

    @Option(help: "Seed of the random generator (torch's CPU generator; default: a random seed, printed).")
    var seed: UInt64?

    @Option(help: ArgumentHelp(SchedulerKind.argumentHelp))
    var scheduler: SchedulerKind?

    @Option(name: .customLong("prediction-type"),
            help: "What the UNet predicts: epsilon, v_prediction or sample (default: the scheduler config's; a Stable Diffusion 2.x single file without --config is taken for 2.1's v_prediction, so a 2.x-base one needs epsilon).")
    var predictionType: PredictionType?

    @Option(name: .customLong("lora"),
            help: "A LoRA (.safetensors, kohya-ss/A1111 or diffusers/PEFT layout) to merge into the UNet and text encoder, as PATH or PATH:STRENGTH (default strength 1); repeat for several.")
    var loras: [LoRAWeight] = []

    @Option(name: .customLong("embedding"),
            help: ArgumentHelp("A textual-inversion embedding (.safetensors: A1111's emb_params/string_to_param, diffusers' learned_embeds, SDXL clip_l + clip_g); its token is the file name (or the key of a diffusers file) unless given after a colon. Repeatable.",
                               valueName: "PATH[:TOKEN]"))
    var embeddingSpecs: [String] = []

    @Option(help: "Images to generate.")
    var count = 1

    @Option(name: .customLong("init-image"), help: "A PNG to start from (image-to-image).")
    var initImage: String?

    @Option(name: .customLong("strength"),
            help: "Image-to-image: how much of the starting image to repaint, in (0, 1] (default diffusers' for the pipeline: 0.8, with --mask 1.0; SDXL 0.3, with --mask 0.9999; 1 with --outpaint).")
    var strengthOption: Float?

    /// What validation checks before the model is read: the flags as given, else SD's defaults.
    var steps: Int { stepsOption ?? 50 }
    var guidance: Float { guidanceOption ?? 7.5 }
    var strength: Float { strengthOption ?? 0.8 }

    @Option(help: "A ControlNet (a diffusers ControlNetModel folder or a single .safetensors file, original or diffusers names) and its conditioning image (an edge, depth or pose map of the output's size), as CONTROLNET:PNG or CONTROLNET:PNG:SCALE (default diffusers' for the pipeline: 1, with --init-image 0.8, with --mask 0.5, SDXL with --mask 1); repeat for several (their residuals are summed). CONTROLNET:canny=PHOTO.png computes the edge map of a photo first (OpenCV's Canny, thresholds 100 and 200).")
    var control: [String] = []

    @Option(name: .customLong("control-start"), help: "The fraction of the steps after which the ControlNets start acting (diffusers' control_guidance_start).")
    var controlStart: Double = 0

    @Option(name: .customLong("control-end"), help: "The fraction of the steps after which they stop (control_guidance_end).")
    var controlEnd: Double = 1

    @Option(help: "Hires fix (AUTOMATIC1111's): generate, upscale the latents by this factor, then repaint at the larger size with --hires-strength of --hires-steps steps.")
    var hires: Double?

    @Option(name: .customLong("hires-steps"), help: "Steps of the hires fix's second pass (default: --steps).")
    var hiresSteps: Int?

    @Option(name: .customLong("hires-strength"), help: "How much the hires fix's second pass repaints, in (0, 1].")
    var hiresStrength: Float = 0.7

    @Option(name: .customLong("hires-upscaler"), help: "How the hires fix upscales: latent (bilinear latents), latent-nearest, or lanczos (the image, resized as Pillow does, then encoded again).")
    var hiresUpscaler = "latent"

    @Option(help: "An SDXL refiner (diffusers folder or single file) that finishes the generation from the base's latents (diffusers' denoising_end/denoising_start handoff), with the same prompt, steps, guidance, scheduler and seed; it decodes with its own VAE (--vae replaces both models' VAEs).")
    var refiner: String?

    @Option(name: .customLong("refiner-start"), help: "With --refiner: the fraction of the noise schedule the base runs before the refiner takes over, in (0, 1) (default 0.8).")
    var refinerStart: Double?

    @Option(name: .customLong("aesthetic-score"), help: "An SDXL refiner's aesthetic-score conditioning (diffusers' aesthetic_score, default 6).")
    var aestheticScore: Float = 6

    @Option(name: .customLong("negative-aesthetic-score"), help: "The refiner's aesthetic score for the unconditional batch (diffusers' negative_aesthetic_score, default 2.5).")
    var negativeAestheticScore: Float = 2.5

    @Option(name: .customLong("original-size"), help: "SDXL's size conditioning: the original image size the model is told, WIDTHxHEIGHT (diffusers' original_size; default the output's size).")
    var originalSize: SDXLMicroConditioning.Size?

    @Option(name: .customLong("crop-top-left"), help: "SDXL's crop conditioning: TOP,LEFT in pixels (diffusers' crops_coords_top_left; default 0,0).")
    var cropTopLeft: SDXLMicroConditioning.Crop?

    @Option(name: .customLong("target-size"), help: "SDXL's target size conditioning, WIDTHxHEIGHT (diffusers' target_size; default the output's size).")
    var targetSize: SDXLMicroConditioning.Size?

    @Option(name: .customLong("negative-original-size"), help: "The original size for the unconditional batch, WIDTHxHEIGHT (diffusers' negative_original_size; e.g. 512x512 steers away from low-resolution looks). Text-to-image uses the negative sizes only when both this and --negative-target-size are given, as diffusers does.")
    var negativeOriginalSize: SDXLMicroConditioning.Size?

    @Option(name: .customLong("negative-crop-top-left"), help: "The crop for the unconditional batch, TOP,LEFT (diffusers' negative_crops_coords_top_left).")
    var negativeCropTopLeft: SDXLMicroConditioning.Crop?

    @Option(name: .customLong("negative-target-size"), help: "The target size for the unconditional batch, WIDTHxHEIGHT (diffusers' negative_target_size).")
    var negativeTargetSize: SDXLMicroConditioning.Size?

    @Option(help: "With --init-image: extend the canvas and paint only the new area, e.g. left=128,right=128 (also top, bottom; multiples of 8 pixels). The strength defaults to 1 (the new area starts from noise).")
    var outpaint: String?

    @Option(help: "With --init-image: a PNG of the same size whose white (grey at least half) is repainted and black kept (diffusers' inpainting with an ordinary checkpoint).")
    var mask: String?

    @Option(name: .customLong("mask-blur"),
            help: ArgumentHelp("Blur the mask first, as diffusers' mask_processor.blur (Pillow's GaussianBlur; PX is its standard deviation). The latents still use the mask at half grey, so alone it rounds the mask's outline; with --mask-crop it also softens the seam.", valueName: "PX"))
    var maskBlur: Float?

    @Option(name: .customLong("mask-crop"),
            help: ArgumentHelp("Inpaint only the mask's bounding box plus PADDING pixels (widened to the output's aspect ratio), at the output size (--width/--height, default the init image's), then lay it back into the init image through the mask (diffusers' padding_mask_crop). The image keeps the init image's size.", valueName: "PADDING"))
    var maskCrop: Int?

    @Option(name: .customLong("clip-skip"), help: "Skip the last N text-encoder layers.")
    var clipSkip = 0

    @Option(help: "auto, cpu or vulkan.")
    var backend = BackendArgument.auto

    @Option(help: "Vulkan device index (`lumen devices` lists them; default: LUMEN_VULKAN_DEVICE, else the first discrete GPU).")
    var device: Int?

    @Option(name: .customLong("vae-tiling"),
            help: "Decode (and encode) the image in overlapping VAE tiles: auto (the default, as the library's: whole, as diffusers does, unless a tensor cannot be bound or the request would exceed the memory budget; then the largest tile that fits, said in one line), off, or a tile size in pixels (a multiple of 32).")
    var vaeTiling = "auto"

    @Option(name: .customLong("preview"), parsing: .upToNextOption,
            help: ArgumentHelp("Write a preview PNG during denoising, decoded by TAESD (a diffusers AutoencoderTiny folder, taesd_decoder.safetensors for SD 1.x/2.x or taesdxl_decoder.safetensors for SDXL), next to -o: OUT.step-0005.png after step 5 (OUT-2.step-0005.png for the second image, OUT.hires.step-0005.png in the hires fix's second pass).",
                               valueName: "taesd PATH"))
    var preview: [String] = []

    @Option(name: .customLong("preview-every"), help: "With --preview: a preview after every N-th step (default 1).")
    var previewEvery: Int?

    @Option(name: .customLong("vae-decoder"), parsing: .upToNextOption,
            help: ArgumentHelp("What decodes the final image: vae (the model's VAE, the default) or taesd PATH (TAESD: many times faster, softer details; PATH may be left out when --preview taesd PATH gives it).",
                               valueName: "vae | taesd [PATH]"))
    var vaeDecoder: [String] = []

    @Option(name: .customLong("vae-encoder"), parsing: .upToNextOption,
            help: ArgumentHelp("What encodes the init image (--init-image, inpainting, --hires-upscaler lanczos): vae (the model's VAE, the default) or taesd PATH (TAESD's encoder: taesd_encoder.safetensors, taesdxl_encoder.safetensors or a diffusers AutoencoderTiny folder; much faster, softer).",
                               valueName: "vae | taesd PATH"))
    var vaeEncoder: [String] = []

    @Option(name: .customLong("memory-budget"),
            help: "The memory the request may take, e.g. 6G or 512M (default: LUMEN_MEMORY_BUDGET, else the available RAM on the CPU or the device's memory on Vulkan). A request that cannot fit even tiled is refused before the first step.")
    var memoryBudget: String?

    @Flag(name: .customLong("dry-run"),
          help: "Print the memory plan (weights, activations and staging per stage, the peak, the budget, what is tiled and why) and exit without generating.")
    var dryRun = false

    @Option(name: .shortAndLong, help: "Output PNG path (with several images: NAME-1.png, NAME-2.png, …).")
    var output: String?

    func validate() throws {
        try backend.validate(device: device)
        if VAETiling(vaeTiling) == nil {
            throw ValidationError("--vae-tiling \(vaeTiling): expected auto, off or a tile size in pixels")
        }
        if initImage == nil && strengthOption != nil {
            throw ValidationError("--strength needs --init-image")
        }
        if hires == nil && (hiresSteps != nil || hiresStrength != 0.7 || hiresUpscaler != "latent") {
            throw ValidationError("--hires-steps, --hires-strength and --hires-upscaler need --hires SCALE")
        }
        if HiresUpscaler(rawValue: hiresUpscaler) == nil {
            throw ValidationError("--hires-upscaler \(hiresUpscaler): expected \(HiresUpscaler.allCases.map(\.rawValue).joined(separator: " or "))")
        }
        if control.isEmpty && (controlStart != 0 || controlEnd != 1) {
            throw ValidationError("--control-start and --control-end need --control")
        }
        for spec in control where Self.parseControl(spec) == nil {
            throw ValidationError("--control \(spec): expected CONTROLNET:PNG or CONTROLNET:PNG:SCALE (a ControlNet folder, a PNG, a number)")
        }
        if let outpaint {
            guard initImage != nil else { throw ValidationError("--outpaint needs --init-image (the image to extend)") }
            guard mask == nil else { throw ValidationError("--outpaint makes its own mask; drop --mask") }
            guard Outpaint(outpaint) != nil else {
                throw ValidationError("--outpaint \(outpaint): expected SIDE=PIXELS[,SIDE=PIXELS...] with SIDE left, right, top or bottom")
            }
        }
        if refiner == nil && refinerStart != nil { throw ValidationError("--refiner-start needs --refiner") }
        if refiner != nil {
            if hires != nil { throw ValidationError("--refiner cannot be combined with --hires") }
            if mask != nil || outpaint != nil { throw ValidationError("--refiner cannot be combined with --mask or --outpaint (the refiner pass would repaint the whole image)") }
            if let refinerStart, !(refinerStart > 0 && refinerStart < 1) {
                throw ValidationError("--refiner-start \(refinerStart): expected a fraction of the noise schedule in (0, 1), e.g. 0.8")
            }
        }
        for (flag, value) in [("--aesthetic-score", aestheticScore), ("--negative-aesthetic-score", negativeAestheticScore)] where !(value.isFinite && abs(value) <= 1000) {
            throw ValidationError("\(flag) \(value): expected a finite number (the refiner was trained on 0–10)")
        }
        if initImage == nil && mask != nil {
            throw ValidationError("--mask needs --init-image (the image whose masked area is repainted)")
        }
        if mask == nil && outpaint == nil && (maskBlur != nil || maskCrop != nil) {
            throw ValidationError("--mask-blur and --mask-crop need --mask (or --outpaint)")
        }
        if let memoryBudget, MemoryBudget.parse(memoryBudget) == nil {
            throw ValidationError("--memory-budget \(memoryBudget): expected bytes or a number with K, M, G or T (e.g. 6G)")
        }
        _ = try previewOptions()
        _ = try imageDecoder()
        if case .taesd = try imageEncoder(), initImage == nil, outpaint == nil, hires == nil {
            throw ValidationError("--vae-encoder taesd: nothing to encode; it needs --init-image (or --hires with --hires-upscaler lanczos)")
        }
        if let output, !output.lowercased().hasSuffix(".png") {
            throw ValidationError("-o \(output): the output must be a .png path")
        }
        try validateNumbers()
        try EnvironmentCheck.validate()
    }

    @Flag(help: "Print a JSON summary (files, seed, size, steps, scheduler, backend, seconds) on stdout.")
    var json = false

    func run() throws {
        let started = Date()
        // A kill mid-write leaves no temporary behind; an output that cannot be written fails
        // now, not after the last step.
        AtomicFile.removeTemporariesOnSignals()
        try AtomicFile.checkWritable(output.map { count == 1 ? $0 : "\($0.dropLast(4))-1.png" } ?? "lumen.png")
        let model: String
        if let given = self.model {
            model = given
        } else {
            guard let builtIn = DefaultModel.locate() else {
                throw ValidationError("no --model given and no built-in model found; pass --model PATH")
            }
            model = builtIn.path
        }
        let pipeline = try Pipeline(modelPath: model, backend: backend.backend(device: device), configFolder: files.config,
                                    vaePath: files.vae, precision: files.precision, loras: loras,
                                    embeddings: try embeddingSpecs.map(Self.embedding), schedulerConfigPath: schedulerConfig)
        pipeline.retainsPrograms = false  // one request: never hold the UNet's and the VAE's activations together
        if let memoryBudget, let bytes = MemoryBudget.parse(memoryBudget) {
            var budget = try pipeline.executor.memoryBudget()
            budget.bytes = bytes
            budget.source = "--memory-budget"
            pipeline.memoryBudget = budget
        }
        // Unset flags take the defaults of the diffusers pipeline this request maps to.
        let defaults = PipelineDefaults(model: pipeline.model, masked: mask != nil || outpaint != nil, fromImage: initImage != nil)
        var request = GenerationRequest(prompt: prompt)
        request.negativePrompt = negativePrompt
        request.promptSyntax = promptSyntax
        request.steps = stepsOption ?? defaults.steps
        request.guidanceScale = guidanceOption ?? defaults.guidanceScale
        request.guidanceRescale = guidanceRescale
        request.eta = eta
        request.imageGuidanceScale = imageGuidance
        request.width = width
        request.height = height
        request.seed = seed ?? UInt64.random(in: 0..<(1 << 32))
        request.scheduler = scheduler
        request.predictionType = predictionType
        request.count = count
        request.clipSkip = clipSkip
        request.vaeTiling = VAETiling(vaeTiling) ?? .auto
        request.previews = try previewOptions()
        request.decoder = try imageDecoder()
        request.encoder = try imageEncoder()
        if let initImage {
            request.initImage = try InitImage(pngPath: initImage)
            request.strength = strengthOption ?? defaults.strength
        }
        if let mask { request.mask = try InitImage(pngPath: mask) }
        if let outpaint, let pad = Outpaint(outpaint), let image = request.initImage {
            (request.initImage, request.mask) = image.outpainted(pad)
            request.strength = strengthOption ?? 1
        }
        request.maskBlur = maskBlur ?? 0
        request.maskCrop = maskCrop
        request.controlNets = try control.compactMap(Self.parseControl).map {
            ControlNetInput(path: $0.path, image: try Self.controlImage($0.image), scale: $0.scale ?? defaults.controlNetScale,
                            start: controlStart, end: controlEnd)
        }
        if let hires {
            request.hires = HiresFix(scale: hires, steps: hiresSteps, strength: hiresStrength,
                                     upscaler: HiresUpscaler(rawValue: hiresUpscaler) ?? .latent)
        }
        request.aestheticScore = aestheticScore
        request.negativeAestheticScore = negativeAestheticScore
        request.microConditioning.originalSize = originalSize
        request.microConditioning.targetSize = targetSize
        request.microConditioning.negativeOriginalSize = negativeOriginalSize
        request.microConditioning.negativeTargetSize = negativeTargetSize
        if let cropTopLeft { request.microConditioning.cropTopLeft = cropTopLeft }
        if let negativeCropTopLeft { request.microConditioning.negativeCropTopLeft = negativeCropTopLeft }
        let refinerPipeline = try refiner.map { path in
            let p = try Pipeline(modelPath: path, backend: backend.backend(device: device), vaePath: files.vae, precision: files.precision)
            p.retainsPrograms = false
            p.memoryBudget = pipeline.memoryBudget
            return p
        }
        if let refinerPipeline {  // the refiner's own notices (a scheduler stand-in, …)
            for notice in refinerPipeline.notices { FileHandle.standardError.write(Data("lumen: refiner: \(notice)\n".utf8)) }
        }
        if let note = pipeline.backendNote { FileHandle.standardError.write(Data("lumen: \(note)\n".utf8)) }
        for notice in pipeline.notices + pipeline.notices(for: request) {
            FileHandle.standardError.write(Data("lumen: \(notice)\n".utf8))
        }
        let (w, h) = pipeline.size(for: request)
        let kind = pipeline.schedulerKind(for: request)
        let base = output ?? "lumen-\(request.seed).png"
        let paths = (0..<count).map { i -> String in
            count == 1 ? base : String(base.dropLast(4)) + "-\(i + 1).png"
        }
        let progress = ProgressBar()
        // On the CPU, the instruction set and threads it runs with (a quota, a cpuset or
        // LUMEN_CPU_ISA can make them fewer than the machine's; `lumen devices` says why).
        let cpu = (pipeline.executor as? CPUExecutor).map { " (\(CPUExecutor.instructionSet), \($0.pool.threads) thread\($0.pool.threads == 1 ? "" : "s"))" } ?? ""
        FileHandle.standardError.write(Data("lumen: \(w)x\(h), \(request.steps) steps, \(kind.displayName), seed \(request.seed), \(pipeline.executor.backendName)\(cpu)\n".utf8))
        let plan = try pipeline.memoryPlan(for: request)
        if dryRun {
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(plan), as: UTF8.self))
            } else {
                print(plan)
            }
            if !plan.fits { throw GenerationError.insufficientMemory(plan: plan.description) }
            return
        }
        for decision in plan.decisions where decision.hasPrefix("the VAE") {
            FileHandle.standardError.write(Data("lumen: \(decision)\n".utf8))
        }
        if let taesd = request.previews?.taesdPath {
            _ = try pipeline.taesd(taesd)  // a TAESD for another latent space fails now, not at the first preview
        }
        if case .taesd(let path) = request.decoder { _ = try pipeline.taesd(path) }
        if case .taesd(let path) = request.encoder { _ = try pipeline.taesdEncoder(path) }
        var parameters = prompt
        if let negativePrompt, !negativePrompt.isEmpty { parameters += "\nNegative prompt: \(negativePrompt)" }
        parameters += "\nSteps: \(request.steps), Sampler: \(kind.displayName), CFG scale: \(request.guidanceScale), Seed: \(request.seed), "
            + "Size: \(w)x\(h), Model: \((model as NSString).lastPathComponent)"
        if initImage != nil { parameters += ", Denoising strength: \(request.strength)" }
        if clipSkip > 0 { parameters += ", Clip skip: \(clipSkip + 1)" }
        if guidanceRescale > 0 { parameters += ", Guidance rescale: \(guidanceRescale)" }
        if eta > 0 { parameters += ", Eta: \(eta)" }
        if pipeline.model.isInstructPix2Pix { parameters += ", Image CFG scale: \(imageGuidance)" }
        if let maskBlur { parameters += ", Mask blur: \(maskBlur)" }
        if let maskCrop { parameters += ", Inpaint area: Only masked, Masked area padding: \(maskCrop)" }
        if let hires = request.hires {
            parameters += ", Denoising strength: \(hires.strength), Hires upscale: \(hires.scale)"
                + (hires.steps.map { ", Hires steps: \($0)" } ?? "")
                + ", Hires upscaler: \(["latent": "Latent", "latent-nearest": "Latent (nearest)", "lanczos": "Lanczos"][hires.upscaler.rawValue]!)"
        }
        if let refiner {
            parameters += ", Refiner: \((refiner as NSString).lastPathComponent), Refiner switch at: \(refinerStart ?? 0.8)"
        }
        var pass = 1, passDone = false
        let onEvent: (GenerationEvent) throws -> Void = { event in
            if passDone { pass += 1; passDone = false }  // the hires fix's second pass
            switch event {
            case .preview(let k, _, let images):
                for (i, image) in images.enumerated() {
                    try image.writePNG(to: Self.previewPath(paths[i], step: k, pass: pass), text: [("parameters", parameters + ", Preview step: \(k)")])
                }
            case .step(let i, let n, _):
                passDone = i == n
                progress.update(i, of: n)
            case .image(let i, let image):
                try image.writePNG(to: paths[i], text: [("parameters", parameters + (count > 1 ? ", Batch pos: \(i)" : ""))])
                progress.finish()
                if !json { print(paths[i]) }
            }
        }
        if let refinerPipeline {
            try pipeline.generate(request, refiner: refinerPipeline, refinerStart: refinerStart ?? 0.8, onEvent: onEvent)
        } else {
            try pipeline.generate(request, onEvent: onEvent)
        }
        if json {
            struct Summary: Encodable {
                let images: [String]
                let prompt: String
                let negative_prompt: String?
                let scheduler, backend, model: String
                let seed: UInt64
                let width, height, steps, count: Int
                let guidance: Float
                let strength: Float?
                let seconds: Double
                /// The memory plan's peak and what the process reached (VmHWM).
                let planned_peak_bytes: Int
                let peak_resident_bytes: Int?
            }
            let summary = Summary(images: paths, prompt: prompt, negative_prompt: negativePrompt, scheduler: kind.rawValue,
                                  backend: pipeline.executor.backendName, model: model, seed: request.seed, width: w, height: h,
                                  steps: request.steps, count: count, guidance: request.guidanceScale, strength: initImage == nil ? nil : request.strength,
                                  seconds: Date().timeIntervalSince(started),
                                  planned_peak_bytes: plan.peak, peak_resident_bytes: ProcessMemory.peakResidentBytes)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(summary), as: UTF8.self))
        }
    }
}

extension GenerateCommand {
    /// `--preview taesd PATH` and `--preview-every N` as the library's options.
    func previewOptions() throws -> PreviewOptions? {
        guard !preview.isEmpty else {
            if let previewEvery { throw ValidationError("--preview-every \(previewEvery) needs --preview taesd PATH") }
            return nil
        }
        guard preview.count == 2, preview[0] == "taesd" else {
            throw ValidationError("--preview \(preview.joined(separator: " ")): expected taesd PATH (a TAESD decoder folder or .safetensors file)")
        }
        let every = previewEvery ?? 1
        guard (1...1000).contains(every) else { throw ValidationError("--preview-every \(every): expected 1…1000 steps") }
        return PreviewOptions(taesdPath: preview[1], every: every)
    }

    /// `--vae-decoder vae | taesd [PATH]` as the library's decoder.
    func imageDecoder() throws -> ImageDecoder {
        switch vaeDecoder.count {
        case 0: return .vae
        case 1 where vaeDecoder[0] == "vae": return .vae
        case 1 where vaeDecoder[0] == "taesd":
            guard preview.count == 2 else {
                throw ValidationError("--vae-decoder taesd needs the TAESD's path: --vae-decoder taesd PATH (or --preview taesd PATH)")
            }
            return .taesd(path: preview[1])
        case 2 where vaeDecoder[0] == "taesd": return .taesd(path: vaeDecoder[1])
        default:
            throw ValidationError("--vae-decoder \(vaeDecoder.joined(separator: " ")): expected vae, or taesd PATH (a TAESD decoder folder or .safetensors file)")
        }
    }

    /// `--vae-encoder vae | taesd PATH` as the library's encoder.
    func imageEncoder() throws -> ImageEncoder {
        switch vaeEncoder.count {
        case 0: return .vae
        case 1 where vaeEncoder[0] == "vae": return .vae
        case 2 where vaeEncoder[0] == "taesd": return .taesd(path: vaeEncoder[1])
        default:
            throw ValidationError("--vae-encoder \(vaeEncoder.joined(separator: " ")): expected vae, or taesd PATH (a TAESD encoder folder or .safetensors file)")
        }
    }

    /// A preview's file next to the image's: OUT.step-0005.png (OUT.hires.step-0005.png in a second pass).
    static func previewPath(_ image: String, step: Int, pass: Int) -> String {
        let stem = image.lowercased().hasSuffix(".png") ? String(image.dropLast(4)) : image
        return stem + (pass > 1 ? ".hires" : "") + String(format: ".step-%04d.png", step)
    }
}

/// Step i/N, it/s and time left on stderr: redrawn in place on a terminal, one line at the end
/// otherwise.
final class ProgressBar {
    private let start = Date()
    private let tty = isatty(2) != 0
    private var last = (0, 0)
    private var done = false

    func update(_ i: Int, of n: Int) {
        last = (i, n)
        guard tty else { return }
        FileHandle.standardError.write(Data("\r\(line())".utf8))
    }

    func finish() {
        guard !done, last.1 > 0 else { return }
        done = true
        FileHandle.standardError.write(Data(((tty ? "\r" : "") + line() + "\n").utf8))
    }

    private func line() -> String {
        let (i, n) = last
        let elapsed = Date().timeIntervalSince(start)
        let rate = elapsed > 0 ? Double(i) / elapsed : 0
        let left = rate > 0 ? Double(n - i) / rate : 0
        let width = 30, filled = n > 0 ? width * i / n : 0
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        return String(format: "[%@] step %d/%d  %.2f it/s  %.0fs left ", bar, i, n, rate, left)
    }
}
