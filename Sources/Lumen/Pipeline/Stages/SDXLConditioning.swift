import LumenRuntime

/// Stable Diffusion XL: the penultimate hidden states of both CLIP encoders side by side are the
/// context; the second encoder's pooled projection and the size conditioning (original size, crop
/// top-left, target size) are the UNet's added inputs. With no negative prompt (nil, not "") and
/// `force_zeros_for_empty_prompt`, the unconditional inputs are zeros, as diffusers makes them.
struct SDXLConditioning: ConditioningStage {
    let encoder1: (config: CLIPTextConfig, weights: SafetensorsWeights, tokenizer: CLIPTokenizer)
    let encoder2: (config: CLIPTextConfig, weights: SafetensorsWeights, tokenizer: CLIPTokenizer)
    let forceZerosForEmptyPrompt: Bool
    /// Textual-inversion rows after each encoder's vocabulary (#20, TextualInversion.swift).
    var addedTokenEmbeddings: (Tensor?, Tensor?) = (nil, nil)

    var weightBytes: Int { encoder1.weights.fileBytes + encoder2.weights.fileBytes }
    var contextLength: Int { encoder1.config.maxPositionEmbeddings }
    /// The width of the pooled embedding the UNet's `add_embedding` reads.
    var pooledWidth: Int { encoder2.config.projectionDim ?? encoder2.config.hiddenSize }

    /// [T, 77, D1 + D2] penultimate states of both encoders (layer -(clipSkip + 2)) and the second
    /// encoder's text_embeds [T, P].
    func buildEncoders(_ g: Graph, count: Int, clipSkip: Int) throws -> [Value] {
        let a = try g.input("ids", shape: [count, encoder1.config.maxPositionEmbeddings], dtype: .i32)
        let b = try g.input("ids2", shape: [count, encoder2.config.maxPositionEmbeddings], dtype: .i32)
        let rows = try g.input("eos2", shape: [count], dtype: .i32)
        let out1 = try CLIPTextModel(config: encoder1.config, addedTokenEmbeddings: addedTokenEmbeddings.0).build(g, ids: a, weights: encoder1.weights)
        let model2 = CLIPTextModel(config: encoder2.config, addedTokenEmbeddings: addedTokenEmbeddings.1)
        let out2 = try model2.build(g, ids: b, weights: encoder2.weights)
        guard clipSkip + 2 <= min(out1.hiddenStates.count, out2.hiddenStates.count) else {
            throw GenerationError.invalidRequest("clip skip \(clipSkip) leaves no text-encoder layer")
        }
        let h1 = out1.hiddenStates[out1.hiddenStates.count - 2 - clipSkip], h2 = out2.hiddenStates[out2.hiddenStates.count - 2 - clipSkip]
        return [try g.concat([h1, h2], axis: 2), try model2.textEmbeds(g, out2, eosRows: rows, weights: encoder2.weights)]
    }

    func addedUNetInputs(_ g: Graph, batch: Int) throws -> (textEmbeds: Value, timeIds: Value)? {
        (textEmbeds: try g.input("text_embeds", shape: [batch, pooledWidth]), timeIds: try g.input("time_ids", shape: [batch, 6]))
    }

    func condition(_ request: GenerationRequest, guided: Bool, width: Int, height: Int, cache: ProgramCache) throws -> Conditioning {
        let texts = texts(request, guided: guided)
        var (states, pooled) = request.promptSyntax == .a1111  // A1111 prompts (#20): A1111Prompts.swift
            ? try encodeA1111(texts, clipSkip: request.clipSkip, cache: cache)
            : try encode(texts, clipSkip: request.clipSkip, cache: cache)
        if guided && request.negativePrompt == nil && forceZerosForEmptyPrompt {
            states = try zeroingFirstRow(states)
            pooled = try zeroingFirstRow(pooled)
        }
        let context = try repeatRows(states, times: request.count)
        // diffusers' _get_add_time_ids, the unconditional rows first.
        let ids = request.microConditioning.timeIds(width: width, height: height, pipeline: request.microConditioningPipeline)
        let rows = (guided ? [ids.negative, ids.positive] : [ids.positive]).flatMap { Array(repeating: $0, count: request.count) }
        guard rows.count == context.shape[0] else {
            throw GenerationError.invalidRequest("SDXL conditioning: \(rows.count) time-id rows for \(context.shape[0]) prompt rows")
        }
        return Conditioning(context: context, pooled: try repeatRows(pooled, times: request.count),
                            timeIds: try Tensor(shape: [rows.count, 6], values: Array(rows.joined())))
    }

    /// The context [T, 77, D1 + D2] and pooled embedding [T, P] of `texts`, as diffusers encodes them.
    private func encode(_ texts: [String], clipSkip: Int, cache: ProgramCache) throws -> (states: Tensor, pooled: Tensor) {
        let l1 = encoder1.config.maxPositionEmbeddings, l2 = encoder2.config.maxPositionEmbeddings
        let ids1 = texts.map { encoder1.tokenizer.ids($0, length: l1) }, ids2 = texts.map { encoder2.tokenizer.ids($0, length: l2) }
        let encoders = try encoders(count: texts.count, clipSkip: clipSkip, cache: cache)
        let out = try encoders.run([
            "ids": try Tensor(shape: [texts.count, l1], indices: Array(ids1.joined())),
            "ids2": try Tensor(shape: [texts.count, l2], indices: Array(ids2.joined())),
            "eos2": try Tensor(shape: [texts.count], indices: CLIPTextModel.eosRows(ids2)),
        ])
        return (out[0], out[1])
    }

    func dropResidentWeights() {
        (encoder1.weights.files + encoder2.weights.files).forEach { $0.dropResidentPages() }
    }
}
