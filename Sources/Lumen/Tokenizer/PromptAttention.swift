/// How a prompt's text is read.
public enum PromptSyntax: String, Sendable, Hashable, CaseIterable {
    /// As diffusers reads it: the text as it is, truncated to the encoder's 77 tokens.
    case plain
    /// As AUTOMATIC1111 reads it: attention weights `(a)`, `[a]`, `(a:1.3)`, escapes `\(`, `BREAK`,
    /// and prompts of any length in chunks of 75 tokens (see `PromptAttention`).
    case a1111
}

/// A prompt that the A1111 syntax cannot read.
public enum PromptSyntaxError: Error, CustomStringConvertible, Equatable, Sendable {
    /// `(text:WEIGHT)` whose weight is not a number (e.g. `1.2.3` or `.`).
    case invalidWeight(String)
    /// The text encoder's context is not the 77 positions A1111's 75-token chunks fill.
    case unsupportedContext(Int)
    /// An embedding with more vectors than one 75-token chunk holds.
    case embeddingTooLong(token: String, vectors: Int)

    public var description: String {
        switch self {
        case .invalidWeight(let w):
            return "prompt: the attention weight '\(w)' in '(text:\(w))' is not a number (expected e.g. (text:1.3))"
        case .unsupportedContext(let n):
            return "prompt syntax a1111: the text encoder takes \(n) positions; A1111's chunks need 77 (use --prompt-syntax plain)"
        case .embeddingTooLong(let token, let n):
            return "prompt syntax a1111: the embedding '\(token)' has \(n) vectors; a 75-token chunk holds at most 75 (use --prompt-syntax plain)"
        }
    }
}

/// One piece of a parsed prompt: text and the weight its brackets give it. `BREAK` is the piece
/// ("BREAK", -1), as A1111 marks it.
public struct PromptPiece: Equatable, Sendable, CustomStringConvertible {
    public var text: String
    public var weight: Double

    public init(_ text: String, _ weight: Double) {
        self.text = text
        self.weight = weight
    }

    /// Whether this piece starts a new chunk (a `BREAK` whose weight no bracket changed).
    public var isBreak: Bool { text == "BREAK" && weight == -1 }

    public var description: String { "(\(text.debugDescription), \(weight))" }
}

/// AUTOMATIC1111's attention syntax (its `parse_prompt_attention`), read from its documented
/// behaviour: `(a)` multiplies a's weight by 1.1, `[a]` divides it by 1.1, `(a:w)` multiplies it by
/// w; brackets nest (the factors multiply); `\(` `\)` `\[` `\]` `\\` are the characters themselves;
/// a bracket that closes nothing is text; a bracket left open applies to the end of the prompt;
/// the word `BREAK` (with the white space around it) ends a chunk. Neighbouring pieces of equal
/// weight are joined. The weights are doubles multiplied in the order A1111 multiplies them, so
/// that they equal its weights exactly.
public enum PromptAttention {
    static let roundFactor = 1.1
    static let squareFactor = 1 / 1.1

    /// The pieces of `prompt`.
    public static func parse(_ prompt: String) throws -> [PromptPiece] {
        let s = Array(prompt.unicodeScalars)
        var pieces: [PromptPiece] = []
        var round: [Int] = [], square: [Int] = []
        func scale(from start: Int, by factor: Double) {
            for p in start..<pieces.count { pieces[p].weight *= factor }
        }
        func text(_ t: [Unicode.Scalar]) {
            for (i, part) in splitOnBreak(t).enumerated() {
                if i > 0 { pieces.append(PromptPiece("BREAK", -1)) }
                pieces.append(PromptPiece(String(String.UnicodeScalarView(part)), 1))
            }
        }
        var i = 0
        while i < s.count {
            switch s[i] {
            case "\\":
                if i + 1 < s.count, "()[]\\".unicodeScalars.contains(s[i + 1]) {
                    pieces.append(PromptPiece(String(s[i + 1]), 1))
                    i += 2
                } else {
                    pieces.append(PromptPiece("", 1))  // a lone backslash: nothing
                    i += 1
                }
            case "(":
                round.append(pieces.count)
                i += 1
            case "[":
                square.append(pieces.count)
                i += 1
            case ":":
                if let (number, end) = weightClose(s, at: i) {
                    if let start = round.popLast() {
                        guard let w = Double(number) else { throw PromptSyntaxError.invalidWeight(number) }
                        scale(from: start, by: w)
                    } else {
                        text(Array(s[i..<end]))
                    }
                    i = end
                } else {
                    text([":"])
                    i += 1
                }
            case ")":
                if let start = round.popLast() { scale(from: start, by: roundFactor) } else { text([")"]) }
                i += 1
            case "]":
                if let start = square.popLast() { scale(from: start, by: squareFactor) } else { text(["]"]) }
                i += 1
            default:
                var j = i
                while j < s.count, !"\\()[]:".unicodeScalars.contains(s[j]) { j += 1 }
                text(Array(s[i..<j]))
                i = j
            }
        }
        for start in round { scale(from: start, by: roundFactor) }
        for start in square { scale(from: start, by: squareFactor) }
        if pieces.isEmpty { pieces = [PromptPiece("", 1)] }
        var k = 0
        while k + 1 < pieces.count {
            if pieces[k].weight == pieces[k + 1].weight {
                pieces[k].text += pieces[k + 1].text
                pieces.remove(at: k + 1)
            } else {
                k += 1
            }
        }
        return pieces
    }

    /// `:` white space, a number (`[+-]?[.0-9]+`), white space, `)` at `i`: the number and the
    /// index after the `)`.
    private static func weightClose(_ s: [Unicode.Scalar], at i: Int) -> (String, Int)? {
        var j = i + 1
        while j < s.count, isSpace(s[j]) { j += 1 }
        let start = j
        if j < s.count, s[j] == "+" || s[j] == "-" { j += 1 }
        let digits = j
        while j < s.count, s[j] == "." || ("0"..."9").contains(s[j]) { j += 1 }
        guard j > digits else { return nil }
        let number = String(String.UnicodeScalarView(s[start..<j]))
        while j < s.count, isSpace(s[j]) { j += 1 }
        guard j < s.count, s[j] == ")" else { return nil }
        return (number, j + 1)
    }

    /// `t` split at each whole word `BREAK`, the white space on either side of it dropped.
    static func splitOnBreak(_ t: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
        let word: [Unicode.Scalar] = ["B", "R", "E", "A", "K"]
        var parts: [[Unicode.Scalar]] = [], from = 0, k = 0
        while k + word.count <= t.count {
            let end = k + word.count
            guard Array(t[k..<end]) == word, k == 0 || !isWordCharacter(t[k - 1]),
                  end == t.count || !isWordCharacter(t[end]) else { k += 1; continue }
            var cut = k
            while cut > from, isSpace(t[cut - 1]) { cut -= 1 }
            parts.append(Array(t[from..<cut]))
            var next = end
            while next < t.count, isSpace(t[next]) { next += 1 }
            from = next
            k = next
        }
        parts.append(Array(t[from...]))
        return parts
    }

    private static func isSpace(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace }

    private static func isWordCharacter(_ c: Unicode.Scalar) -> Bool {
        c == "_" || c.properties.isAlphabetic || c.properties.numericType != nil
    }
}

/// One chunk of a prompt as A1111 encodes it: the start token, 75 tokens (the text's, then end
/// tokens), the end token; each token's weight.
public struct PromptChunk: Equatable, Sendable {
    public var ids: [Int32]
    public var multipliers: [Float]
}

/// A1111's long prompts (its `tokenize_line`): each parsed piece tokenized alone; the tokens in
/// chunks of 75, a chunk closed when full or at `BREAK`; when a full chunk holds a comma among
/// its last 20 tokens, the tokens after the comma move on to the next chunk (A1111's default
/// `comma_padding_backtrack`). A closed chunk is padded with end tokens and wrapped in the start
/// and end tokens; a tokenizer whose padding token is not the end token (SD 2.x's and SDXL's
/// OpenCLIP) has every token after the first end token replaced by its padding token.
///
/// Textual-inversion embeddings (the tokenizer's added tokens) are found as A1111 finds them, not
/// as diffusers does: the text is tokenized without them, and an embedding stands wherever the
/// tokens of its name do (longest name first), so the match follows CLIP's lower-casing and word
/// boundaries ("LumenStyle" is `lumenstyle`; "lumenstyles" is not). An embedding's vectors never
/// straddle two chunks: where they would not fit in this one, the chunk closes first.
public struct PromptChunker: Sendable {
    /// The tokenizer without the embeddings' added tokens.
    public let tokenizer: CLIPTokenizer
    /// Text tokens per chunk (75: the encoder's 77 positions less the start and end tokens).
    public let chunkLength: Int
    public static let commaBacktrack = 20
    /// Each embedding's name as token ids, and the ids of its vectors; longest name first.
    let embeddings: [(name: [Int], ids: [Int])]

    public init(tokenizer: CLIPTokenizer, positions: Int = 77) throws {
        guard positions == 77 else { throw PromptSyntaxError.unsupportedContext(positions) }
        let base = tokenizer.withoutAddedTokens
        self.tokenizer = base
        self.chunkLength = 75
        if let long = tokenizer.addedTokens.first(where: { $0.ids.count > 75 }) {
            throw PromptSyntaxError.embeddingTooLong(token: long.text, vectors: long.ids.count)
        }
        self.embeddings = tokenizer.addedTokens.map { (name: base.tokens($0.text), ids: $0.ids) }
            .filter { !$0.name.isEmpty }
            .enumerated().sorted { ($0.element.name.count, -$0.offset) > ($1.element.name.count, -$1.offset) }.map(\.element)
    }

    /// The embedding whose name's tokens start at `i` of `tokens`, if any.
    private func embedding(in tokens: [Int], at i: Int) -> (name: [Int], ids: [Int])? {
        embeddings.first { e in i + e.name.count <= tokens.count && tokens[i..<(i + e.name.count)].elementsEqual(e.name) }
    }

    /// The chunks of `prompt` (at least one).
    public func chunks(_ prompt: String) throws -> [PromptChunk] {
        let comma = tokenizer.vocabulary[",</w>"]
        var done: [PromptChunk] = []
        var ids: [Int] = [], weights: [Double] = [], lastComma = -1
        func close() {
            let pad = chunkLength - ids.count
            let all = [tokenizer.startToken] + ids + Array(repeating: tokenizer.endToken, count: max(pad, 0) + 1)
            let m = [1.0] + weights + Array(repeating: 1.0, count: max(pad, 0) + 1)
            done.append(finish(all, m))
            (ids, weights, lastComma) = ([], [], -1)
        }
        for piece in try PromptAttention.parse(prompt) {
            if piece.isBreak { close(); continue }
            let tokens = tokenizer.tokens(piece.text)
            var i = 0
            while i < tokens.count {
                let token = tokens[i]
                if token == comma {
                    lastComma = ids.count
                } else if ids.count == chunkLength, lastComma != -1, ids.count - lastComma <= Self.commaBacktrack {
                    let cut = lastComma + 1
                    let (movedIds, movedWeights) = (Array(ids[cut...]), Array(weights[cut...]))
                    (ids, weights) = (Array(ids[..<cut]), Array(weights[..<cut]))
                    close()
                    (ids, weights) = (movedIds, movedWeights)
                }
                if ids.count == chunkLength { close() }
                if let e = embedding(in: tokens, at: i) {
                    if ids.count + e.ids.count > chunkLength { close() }
                    ids.append(contentsOf: e.ids)
                    weights.append(contentsOf: repeatElement(piece.weight, count: e.ids.count))
                    i += e.name.count
                } else {
                    ids.append(token)
                    weights.append(piece.weight)
                    i += 1
                }
            }
        }
        if !ids.isEmpty || done.isEmpty { close() }
        return done
    }

    /// The chunk of an empty prompt: what a shorter prompt is padded with.
    public var emptyChunk: PromptChunk {
        finish([tokenizer.startToken] + Array(repeating: tokenizer.endToken, count: chunkLength + 1),
               Array(repeating: 1, count: chunkLength + 2))
    }

    private func finish(_ ids: [Int], _ weights: [Double]) -> PromptChunk {
        var ids = ids
        if tokenizer.padToken != tokenizer.endToken, let first = ids.firstIndex(of: tokenizer.endToken) {
            for i in (first + 1)..<ids.count { ids[i] = tokenizer.padToken }
        }
        return PromptChunk(ids: ids.map(Int32.init), multipliers: weights.map(Float.init))
    }
}
