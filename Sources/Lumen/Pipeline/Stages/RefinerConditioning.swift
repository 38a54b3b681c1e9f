import LumenRuntime

/// The SDXL refiner (diffusers' `StableDiffusionXLImg2ImgPipeline` with only `text_encoder_2`):
/// the context is OpenCLIP bigG's penultimate hidden states alone and the pooled embedding its
/// projection; the time ids are original size, crop top-left and the aesthetic score (the
/// request's `aestheticScore` for the conditional rows, `negativeAestheticScore` for the
/// unconditional ones), or the target size for a refiner without `requires_aesthetics_score`.
/// With no negative prompt the empty string is encoded unless `force_zeros_for_empty_prompt`
/// (which the refiner ships false) asks for zeros.
struct RefinerConditioning: ConditioningStage {
    let encoder: (config: CLIPTextConfig, weights: SafetensorsWeights, tokenizer: CLIPTokenizer)
    let parts: SDXLRefinerParts
    /// Textual-inversion rows after the vocabulary (#20, TextualInversion.swift).
    var addedTokenEmbeddings: Tensor? = nil

    var weightBytes: Int { encoder.weights.fileBytes }
    var contextLength: Int { encoder.config.maxPositionEmbeddings }
    var pooledWidth: Int { encoder.config.projectionDim ?? encoder.config.hiddenSize }

    /// [T, 77, D] penultimate states (layer -(clipSkip + 2)) and the pooled text_embeds [T, P].
    func buildEncoders(_ g: Graph, count: Int, clipSkip: Int) throws -> [Value] {
        let ids = try g.input("ids", shape: [count, encoder.config.maxPositionEmbeddings], dtype: .i32)
        let rows = try g.input("eos", shape: [count], dtype: .i32)
        let model = CLIPTextModel(config: encoder.config, addedTokenEmbeddings: addedTokenEmbeddings)
        let out = try model.build(g, ids: ids, weights: encoder.weights)
        guard clipSkip + 2 <= out.hiddenStates.count else {
            throw GenerationError.invalidRequest("clip skip \(clipSkip) leaves no text-encoder layer")
        }
        return [out.hiddenStates[out.hiddenStates.count - 2 - clipSkip], try model.textEmbeds(g, out, eosRows: rows, weights: encoder.weights)]
    }

    func addedUNetInputs(_ g: Graph, batch: Int) throws -> (textEmbeds: Value, timeIds: Value)? {
        (textEmbeds: try g.input("text_embeds", shape: [batch, pooledWidth]), timeIds: try g.input("time_ids", shape: [batch, parts.timeIdCount]))
    }

    func condition(_ request: GenerationRequest, guided: Bool, width: Int, height: Int, cache: ProgramCache) throws -> Conditioning {
        let texts = texts(request, guided: guided)
        var (states, pooled) = request.promptSyntax == .a1111  // A1111 prompts (#20): A1111Prompts.swift
            ? try encodeA1111(texts, clipSkip: request.clipSkip, cache: cache)
            : try encode(texts, clipSkip: request.clipSkip, cache: cache)
        if guided && request.negativePrompt == nil && parts.forceZerosForEmptyPrompt {
            states = try zeroingFirstRow(states)
            pooled = try zeroingFirstRow(pooled)
        }
        let context = try repeatRows(states, times: request.count)
        // diffusers' _get_add_time_ids: the negative rows take negative_aesthetic_score.
        let ids = request.microConditioning.timeIds(
            width: width, height: height, pipeline: request.microConditioningPipeline,
            aestheticScores: parts.requiresAestheticsScore ? (request.aestheticScore, request.negativeAestheticScore) : nil)
        let rows = (guided ? [ids.negative, ids.positive] : [ids.positive]).flatMap { Array(repeating: $0, count: request.count) }
        return Conditioning(context: context, pooled: try repeatRows(pooled, times: request.count),
                            timeIds: try Tensor(shape: [rows.count, parts.timeIdCount], values: Array(rows.joined())))
    }

    /// The context [T, 77, D] and pooled embedding [T, P] of `texts`, as diffusers encodes them.
    private func encode(_ texts: [String], clipSkip: Int, cache: ProgramCache) throws -> (states: Tensor, pooled: Tensor) {
        let length = encoder.config.maxPositionEmbeddings
        let ids = texts.map { encoder.tokenizer.ids($0, length: length) }
        let out = try encoders(count: texts.count, clipSkip: clipSkip, cache: cache).run([
            "ids": try Tensor(shape: [texts.count, length], indices: Array(ids.joined())),
            "eos": try Tensor(shape: [texts.count], indices: CLIPTextModel.eosRows(ids)),
        ])
        return (out[0], out[1])
    }

    func dropResidentWeights() { encoder.weights.files.forEach { $0.dropResidentPages() } }
}
