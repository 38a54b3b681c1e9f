import Foundation
import LumenRuntime

/// A textual-inversion embedding: a prompt token that stands for learned vectors in the text
/// encoder's token-embedding space. Read from the layouts people share, as A1111 and diffusers'
/// `load_textual_inversion` read them:
/// - one tensor [D] or [n, D]: A1111's `emb_params` or `string_to_param.*`, or diffusers'
///   `learned_embeds.safetensors` whose one key is the token;
/// - SDXL: `clip_l` [n, D1] and `clip_g` [n, D2], the vectors of the first and second encoder.
///
/// The token is `token` when given, else the key of a diffusers file, else the file name without
/// `.safetensors` (A1111's rule). In a prompt, the token stands for its n vectors (diffusers adds
/// the tokens `t`, `t_1`, …, `t_{n-1}`; Lumen maps the one token to n new ids, which is the same).
public struct TextualInversion: Sendable {
    public let path: String
    public let token: String
    /// The vectors for each text encoder: [n · D] row by row (one entry, or two for SDXL).
    public let vectors: [[Float]]
    /// The width D of each entry of `vectors`.
    public let widths: [Int]
    /// Vectors per encoder (n).
    public var count: Int { vectors[0].count / widths[0] }

    /// Reads the embedding at `path` (a `.safetensors` file).
    public init(path: String, token: String? = nil) throws {
        let file = try SafetensorsFile(path: path)
        let names = file.names
        func rows(_ name: String) throws -> (values: [Float], width: Int) {
            let t = try file.tensor(name)
            guard t.shape.rank == 1 || t.shape.rank == 2, t.count > 0 else {
                throw ModelFileError.malformed(path: path, detail: "embedding tensor '\(name)' has shape \(t.shape); expected [D] or [n, D]")
            }
            return (t.toFloats(), t.shape[t.shape.rank - 1])
        }
        var stem = (path as NSString).lastPathComponent
        if stem.lowercased().hasSuffix(".safetensors") { stem = String(stem.dropLast(".safetensors".count)) }
        if Set(names) == ["clip_l", "clip_g"] {
            let (l, g) = (try rows("clip_l"), try rows("clip_g"))
            guard l.values.count / l.width == g.values.count / g.width else {
                throw ModelFileError.malformed(path: path, detail: "clip_l has \(l.values.count / l.width) vectors and clip_g \(g.values.count / g.width); expected the same count")
            }
            self.init(path: path, token: token ?? stem, vectors: [l.values, g.values], widths: [l.width, g.width])
        } else if names.count == 1 {
            let name = names[0]
            let r = try rows(name)
            let isA1111 = name == "emb_params" || name.hasPrefix("string_to_param")
            self.init(path: path, token: token ?? (isA1111 ? stem : name), vectors: [r.values], widths: [r.width])
        } else {
            throw ModelFileError.unsupported(path: path, detail: "not a textual-inversion embedding: tensors \(names.prefix(6)); expected one tensor (emb_params, string_to_param.*, or diffusers' <token>) or clip_l + clip_g (SDXL)")
        }
        guard !self.token.isEmpty, !self.token.contains(where: \.isWhitespace) else {
            throw ModelFileError.invalidValue(path: path, field: "token", value: self.token, expected: "one word without spaces (give it as --embedding PATH:TOKEN)")
        }
    }

    init(path: String, token: String, vectors: [[Float]], widths: [Int]) {
        self.path = path
        self.token = token
        self.vectors = vectors
        self.widths = widths
    }
}

/// The embeddings a model's text encoders use: the tokens each tokenizer learns and the rows
/// each encoder's token-embedding table gains (after its vocabulary, in load order).
struct TextualInversionTable {
    let embeddings: [TextualInversion]

    /// For encoder `e` with a vocabulary of `vocabularySize` ids: each token and its new ids.
    func addedTokens(encoder e: Int, vocabularySize: Int) -> [(String, [Int])] {
        var next = vocabularySize
        return embeddings.map { emb in
            defer { next += emb.count }
            return (emb.token, Array(next..<(next + emb.count)))
        }
    }

    /// The rows [Σn, D] encoder `e`'s table gains, or nil with no embeddings.
    func rows(encoder e: Int, width: Int) throws -> Tensor? {
        guard !embeddings.isEmpty else { return nil }
        let values = embeddings.flatMap { $0.vectors[e] }
        return try Tensor(shape: [values.count / width, width], values: values)
    }
}

extension StableDiffusionModel {
    /// Checks `embeddings` against the model's encoders (SDXL needs clip_l + clip_g pairs; each
    /// width must be the encoder's; tokens are unique) and keeps them for the conditioning stage.
    public func add(embeddings: [TextualInversion]) throws {
        let widths = [textEncoderConfig.hiddenSize] + (xl.map { [$0.textEncoder2Config.hiddenSize] } ?? [])
        var seen = Set(self.embeddings.map(\.token))
        for e in embeddings {
            guard e.widths.count == widths.count else {
                throw ModelFileError.unsupported(path: e.path, detail: widths.count == 2
                    ? "an SDXL model needs an embedding with clip_l and clip_g vectors; this file has one tensor (made for SD 1.x/2.x)"
                    : "this embedding has clip_l and clip_g vectors (made for SDXL); the model has one text encoder")
            }
            for (k, (got, want)) in zip(e.widths, widths).enumerated() where got != want {
                throw ModelFileError.unsupported(path: e.path, detail: "\(k == 0 ? (widths.count == 2 ? "clip_l" : "the embedding") : "clip_g") vectors are \(got) wide; this model's text encoder\(widths.count == 2 ? (k == 0 ? "" : " 2") : "") takes \(want) (an embedding made for another model family)")
            }
            guard seen.insert(e.token).inserted else {
                throw ModelFileError.invalidValue(path: e.path, field: "token", value: e.token, expected: "a token no other --embedding uses")
            }
        }
        self.embeddings += embeddings
    }
}
