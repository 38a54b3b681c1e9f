extension SchedulerKind {
    /// The EDM formulation's schedulers.
    static let edmKinds: Set<SchedulerKind> = [.edmEuler, .edmDpmpp2m]
}

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
        var notices = taesdFamilyNotices(request) + predictionMarkNotices(request) + formulationNotices(request)
        if count > window {
            notices.append("the prompt is \(count) tokens; only the first \(window) are used (the text encoder reads \(window + 2) with its start and end tokens)")
        }
        return notices
    }

    /// A scheduler of the other formulation than the model's: the EDM schedulers feed the UNet
    /// ¼ ln σ and c_in-scaled latents on a sigma range of their own, the others a training
    /// timestep on the config's beta schedule. diffusers' `from_config` runs either on either (a
    /// picture of noise or mush), and so does Lumen, with this notice.
    func formulationNotices(_ request: GenerationRequest) -> [String] {
        guard let chosen = request.scheduler else { return [] }
        let edm = SchedulerKind.edmKinds
        guard edm.contains(chosen) != edm.contains(defaultScheduler) else { return [] }
        return edm.contains(defaultScheduler)
            ? ["--scheduler \(chosen.rawValue) on an EDM model (its scheduler is \(defaultScheduler.rawValue)): the UNet was trained on "
               + "EDM's continuous timesteps, not a beta schedule's, and will not draw what it was trained for; use edm-dpmpp-2m or edm-euler"]
            : ["--scheduler \(chosen.rawValue) is for EDM-trained models (Playground v2.5, CosXL); this model's scheduler is "
               + "\(defaultScheduler.rawValue), on a beta schedule, and will not draw what it was trained for with it"]
    }

    /// A file marked `v_pred` drawn as epsilon: diffusers' from_single_file does the same (it
    /// reads no mark), so Lumen keeps its image and says how to draw the model as it was trained.
    func predictionMarkNotices(_ request: GenerationRequest) -> [String] {
        if model.trainingMarkers.contains("edm_vpred.sigma_max"), !SchedulerKind.edmKinds.contains(schedulerKind(for: request)) {
            let file = model.unetWeights.files.first
            func value(_ name: String) -> String { ((try? file?.tensor(name).converted(to: .f32).toFloats().first) ?? nil).map { "\($0)" } ?? "?" }
            return ["\(model.path) holds edm_vpred.sigma_max/sigma_min: an EDM v-prediction model (CosXL's kind). diffusers' from_single_file "
                    + "reads it as plain SDXL, and so does Lumen by default (a broken image); draw it as trained with --scheduler-config "
                    + "FILE holding {\"_class_name\": \"EDMEulerScheduler\", \"prediction_type\": \"v_prediction\", \"sigma_data\": 1.0, "
                    + "\"sigma_max\": \(value("edm_vpred.sigma_max")), \"sigma_min\": \(value("edm_vpred.sigma_min")), \"sigma_schedule\": \"exponential\"}"]
        }
        guard model.trainingMarkers.contains("v_pred"), request.predictionType == nil,
              (schedulerConfig.predictionType ?? "epsilon") != PredictionType.vPrediction.rawValue else { return [] }
        let zeroSNR = model.trainingMarkers.contains("ztsnr")
        return ["\(model.path) is marked v_pred\(zeroSNR ? " and ztsnr" : ""): a v-prediction model\(zeroSNR ? " trained with zero terminal SNR" : ""). "
                + "diffusers' from_single_file ignores the mark and draws it as epsilon, and so does Lumen by default (a washed-out or broken image); "
                + (zeroSNR ? "pass --scheduler-config FILE holding {\"_class_name\": \"EulerDiscreteScheduler\", \"prediction_type\": "
                   + "\"v_prediction\", \"rescale_betas_zero_snr\": true, \"timestep_spacing\": \"trailing\", \"beta_schedule\": "
                   + "\"scaled_linear\", \"beta_start\": 0.00085, \"beta_end\": 0.012} and --guidance-rescale 0.7"
                   : "pass --prediction-type v_prediction")]
    }
}
