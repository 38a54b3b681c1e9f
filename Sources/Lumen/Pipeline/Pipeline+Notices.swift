extension Pipeline {
    /// The scheduler a model's config names (or Lumen's stand-in for it), and the notices that
    /// say what was substituted or defaulted. An unknown `_class_name` throws.
    static func defaultScheduler(model: StableDiffusionModel, config: SchedulerConfig) throws -> (SchedulerKind, [String]) {
        let karras = config.useKarrasSigmas ?? false
        if let path = model.schedulerConfigPath {
            let (kind, notice) = try SchedulerKind.resolve(className: config.className, path: path, useKarrasSigmas: karras,
                                                          stochastic: config.algorithmType == .sdeDpmsolverPlusPlus)
            return (kind, notice.map { [$0] } ?? [])
        }
        if model.schedulerDefaults != nil {
            // Defaults the loader chose for this family (a single file's); it notes them itself.
            let (kind, _) = try SchedulerKind.resolve(className: config.className, path: nil, useKarrasSigmas: karras,
                                                          stochastic: config.algorithmType == .sdeDpmsolverPlusPlus)
            return (kind, [])
        }
        let what = model.layout == .singleFile ? "a single-file checkpoint carries no scheduler config (--config FOLDER supplies one)"
            : "\(model.path) has no scheduler/scheduler_config.json"
        return (.pndm, ["\(what): using PNDM (PLMS) with diffusers' PNDMScheduler defaults (linear betas 0.0001…0.02, "
                        + "timestep_spacing leading, steps_offset 0)"])
    }

    /// Notices about one request: what the model will not see of it (a prompt longer than the text
    /// encoder's window is cut, as diffusers does, where a user would otherwise never know).
    public func notices(for request: GenerationRequest) -> [String] {
        let window = model.textEncoderConfig.maxPositionEmbeddings - 2  // start and end tokens
        let count = tokenizer.tokens(request.prompt).count
        var notices = taesdFamilyNotices(request) + predictionMarkNotices(request)
        if count > window {
            notices.append("the prompt is \(count) tokens; only the first \(window) are used (the text encoder reads \(window + 2) with its start and end tokens)")
        }
        return notices
    }

    /// A file marked `v_pred` drawn as epsilon: diffusers' from_single_file does the same (it
    /// reads no mark), so Lumen keeps its image and says how to draw the model as it was trained.
    func predictionMarkNotices(_ request: GenerationRequest) -> [String] {
        guard model.trainingMarkers.contains("v_pred"), request.predictionType == nil,
              (schedulerConfig.predictionType ?? "epsilon") != PredictionType.vPrediction.rawValue else { return [] }
        let zeroSNR = model.trainingMarkers.contains("ztsnr")
        return ["\(model.path) is marked v_pred\(zeroSNR ? " and ztsnr" : ""): a v-prediction model\(zeroSNR ? " trained with zero terminal SNR" : ""). "
                + "diffusers' from_single_file ignores the mark and draws it as epsilon, and so does Lumen by default (a washed-out or broken image); "
                + "pass --prediction-type v_prediction" + (zeroSNR ? " and --guidance-rescale 0.7 (a zero-SNR schedule needs "
                + "rescale_betas_zero_snr in a --config folder's scheduler config)" : "")]
    }
}
