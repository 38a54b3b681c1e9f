import LumenRuntime

/// Stable Diffusion 1.x and 2.x: one CLIP text encoder's last hidden states (or an earlier layer's
/// with clip skip) are the context; the UNet takes nothing else.
struct TextConditioning: ConditioningStage {
    let config: CLIPTextConfig
    let weights: SafetensorsWeights
    let tokenizer: CLIPTokenizer
    /// Textual-inversion rows after the vocabulary (#20, TextualInversion.swift).
    var addedTokenEmbeddings: Tensor? = nil

    var weightBytes: Int { weights.fileBytes }
    var contextLength: Int { config.maxPositionEmbeddings }

    func buildEncoders(_ g: Graph, count: Int, clipSkip: Int) throws -> [Value] {
        let ids = try g.input("ids", shape: [count, config.maxPositionEmbeddings], dtype: .i32)
        return [try CLIPTextModel(config: config, addedTokenEmbeddings: addedTokenEmbeddings).build(g, ids: ids, weights: weights, clipSkip: clipSkip).lastHiddenState]
    }

    func addedUNetInputs(_ g: Graph, batch: Int) throws -> (textEmbeds: Value, timeIds: Value)? { nil }

    func condition(_ request: GenerationRequest, guided: Bool, width: Int, height: Int, cache: ProgramCache) throws -> Conditioning {
        let texts = texts(request, guided: guided)
        if request.promptSyntax == .a1111 {  // A1111 prompts (#20): A1111Prompts.swift
            return Conditioning(context: try repeatRows(try encodeA1111(texts, clipSkip: request.clipSkip, cache: cache), times: request.count),
                                pooled: nil, timeIds: nil)
        }
        let length = config.maxPositionEmbeddings
        let encoders = try encoders(count: texts.count, clipSkip: request.clipSkip, cache: cache)
        let ids = texts.flatMap { tokenizer.ids($0, length: length) }
        let states = try encoders.run(["ids": try Tensor(shape: [texts.count, length], indices: ids)])[0]  // [T, 77, D]
        return Conditioning(context: try repeatRows(states, times: request.count), pooled: nil, timeIds: nil)
    }

    func dropResidentWeights() { weights.files.forEach { $0.dropResidentPages() } }
}
