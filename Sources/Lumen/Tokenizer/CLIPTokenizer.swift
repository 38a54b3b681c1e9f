import Foundation
import LumenRuntime

/// A failure to load a tokenizer, naming the file at fault.
public enum TokenizerError: Error, CustomStringConvertible, Equatable, Sendable {
    /// Neither `vocab.json` + `merges.txt` nor `tokenizer.json` is in the folder.
    case missingFiles(folder: String)
    /// A file exists but could not be read.
    case unreadable(path: String, reason: String)
    /// A file was read but does not hold what a CLIP tokenizer needs.
    case malformed(path: String, reason: String)

    public var description: String {
        switch self {
        case .missingFiles(let folder):
            return "no tokenizer in \(folder): expected vocab.json and merges.txt, or tokenizer.json"
        case .unreadable(let path, let reason):
            return "cannot read tokenizer file \(path): \(reason)"
        case .malformed(let path, let reason):
            return "malformed tokenizer file \(path): \(reason)"
        }
    }
}

/// CLIP's byte-level BPE tokenizer, giving the ids transformers' `CLIPTokenizer` gives (transformers 5,
/// whose CLIP tokenizer is the `tokenizers`-library one):
///
/// 1. the special tokens `<|startoftext|>` and `<|endoftext|>` are cut out of the raw text first;
/// 2. each remaining piece is normalised: Unicode NFC, every run of white space to one space, lower case;
/// 3. it is split by CLIP's pattern
///    `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`,
///    keeping the matches (white space disappears), then by GPT-2's byte-level pattern;
/// 4. each word's UTF-8 bytes become GPT-2's printable byte characters, its last symbol gets `</w>`, and
///    the merges are applied lowest rank first;
/// 5. the ids are wrapped in the start and end tokens.
public struct CLIPTokenizer: Sendable {
    /// Token string to id.
    public let vocabulary: [String: Int]
    /// `<|startoftext|>`'s id (49406 in CLIP's vocabulary).
    public let startToken: Int
    /// `<|endoftext|>`'s id (49407).
    public let endToken: Int
    /// The padding id: `<|endoftext|>` for SD 1.x, `!` (0) for SD 2.x, as the folder's config says.
    public let padToken: Int
    /// The unknown-token id used for a symbol outside the vocabulary (never hit by byte-level input).
    public let unknownToken: Int
    /// The context length the text encoder takes (77 for CLIP), from `model_max_length` when given.
    public let maxLength: Int

    private let mergeRanks: [SymbolPair: Int]
    private var specialTokens: [(text: [Unicode.Scalar], ids: [Int])]
    /// The tokens `adding(_:)` added (textual-inversion embeddings), in the order added.
    public private(set) var addedTokens: [(text: String, ids: [Int])] = []

    private struct SymbolPair: Hashable, Sendable {
        let first: String
        let second: String
    }

    /// Loads the tokenizer in `folder`: `vocab.json` + `merges.txt` (diffusers' `tokenizer/` folder) or,
    /// when those are absent, `tokenizer.json` (what transformers 5 writes). Special tokens come from
    /// `tokenizer_config.json` / `special_tokens_map.json` when present; `padToken` overrides the
    /// padding token they name (SD 2.x single files pad with "!" whatever vocabulary is at hand).
    public init(folder: String, padToken padOverride: String? = nil) throws {
        let fm = FileManager.default
        let vocabPath = folder + "/vocab.json"
        let mergesPath = folder + "/merges.txt"
        let tokenizerJSONPath = folder + "/tokenizer.json"
        var vocabulary: [String: Int]
        var merges: [(String, String)]
        if fm.fileExists(atPath: vocabPath) && fm.fileExists(atPath: mergesPath) {
            vocabulary = try Self.readVocabulary(path: vocabPath)
            merges = try Self.readMerges(path: mergesPath)
        } else if fm.fileExists(atPath: tokenizerJSONPath) {
            (vocabulary, merges) = try Self.readTokenizerJSON(path: tokenizerJSONPath)
        } else {
            throw TokenizerError.missingFiles(folder: folder)
        }

        var names = SpecialTokenNames()
        for file in ["special_tokens_map.json", "tokenizer_config.json"] {
            let path = folder + "/" + file
            if fm.fileExists(atPath: path) { try names.read(path: path) }
        }
        if let padOverride { names.pad = padOverride }
        func id(_ token: String, _ role: String) throws -> Int {
            guard let id = vocabulary[token] else {
                throw TokenizerError.malformed(
                    path: folder, reason: "the \(role) token \"\(token)\" is not in the vocabulary")
            }
            return id
        }
        let start = try id(names.bos, "start")
        let end = try id(names.eos, "end")
        try self.init(
            vocabulary: vocabulary, merges: merges, startToken: start, endToken: end,
            padToken: try id(names.pad, "padding"), unknownToken: try id(names.unk, "unknown"),
            maxLength: names.maxLength ?? 77,
            specialTokens: [(names.bos, start), (names.eos, end)])
    }

    /// A tokenizer from an in-memory vocabulary and merge list (`merges[i]` has rank `i`).
    public init(vocabulary: [String: Int], merges: [(String, String)], startToken: Int, endToken: Int,
                padToken: Int, unknownToken: Int, maxLength: Int = 77,
                specialTokens: [(String, Int)]? = nil) throws {
        self.vocabulary = vocabulary
        self.startToken = startToken
        self.endToken = endToken
        self.padToken = padToken
        self.unknownToken = unknownToken
        self.maxLength = maxLength
        var ranks: [SymbolPair: Int] = [:]
        ranks.reserveCapacity(merges.count)
        for (rank, merge) in merges.enumerated() where ranks[SymbolPair(first: merge.0, second: merge.1)] == nil {
            ranks[SymbolPair(first: merge.0, second: merge.1)] = rank
        }
        self.mergeRanks = ranks
        let specials = specialTokens ?? [("<|startoftext|>", startToken), ("<|endoftext|>", endToken)]
        // Longest first, so that one special token that is a prefix of another never wins.
        self.specialTokens = specials.map { (Array($0.0.unicodeScalars), [$0.1]) }
            .sorted { $0.text.count > $1.text.count }
    }

    /// This tokenizer with `tokens` added, each text standing for its ids (textual-inversion
    /// embeddings: one token for n vectors). Matched in the raw text before normalisation, as
    /// added tokens are.
    public func adding(_ tokens: [(String, [Int])]) -> CLIPTokenizer {
        var t = self
        t.specialTokens = (specialTokens + tokens.map { (Array($0.0.unicodeScalars), $0.1) }).sorted { $0.text.count > $1.text.count }
        t.addedTokens += tokens.map { (text: $0.0, ids: $0.1) }
        return t
    }

    /// This tokenizer without the tokens `adding(_:)` added.
    public var withoutAddedTokens: CLIPTokenizer {
        var t = self
        let added = Set(addedTokens.map { Array($0.text.unicodeScalars).map(\.value) })
        t.specialTokens = specialTokens.filter { !added.contains($0.text.map(\.value)) }
        t.addedTokens = []
        return t
    }

    // MARK: - Encoding

    /// The ids of `text` wrapped in the start and end tokens, neither padded nor truncated.
    public func encode(_ text: String) -> [Int] {
        [startToken] + tokens(text) + [endToken]
    }

    /// The ids of `text` without start and end tokens.
    public func tokens(_ text: String) -> [Int] {
        var ids: [Int] = []
        for segment in splitOnSpecialTokens(Array(text.unicodeScalars)) {
            switch segment {
            case .special(let special):
                ids.append(contentsOf: special)
            case .text(let scalars):
                let normalized = Self.normalize(scalars)
                for piece in Self.clipPreTokenize(normalized) {
                    for word in Self.byteLevelPreTokenize(piece) {
                        ids.append(contentsOf: bpe(Self.byteLevelEncode(word)))
                    }
                }
            }
        }
        return ids
    }

    /// The ids the text encoder takes: start token, at most `length - 2` text tokens, end token, then
    /// the padding token up to `length` (transformers' `padding="max_length", truncation=True`).
    public func ids(_ text: String, length: Int = 77) -> [Int32] {
        precondition(length >= 2, "a CLIP sequence holds at least the start and end tokens")
        var body = tokens(text)
        if body.count > length - 2 { body.removeLast(body.count - (length - 2)) }
        var out = [Int32(startToken)] + body.map(Int32.init) + [Int32(endToken)]
        out.append(contentsOf: repeatElement(Int32(padToken), count: length - out.count))
        return out
    }

    /// Same as `ids(_:length:)`.
    public func callAsFunction(_ text: String, length: Int = 77) -> [Int32] {
        ids(text, length: length)
    }

    // MARK: - Special tokens

    private enum Segment {
        case text([Unicode.Scalar])
        case special([Int])
    }

    /// Cuts exact (case-sensitive, un-normalised) occurrences of the special tokens out of the text, as
    /// the `tokenizers` library's added-token pass does before normalisation.
    private func splitOnSpecialTokens(_ scalars: [Unicode.Scalar]) -> [Segment] {
        var segments: [Segment] = []
        var pending: [Unicode.Scalar] = []
        var i = 0
        outer: while i < scalars.count {
            for special in specialTokens where Self.matches(scalars, at: i, special.text) {
                if !pending.isEmpty { segments.append(.text(pending)); pending = [] }
                segments.append(.special(special.ids))
                i += special.text.count
                continue outer
            }
            pending.append(scalars[i])
            i += 1
        }
        if !pending.isEmpty { segments.append(.text(pending)) }
        return segments
    }

    private static func matches(_ s: [Unicode.Scalar], at i: Int, _ pattern: [Unicode.Scalar]) -> Bool {
        guard !pattern.isEmpty, i + pattern.count <= s.count else { return false }
        for k in 0..<pattern.count where s[i + k] != pattern[k] { return false }
        return true
    }

    // MARK: - Normalisation

    /// NFC, white-space runs to a single space, then per-scalar full lower-case mapping (no context:
    /// a final Σ becomes σ, as in the `tokenizers` library, unlike Python's `str.lower()`).
    static func normalize(_ scalars: [Unicode.Scalar]) -> [Unicode.Scalar] {
        let composed = canonicalComposition(scalars)
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(composed.count)
        var inSpace = false
        for scalar in composed {
            if scalar.properties.isWhitespace {
                if !inSpace { out.append(" ") }
                inSpace = true
                continue
            }
            inSpace = false
            let lower = scalar.properties.lowercaseMapping
            if lower.unicodeScalars.count == 1, lower.unicodeScalars.first == scalar {
                out.append(scalar)
            } else {
                out.append(contentsOf: lower.unicodeScalars)
            }
        }
        return out
    }

    /// Unicode NFC. Foundation drops a U+FEFF (byte-order mark) at the start of a string, which NFC
    /// keeps; U+FEFF neither decomposes nor composes, so the runs between them are normalised alone.
    static func canonicalComposition(_ scalars: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(scalars.count)
        for (i, run) in scalars.split(separator: "\u{FEFF}", omittingEmptySubsequences: false).enumerated() {
            if i > 0 { out.append("\u{FEFF}") }
            if run.allSatisfy({ $0.isASCII }) {
                out.append(contentsOf: run)
                continue
            }
            var text = String()
            text.unicodeScalars.append(contentsOf: run)
            out.append(contentsOf: text.precomposedStringWithCanonicalMapping.unicodeScalars)
        }
        return out
    }

    // MARK: - Pre-tokenisation

    static func isLetter(_ s: Unicode.Scalar) -> Bool {
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    static func isNumber(_ s: Unicode.Scalar) -> Bool {
        switch s.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    static func isSpace(_ s: Unicode.Scalar) -> Bool { s.properties.isWhitespace }

    private static let contractions: [[Unicode.Scalar]] = ["s", "t", "re", "ve", "m", "ll", "d"].map {
        [Unicode.Scalar("'")] + Array($0.unicodeScalars)
    }
    private static let literalSpecials: [[Unicode.Scalar]] = ["<|startoftext|>", "<|endoftext|>"].map {
        Array($0.unicodeScalars)
    }

    /// The matches of CLIP's pattern, left to right; everything between matches (white space) is dropped.
    static func clipPreTokenize(_ s: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
        var pieces: [[Unicode.Scalar]] = []
        var i = 0
        scan: while i < s.count {
            for literal in literalSpecials + contractions where matches(s, at: i, literal) {
                pieces.append(literal)
                i += literal.count
                continue scan
            }
            let c = s[i]
            if isLetter(c) {
                var j = i + 1
                while j < s.count && isLetter(s[j]) { j += 1 }
                pieces.append(Array(s[i..<j]))
                i = j
            } else if isNumber(c) {
                pieces.append([c])
                i += 1
            } else if isSpace(c) {
                i += 1
            } else {
                var j = i + 1
                while j < s.count && !isSpace(s[j]) && !isLetter(s[j]) && !isNumber(s[j]) { j += 1 }
                pieces.append(Array(s[i..<j]))
                i = j
            }
        }
        return pieces
    }

    /// GPT-2's pattern (`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+`), which the
    /// byte-level step applies again to each piece. Pieces hold no white space, so only the alternatives
    /// without spaces can match; in practice it only splits a lower-cased `<|startoftext|>` typed in
    /// another case into `<|`, `startoftext`, `|>`.
    static func byteLevelPreTokenize(_ s: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
        var words: [[Unicode.Scalar]] = []
        var i = 0
        scan: while i < s.count {
            for literal in contractions where matches(s, at: i, literal) {
                words.append(literal)
                i += literal.count
                continue scan
            }
            let start = i
            let kind: (Unicode.Scalar) -> Bool
            if isLetter(s[i]) {
                kind = isLetter
            } else if isNumber(s[i]) {
                kind = isNumber
            } else if isSpace(s[i]) {
                kind = isSpace
            } else {
                kind = { !isSpace($0) && !isLetter($0) && !isNumber($0) }
            }
            i += 1
            while i < s.count && kind(s[i]) { i += 1 }
            words.append(Array(s[start..<i]))
        }
        return words
    }

    // MARK: - Byte level and BPE

    /// GPT-2's map from bytes to printable characters: printable Latin-1 bytes map to themselves, the
    /// others to U+0100 onwards in byte order.
    static let byteCharacters: [String] = {
        var printable = Set<Int>()
        for range in [33...126, 161...172, 174...255] { printable.formUnion(range) }
        var next = 256
        return (0..<256).map { byte in
            if printable.contains(byte) { return String(Unicode.Scalar(UInt8(byte))) }
            defer { next += 1 }
            return String(Unicode.Scalar(UInt32(next))!)
        }
    }()

    static func byteLevelEncode(_ word: [Unicode.Scalar]) -> [String] {
        var text = String()
        text.unicodeScalars.append(contentsOf: word)
        return text.utf8.map { byteCharacters[Int($0)] }
    }

    /// Merges the word's symbols, lowest-ranked adjacent pair first (every occurrence of it, left to
    /// right), until no adjacent pair has a merge; the last symbol carries `</w>`.
    private func bpe(_ symbolsIn: [String]) -> [Int] {
        guard !symbolsIn.isEmpty else { return [] }
        var symbols = symbolsIn
        symbols[symbols.count - 1] += "</w>"
        while symbols.count > 1 {
            var best: (rank: Int, pair: SymbolPair)?
            for k in 0..<(symbols.count - 1) {
                let pair = SymbolPair(first: symbols[k], second: symbols[k + 1])
                if let rank = mergeRanks[pair], rank < (best?.rank ?? Int.max) { best = (rank, pair) }
            }
            guard let (_, pair) = best else { break }
            var merged: [String] = []
            merged.reserveCapacity(symbols.count)
            var k = 0
            while k < symbols.count {
                if k + 1 < symbols.count && symbols[k] == pair.first && symbols[k + 1] == pair.second {
                    merged.append(pair.first + pair.second)
                    k += 2
                } else {
                    merged.append(symbols[k])
                    k += 1
                }
            }
            symbols = merged
        }
        return symbols.map { vocabulary[$0] ?? unknownToken }
    }

    // MARK: - Files

    private static func readData(_ path: String) throws -> Data {
        // RegularFile: a FIFO or a folder in the tokenizer's place fails instead of blocking.
        do { return try RegularFile.read(path) } catch let error as FileError {
            throw TokenizerError.unreadable(path: path, reason: error.reason)
        }
    }

    private static func readVocabulary(path: String) throws -> [String: Int] {
        let data = try readData(path)
        do { return try JSONDecoder().decode([String: Int].self, from: data) } catch {
            throw TokenizerError.malformed(path: path, reason: "expected a JSON object of token → id (\(error))")
        }
    }

    private static func readMerges(path: String) throws -> [(String, String)] {
        let data = try readData(path)
        guard let text = String(data: data, encoding: .utf8) else {
            throw TokenizerError.malformed(path: path, reason: "not UTF-8 text")
        }
        var merges: [(String, String)] = []
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.hasSuffix("\r") ? line.dropLast() : line
            if trimmed.isEmpty || (number == 0 && trimmed.hasPrefix("#version")) { continue }
            let parts = trimmed.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2 else {
                throw TokenizerError.malformed(
                    path: path, reason: "line \(number + 1) is not two symbols separated by one space")
            }
            merges.append((String(parts[0]), String(parts[1])))
        }
        return merges
    }

    private static func readTokenizerJSON(path: String) throws -> ([String: Int], [(String, String)]) {
        let data = try readData(path)
        guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let model = root["model"] as? [String: Any] else {
            throw TokenizerError.malformed(path: path, reason: "expected a JSON object with a \"model\" object")
        }
        guard let rawVocab = model["vocab"] as? [String: Any] else {
            throw TokenizerError.malformed(path: path, reason: "model.vocab is not an object of token → id")
        }
        var vocabulary: [String: Int] = [:]
        for (token, value) in rawVocab {
            guard let id = (value as? NSNumber)?.intValue else {
                throw TokenizerError.malformed(path: path, reason: "model.vocab[\"\(token)\"] is not an integer")
            }
            vocabulary[token] = id
        }
        // Added tokens (the special ones) may live outside model.vocab.
        for case let added as [String: Any] in root["added_tokens"] as? [Any] ?? [] {
            if let content = added["content"] as? String, let id = (added["id"] as? NSNumber)?.intValue,
               vocabulary[content] == nil {
                vocabulary[content] = id
            }
        }
        guard let rawMerges = model["merges"] as? [Any] else {
            throw TokenizerError.malformed(path: path, reason: "model.merges is not a list")
        }
        var merges: [(String, String)] = []
        merges.reserveCapacity(rawMerges.count)
        for (index, entry) in rawMerges.enumerated() {
            // Older files write "a b", newer ones ["a", "b"].
            if let line = entry as? String {
                let parts = line.split(separator: " ", omittingEmptySubsequences: false)
                if parts.count == 2 { merges.append((String(parts[0]), String(parts[1]))); continue }
            } else if let pair = entry as? [String], pair.count == 2 {
                merges.append((pair[0], pair[1]))
                continue
            }
            throw TokenizerError.malformed(path: path, reason: "model.merges[\(index)] is not a pair of symbols")
        }
        return (vocabulary, merges)
    }
}

/// The special-token names and length a tokenizer folder's JSON configs declare.
private struct SpecialTokenNames {
    var bos = "<|startoftext|>"
    var eos = "<|endoftext|>"
    var pad = "<|endoftext|>"
    var unk = "<|endoftext|>"
    var maxLength: Int?

    mutating func read(path: String) throws {
        let data: Data
        do { data = try RegularFile.read(path) } catch let error as FileError {
            throw TokenizerError.unreadable(path: path, reason: error.reason)
        }
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw TokenizerError.malformed(path: path, reason: "expected a JSON object")
        }
        // A token is written either as a string or as {"content": "..."}.
        func token(_ key: String) -> String? {
            if let s = object[key] as? String { return s }
            return (object[key] as? [String: Any])?["content"] as? String
        }
        bos = token("bos_token") ?? bos
        eos = token("eos_token") ?? eos
        pad = token("pad_token") ?? pad
        unk = token("unk_token") ?? unk
        // transformers writes a huge sentinel when the length is unknown.
        if let length = (object["model_max_length"] as? NSNumber)?.intValue, length > 0, length < 1_000_000 {
            maxLength = length
        }
    }
}
