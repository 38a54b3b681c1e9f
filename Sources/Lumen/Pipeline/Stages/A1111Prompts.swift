import LumenRuntime

/// Prompts encoded as AUTOMATIC1111 encodes them (`GenerationRequest.promptSyntax == .a1111`):
/// each text in 77-token chunks (`PromptChunker`), every chunk one row of the encoder's batch,
/// the rows' states weighted (`weigh`) and laid end to end along the sequence. The shorter texts
/// of a request are padded with empty chunks, so the negative prompt and the prompt (and, for
/// SDXL, both encoders) have one chunk count. Checked against tools/make_prompt_fixtures.py.
enum A1111Prompts {
    /// The chunks of `texts` for each chunker, all padded to one count: [chunker][text][chunk].
    static func chunk(_ texts: [String], with chunkers: [PromptChunker]) throws -> [[[PromptChunk]]] {
        let raw = try chunkers.map { c in try texts.map { try c.chunks($0) } }
        let n = raw.flatMap { $0.map(\.count) }.max() ?? 1
        return zip(raw, chunkers).map { perText, c in
            perText.map { $0 + Array(repeating: c.emptyChunk, count: n - $0.count) }
        }
    }

    /// The encoder's input ids [texts · chunks, 77], text by text, chunk by chunk.
    static func ids(_ chunks: [[PromptChunk]]) -> [Int32] { chunks.flatMap { $0.flatMap(\.ids) } }

    /// A1111's "Original" emphasis, on the columns `columns` of `states` [rows, tokens, width]
    /// (row r is chunk r of `chunks` flattened): each token's states times its multiplier, then the
    /// whole chunk rescaled so that its mean is what it was before. A1111 takes the mean over one
    /// call's batch; it encodes the prompt and the negative prompt in calls of their own, so per
    /// chunk of one text is the same. SDXL weighs each encoder's columns on their own, as A1111
    /// weighs each embedder's output.
    static func weigh(_ states: inout [Float], width: Int, columns: Range<Int>, chunks: [[PromptChunk]]) {
        let rows = chunks.flatMap { $0 }
        guard let tokens = rows.first?.multipliers.count else { return }
        for (r, chunk) in rows.enumerated() where chunk.multipliers.contains(where: { $0 != 1 }) {
            let base = r * tokens * width
            func mean() -> Float {
                var sum = 0.0
                for t in 0..<tokens { for c in columns { sum += Double(states[base + t * width + c]) } }
                return Float(sum / Double(tokens * columns.count))
            }
            let before = mean()
            for t in 0..<tokens {
                let m = chunk.multipliers[t]
                for c in columns { states[base + t * width + c] *= m }
            }
            let factor = before / mean()
            for t in 0..<tokens { for c in columns { states[base + t * width + c] *= factor } }
        }
    }

    /// [texts · n, tokens, width] → [texts, n · tokens, width]: each text's chunks end to end.
    static func joinChunks(_ states: [Float], texts: Int, width: Int) throws -> Tensor {
        try Tensor(shape: [texts, states.count / (texts * width), width], values: states)
    }
}

// MARK: - The families' A1111 encodings (called from their `condition` at one marked call site)

extension TextConditioning {
    func chunker() throws -> PromptChunker { try PromptChunker(tokenizer: tokenizer, positions: config.maxPositionEmbeddings) }

    /// Chunks per text of the request's texts (1 with plain prompts).
    func promptChunkCount(_ request: GenerationRequest, guided: Bool) throws -> Int {
        guard request.promptSyntax == .a1111 else { return 1 }
        return try A1111Prompts.chunk(texts(request, guided: guided), with: [chunker()])[0][0].count
    }

    /// The context [texts, chunks · 77, D] of `texts` read as A1111 reads them.
    func encodeA1111(_ texts: [String], clipSkip: Int, cache: ProgramCache) throws -> Tensor {
        let chunks = try A1111Prompts.chunk(texts, with: [chunker()])[0]
        let rows = texts.count * chunks[0].count, length = config.maxPositionEmbeddings
        let encoders = try encoders(count: rows, clipSkip: clipSkip, cache: cache)
        let states = try encoders.run(["ids": try Tensor(shape: [rows, length], indices: A1111Prompts.ids(chunks))])[0]
        var v = states.toFloats()
        let width = states.shape[2]
        A1111Prompts.weigh(&v, width: width, columns: 0..<width, chunks: chunks)
        return try A1111Prompts.joinChunks(v, texts: texts.count, width: width)
    }
}

extension SDXLConditioning {
    func chunkers() throws -> [PromptChunker] {
        [try PromptChunker(tokenizer: encoder1.tokenizer, positions: encoder1.config.maxPositionEmbeddings),
         try PromptChunker(tokenizer: encoder2.tokenizer, positions: encoder2.config.maxPositionEmbeddings)]
    }

    /// Chunks per text of the request's texts (1 with plain prompts).
    func promptChunkCount(_ request: GenerationRequest, guided: Bool) throws -> Int {
        guard request.promptSyntax == .a1111 else { return 1 }
        return try A1111Prompts.chunk(texts(request, guided: guided), with: chunkers())[0][0].count
    }

    /// The context [texts, chunks · 77, D1 + D2] (each encoder's columns weighted on their own)
    /// and the pooled embedding [texts, P] of each text's first chunk, unweighted, as A1111 takes it.
    func encodeA1111(_ texts: [String], clipSkip: Int, cache: ProgramCache) throws -> (states: Tensor, pooled: Tensor) {
        let both = try A1111Prompts.chunk(texts, with: chunkers())
        let n = both[0][0].count, rows = texts.count * n, length = encoder1.config.maxPositionEmbeddings
        let ids2 = A1111Prompts.ids(both[1])
        let rowIds2 = (0..<rows).map { Array(ids2[($0 * length)..<(($0 + 1) * length)]) }
        let encoders = try encoders(count: rows, clipSkip: clipSkip, cache: cache)
        let out = try encoders.run([
            "ids": try Tensor(shape: [rows, length], indices: A1111Prompts.ids(both[0])),
            "ids2": try Tensor(shape: [rows, length], indices: ids2),
            "eos2": try Tensor(shape: [rows], indices: CLIPTextModel.eosRows(rowIds2)),
        ])
        var v = out[0].toFloats()
        let width = out[0].shape[2], d1 = encoder1.config.hiddenSize
        A1111Prompts.weigh(&v, width: width, columns: 0..<d1, chunks: both[0])
        A1111Prompts.weigh(&v, width: width, columns: d1..<width, chunks: both[1])
        let p = out[1].toFloats(), pw = out[1].shape[1]
        let pooled = (0..<texts.count).flatMap { p[($0 * n * pw)..<(($0 * n + 1) * pw)] }
        return (try A1111Prompts.joinChunks(v, texts: texts.count, width: width), try Tensor(shape: [texts.count, pw], values: Array(pooled)))
    }
}

extension RefinerConditioning {
    func chunker() throws -> PromptChunker { try PromptChunker(tokenizer: encoder.tokenizer, positions: encoder.config.maxPositionEmbeddings) }

    /// Chunks per text of the request's texts (1 with plain prompts).
    func promptChunkCount(_ request: GenerationRequest, guided: Bool) throws -> Int {
        guard request.promptSyntax == .a1111 else { return 1 }
        return try A1111Prompts.chunk(texts(request, guided: guided), with: [chunker()])[0][0].count
    }

    /// The context [texts, chunks · 77, D] (weighted) and the pooled embedding [texts, P] of each
    /// text's first chunk, unweighted, as for SDXL's second encoder.
    func encodeA1111(_ texts: [String], clipSkip: Int, cache: ProgramCache) throws -> (states: Tensor, pooled: Tensor) {
        let chunks = try A1111Prompts.chunk(texts, with: [chunker()])[0]
        let n = chunks[0].count, rows = texts.count * n, length = encoder.config.maxPositionEmbeddings
        let ids = A1111Prompts.ids(chunks)
        let rowIds = (0..<rows).map { Array(ids[($0 * length)..<(($0 + 1) * length)]) }
        let out = try encoders(count: rows, clipSkip: clipSkip, cache: cache).run([
            "ids": try Tensor(shape: [rows, length], indices: ids),
            "eos": try Tensor(shape: [rows], indices: CLIPTextModel.eosRows(rowIds)),
        ])
        var v = out[0].toFloats()
        let width = out[0].shape[2]
        A1111Prompts.weigh(&v, width: width, columns: 0..<width, chunks: chunks)
        let p = out[1].toFloats(), pw = out[1].shape[1]
        let pooled = (0..<texts.count).flatMap { p[($0 * n * pw)..<(($0 * n + 1) * pw)] }
        return (try A1111Prompts.joinChunks(v, texts: texts.count, width: width), try Tensor(shape: [texts.count, pw], values: Array(pooled)))
    }
}
