import LumenRuntime

/// What the UNet is conditioned on for one request, whatever the model family: the text context
/// and, for SDXL, the pooled text embedding and the size conditioning. Rows are [unconditional,
/// conditional] when guiding, each repeated for the images of the request. (ControlNet hints and
/// inpainting masks are per-step inputs and come in through `DenoisingHook`s, not here.)
struct Conditioning {
    /// [rows · count, tokens, cross-attention width].
    let context: Tensor
    /// SDXL's `added_cond_kwargs`: the second encoder's pooled projection [rows · count, P] and the
    /// time ids [rows · count, k] (original size, crop top-left, then target size, or for the
    /// refiner the aesthetic score).
    let pooled: Tensor?
    let timeIds: Tensor?

    /// The UNet inputs beyond the sample, timestep and context.
    var addedInputs: [String: Tensor] {
        var inputs: [String: Tensor] = [:]
        if let pooled { inputs["text_embeds"] = pooled }
        if let timeIds { inputs["time_ids"] = timeIds }
        return inputs
    }
}

/// One model family's conditioning stage: it owns the text encoder(s) and tokenizer(s) of the
/// family, builds their graph (for the program cache and the memory plan), says which extra inputs
/// the family's UNet takes, and turns a request into a `Conditioning`. A new family (or a
/// variant such as the SDXL refiner) is one new type conforming to this, chosen in
/// `makeConditioningStage`.
protocol ConditioningStage {
    /// Bytes of the encoders' weights files.
    var weightBytes: Int { get }
    /// Tokens in the context the UNet attends to.
    var contextLength: Int { get }
    /// The encoders' graph for `count` texts; its outputs are what `condition` runs.
    func buildEncoders(_ g: Graph, count: Int, clipSkip: Int) throws -> [Value]
    /// The UNet inputs beyond sample, timestep and context, for a batch of `batch` rows (nil: none).
    func addedUNetInputs(_ g: Graph, batch: Int) throws -> (textEmbeds: Value, timeIds: Value)?
    /// The request's conditioning, its encoders compiled through `cache`.
    func condition(_ request: GenerationRequest, guided: Bool, width: Int, height: Int, cache: ProgramCache) throws -> Conditioning
    /// The encoders' memory-mapped weights leave the resident set (one-shot use, once encoded).
    func dropResidentWeights()
    /// The 77-token chunks each text of the request is encoded in: 1 for plain prompts, more for
    /// long A1111 prompts (#20, A1111Prompts.swift).
    func promptChunkCount(_ request: GenerationRequest, guided: Bool) throws -> Int
}

extension ConditioningStage {
    /// The texts one request encodes: [negative, prompt] in one batch when guiding.
    func texts(_ request: GenerationRequest, guided: Bool) -> [String] {
        guided ? [request.negativePrompt ?? "", request.prompt] : [request.prompt]
    }

    /// Tokens in the context of this request (`contextLength` per chunk).
    func contextLength(for request: GenerationRequest, guided: Bool) throws -> Int {
        contextLength * (try promptChunkCount(request, guided: guided))
    }

    /// The compiled encoders for `count` texts.
    func encoders(count: Int, clipSkip: Int, cache: ProgramCache) throws -> CompiledNetwork {
        try cache.network(.text(count: count, clipSkip: clipSkip)) { try buildEncoders($0, count: count, clipSkip: clipSkip) }
    }
}

/// The conditioning stage of `model`'s family.
func makeConditioningStage(model: StableDiffusionModel, tokenizer: CLIPTokenizer, tokenizer2: CLIPTokenizer?) throws -> any ConditioningStage {
    // Textual inversion (#20): each tokenizer learns the embeddings' tokens, each encoder's table their rows.
    let ti = TextualInversionTable(embeddings: model.embeddings)
    let tokenizer = tokenizer.adding(ti.addedTokens(encoder: 0, vocabularySize: model.textEncoderConfig.vocabSize))
    if let refiner = model.refiner {  // the SDXL refiner: bigG alone is the model's text encoder
        return RefinerConditioning(encoder: (model.textEncoderConfig, model.textEncoderWeights, tokenizer), parts: refiner,
                                   addedTokenEmbeddings: try ti.rows(encoder: 0, width: model.textEncoderConfig.hiddenSize))
    }
    if let xl = model.xl {
        guard let tokenizer2 else {
            throw GenerationError.tokenizerUnavailable("\(model.path): the second text encoder has no tokenizer (tokenizer_2)")
        }
        return SDXLConditioning(encoder1: (model.textEncoderConfig, model.textEncoderWeights, tokenizer),
                                encoder2: (xl.textEncoder2Config, xl.textEncoder2Weights,
                                           tokenizer2.adding(ti.addedTokens(encoder: 1, vocabularySize: xl.textEncoder2Config.vocabSize))),
                                forceZerosForEmptyPrompt: xl.forceZerosForEmptyPrompt,
                                addedTokenEmbeddings: (try ti.rows(encoder: 0, width: model.textEncoderConfig.hiddenSize),
                                                       try ti.rows(encoder: 1, width: xl.textEncoder2Config.hiddenSize)))
    }
    return TextConditioning(config: model.textEncoderConfig, weights: model.textEncoderWeights, tokenizer: tokenizer,
                            addedTokenEmbeddings: try ti.rows(encoder: 0, width: model.textEncoderConfig.hiddenSize))
}

// MARK: - Row helpers shared by the families

/// `t` with its first row (along dimension 0) set to zero.
func zeroingFirstRow(_ t: Tensor) throws -> Tensor {
    var v = t.toFloats()
    let per = t.count / t.shape[0]
    for i in 0..<per { v[i] = 0 }
    return try Tensor(shape: t.shape, values: v)
}

/// [T, …] → [T·n, …], each row repeated n times in place (diffusers' repeat + view).
func repeatRows(_ e: Tensor, times n: Int) throws -> Tensor {
    if n == 1 { return e }
    let rows = e.toFloats(), per = e.count / e.shape[0]
    var out: [Float] = []
    out.reserveCapacity(rows.count * n)
    for t in 0..<e.shape[0] {
        for _ in 0..<n { out += rows[(t * per)..<((t + 1) * per)] }
    }
    return try Tensor(shape: Shape([e.shape[0] * n] + e.shape.dims.dropFirst()), values: out)
}
