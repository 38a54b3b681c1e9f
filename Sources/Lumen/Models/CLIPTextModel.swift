import LumenRuntime

/// The CLIP text encoder (transformers' `CLIPTextModel`): token and position embeddings, pre-norm
/// transformer layers with causal self-attention, and a final layer norm.
public struct CLIPTextModel {
    public let config: CLIPTextConfig
    /// Rows [n, D] appended to the token-embedding table (textual inversion): ids vocabSize… pick them.
    public let addedTokenEmbeddings: Tensor?

    public init(config: CLIPTextConfig, addedTokenEmbeddings: Tensor? = nil) {
        self.config = config
        self.addedTokenEmbeddings = addedTokenEmbeddings
    }

    /// The encoder's outputs for token ids [B, L].
    public struct Outputs {
        /// The final layer norm applied to the last layer: what SD 1.x conditions on.
        public let lastHiddenState: Value
        /// The output of each layer before the final norm (index 0 is the embeddings), as
        /// transformers' `hidden_states`; `hiddenStates[count - 2]` is the penultimate layer.
        public let hiddenStates: [Value]
    }

    /// Emits the encoder for `ids` (i32 [B, L], L ≤ max positions). With `clipSkip` k > 0 the
    /// layers after layer `count - k` are not built (diffusers' `clip_skip`), and the final
    /// layer norm is applied to that layer's output instead.
    public func build(_ graph: Graph, ids: Value, weights: WeightStore, clipSkip: Int = 0) throws -> Outputs {
        let c = config
        guard ids.shape.rank == 2, ids.shape[1] <= c.maxPositionEmbeddings else {
            throw LumenError.shapeMismatch(op: "CLIPTextModel", detail: "token ids \(ids.shape); expected [B, ≤\(c.maxPositionEmbeddings)]")
        }
        guard clipSkip >= 0, clipSkip < c.numHiddenLayers else {
            throw LumenError.invalidArgument(op: "CLIPTextModel", detail: "clip_skip \(clipSkip) outside 0..<\(c.numHiddenLayers)")
        }
        let length = ids.shape[1]
        let m = Module(graph: graph, weights: weights, prefix: "text_model")
        let emb = m.child("embeddings")
        let table: Value
        if let added = addedTokenEmbeddings {
            // The table and the embeddings' rows as one f32 constant (the graph's concat is f32).
            guard added.shape.rank == 2, added.shape[1] == c.hiddenSize else {
                throw LumenError.shapeMismatch(op: "CLIPTextModel", detail: "added token embeddings \(added.shape); expected [n, \(c.hiddenSize)]")
            }
            let name = "text_model.embeddings.token_embedding.weight"
            let base = try weights.tensor(name, shape: [c.vocabSize, c.hiddenSize]).toFloats()
            table = try graph.constant(try Tensor(shape: [c.vocabSize + added.shape[0], c.hiddenSize], values: base + added.toFloats()),
                                       name: name + "+textual-inversion")
        } else {
            table = try emb.child("token_embedding").param("weight", [c.vocabSize, c.hiddenSize])
        }
        let tokens = try graph.embedding(ids, table: table)
        var positions = try emb.child("position_embedding").param("weight", [c.maxPositionEmbeddings, c.hiddenSize])
        if length < c.maxPositionEmbeddings {
            positions = try graph.slice(positions, axis: 0, start: 0, length: length)
        }
        var h = try graph.add(tokens, positions)
        var states = [h]
        for i in 0..<(c.numHiddenLayers - clipSkip) {
            h = try encoderLayer(h, m.child("encoder.layers.\(i)"))
            states.append(h)
        }
        let last = try m.layerNorm(h, "final_layer_norm", dim: c.hiddenSize, eps: c.layerNormEps)
        return Outputs(lastHiddenState: last, hiddenStates: states)
    }

    /// CLIPTextModelWithProjection's `text_embeds` [B, P]: the final-normed state at each
    /// sequence's end token through `text_projection` (no bias). `eosRows` (i32 [B]) are those
    /// states' rows in the [B·L, D] flattening: `eosRows(ids)`.
    public func textEmbeds(_ graph: Graph, _ outputs: Outputs, eosRows: Value, weights: WeightStore) throws -> Value {
        let c = config
        guard let projection = c.projectionDim else {
            throw LumenError.invalidArgument(op: "CLIPTextModel", detail: "no projection_dim: not a CLIPTextModelWithProjection")
        }
        let last = outputs.lastHiddenState
        let b = last.shape[0], l = last.shape[1]
        guard eosRows.shape == [b], eosRows.dtype == .i32 else {
            throw LumenError.shapeMismatch(op: "CLIPTextModel", detail: "eos rows \(eosRows.shape); expected i32 [\(b)]")
        }
        let pooled = try graph.embedding(eosRows, table: try graph.reshape(last, [b * l, c.hiddenSize]))
        return try Module(graph: graph, weights: weights).linear(pooled, "text_projection", in: c.hiddenSize, out: projection, bias: false)
    }

    /// For each sequence of `ids` (all of one length L), the row b·L + p of its end token p: the
    /// first position of its largest id, as transformers finds `<|endoftext|>` in CLIP's vocabulary.
    public static func eosRows(_ ids: [[Int32]]) -> [Int32] {
        ids.enumerated().map { b, row in
            var p = 0
            for i in row.indices where row[i] > row[p] { p = i }
            return Int32(b * row.count + p)
        }
    }

    private func encoderLayer(_ x: Value, _ m: Module) throws -> Value {
        let c = config, d = c.hiddenSize
        var h = try m.layerNorm(x, "layer_norm1", dim: d, eps: c.layerNormEps)
        let a = m.child("self_attn")
        let q = try a.linear(h, "q_proj", in: d, out: d), k = try a.linear(h, "k_proj", in: d, out: d)
        let v = try a.linear(h, "v_proj", in: d, out: d)
        h = try m.graph.attention(query: q, key: k, value: v, heads: c.numAttentionHeads, causal: true)
        let x1 = try m.graph.add(x, try a.linear(h, "out_proj", in: d, out: d))
        h = try m.layerNorm(x1, "layer_norm2", dim: d, eps: c.layerNormEps)
        h = try m.linear(h, "mlp.fc1", in: d, out: c.intermediateSize)
        switch c.hiddenAct {
        case .quickGelu: h = try m.graph.quickGelu(h)
        case .gelu: h = try m.graph.gelu(h)
        case .geluNew, .geluPytorchTanh: h = try m.graph.gelu(h, approximateTanh: true)
        }
        h = try m.linear(h, "mlp.fc2", in: c.intermediateSize, out: d)
        return try m.graph.add(x1, h)
    }
}
