/// What the UNet is conditioned on for one request, whatever the model family: the text context
/// and, for SDXL, the pooled text embedding and the size conditioning. Rows are [unconditional,
/// conditional] when guiding, each repeated for the images of the request.
struct Conditioning {
    /// [rows · count, tokens, cross-attention width].
    let context: Tensor
    /// SDXL's `added_cond_kwargs`: the second encoder's pooled projection [rows · count, P] and the
    /// time ids [rows · count, 6] (original size, crop top-left, target size).
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

extension Pipeline {
    /// The request's conditioning, as its family computes it: SD 1.x/2.x one encoder's states;
    /// SDXL both encoders' penultimate states side by side, the second's pooled projection and the
    /// size conditioning, with zero unconditional inputs for no negative prompt (nil, not "") under
    /// `force_zeros_for_empty_prompt`.
    func condition(_ request: GenerationRequest, guided: Bool, width: Int, height: Int) throws -> Conditioning {
        let n = request.count
        // [negative, prompt] in one batch when guiding.
        let texts = guided ? [request.negativePrompt ?? "", request.prompt] : [request.prompt]
        guard model.textEncoder2 != nil else {
            let embeddings = try encodeText(texts, clipSkip: request.clipSkip)  // [T, 77, D]
            return Conditioning(context: try repeatEmbeddings(embeddings, times: n), pooled: nil, timeIds: nil)
        }
        var (states, pooled) = try encodeTextXL(texts, clipSkip: request.clipSkip)
        if guided && request.negativePrompt == nil && model.forceZerosForEmptyPrompt {
            states = try zeroingFirstRow(states)
            pooled = try zeroingFirstRow(pooled)
        }
        let context = try repeatEmbeddings(states, times: n)
        let rows = context.shape[0]
        let ids: [Float] = [Float(height), Float(width), 0, 0, Float(height), Float(width)]
        return Conditioning(context: context, pooled: try repeatEmbeddings(pooled, times: n),
                            timeIds: try Tensor(shape: [rows, 6], values: Array([[Float]](repeating: ids, count: rows).joined())))
    }
}
