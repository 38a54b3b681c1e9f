import Foundation
import Lumen
import LumenRuntime

/// The synthetic "shapes world" the demo model was trained on (tools/shapes_dataset.py): one or
/// two flat shapes in named colours on a flat background, with captions in a small fixed grammar.
/// This is what `lumen eval` and the adherence scorer need of it: the palette, the words, and the
/// caption parser.
public enum ShapesWorld {
    /// Palette colours in the dataset's order (the order breaks ties, as in the Python scorer).
    public static let palette: [(name: String, rgb: SIMD3<Float>)] = [
        ("red", [220, 30, 30]), ("green", [30, 170, 50]), ("blue", [30, 60, 220]), ("yellow", [240, 220, 40]),
        ("purple", [140, 40, 180]), ("orange", [245, 140, 20]), ("white", [245, 245, 245]), ("black", [20, 20, 20]),
    ]
    public static let colourNames = palette.map(\.name)
    public static let kinds = ["circle", "square", "triangle", "cross"]
    /// Anchor of each position word, as a fraction of (width, height), in the dataset's order.
    public static let positions: [(name: String, x: Double, y: Double)] = [
        ("top left", 0.25, 0.25), ("top right", 0.75, 0.25), ("bottom left", 0.25, 0.75),
        ("bottom right", 0.75, 0.75), ("center", 0.5, 0.5),
    ]
    /// The image size the world is defined at; extents scale with the image.
    public static let referenceSize = 64

    /// One shape a caption asks for; size and position are nil where the caption leaves them out.
    public struct ShapeSpec: Sendable, Hashable {
        public var colour: String
        public var kind: String
        public var size: String?
        public var position: String?

        public init(colour: String, kind: String, size: String? = nil, position: String? = nil) {
            self.colour = colour
            self.kind = kind
            self.size = size
            self.position = position
        }
    }

    /// What a caption states.
    public struct Caption: Sendable, Hashable {
        public var background: String
        public var shapes: [ShapeSpec]

        public init(background: String, shapes: [ShapeSpec]) {
            self.background = background
            self.shapes = shapes
        }
    }

    public struct CaptionError: Error, Sendable, Equatable, CustomStringConvertible {
        public let text: String
        public var description: String { "not a caption of the shapes world: \"\(text)\"" }
    }

    /// Parses "a small red circle at the top left on a blue background" or "a red circle and a
    /// green square on a white background" (size and position optional in the one-shape form).
    public static func parseCaption(_ text: String) throws -> Caption {
        var t = text.lowercased().trimmingCharacters(in: .whitespacesAndNewlines)
        while t.hasSuffix(".") { t.removeLast() }
        var words = t.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).map(String.init)
        let fail = CaptionError(text: text)
        func article() throws {
            guard let w = words.first, w == "a" || w == "an" else { throw fail }
            words.removeFirst()
        }
        func take(_ allowed: [String]) throws -> String {
            guard let w = words.first, allowed.contains(w) else { throw fail }
            words.removeFirst()
            return w
        }
        func takeLiteral(_ phrase: [String]) -> Bool {
            guard words.starts(with: phrase) else { return false }
            words.removeFirst(phrase.count)
            return true
        }
        // The tail: "on a(n) COLOUR background".
        guard words.count >= 4, words[words.count - 1] == "background",
              ["a", "an"].contains(words[words.count - 3]), words[words.count - 4] == "on",
              colourNames.contains(words[words.count - 2]) else { throw fail }
        let background = words[words.count - 2]
        words.removeLast(4)
        try article()
        if let and = words.firstIndex(of: "and") {
            // Two shapes: "COLOUR KIND and a(n) COLOUR KIND".
            guard and == 2 else { throw fail }
            let c1 = try take(colourNames), k1 = try take(kinds)
            words.removeFirst()
            try article()
            let c2 = try take(colourNames), k2 = try take(kinds)
            guard words.isEmpty else { throw fail }
            return Caption(background: background, shapes: [ShapeSpec(colour: c1, kind: k1), ShapeSpec(colour: c2, kind: k2)])
        }
        let size = words.first.flatMap { ["small", "large"].contains($0) ? $0 : nil }
        if size != nil { words.removeFirst() }
        let colour = try take(colourNames), kind = try take(kinds)
        var position: String?
        if takeLiteral(["in", "the", "center"]) {
            position = "center"
        } else if takeLiteral(["at", "the"]) {
            guard words.count == 2 else { throw fail }
            let p = words.joined(separator: " ")
            guard positions.contains(where: { $0.name == p }), p != "center" else { throw fail }
            position = p
            words.removeAll()
        }
        guard words.isEmpty else { throw fail }
        return Caption(background: background, shapes: [ShapeSpec(colour: colour, kind: kind, size: size, position: position)])
    }

    /// A prompt of an evaluation set: its index, the seed it is generated with, and its caption.
    public struct Prompt: Sendable, Hashable {
        public var index: Int
        public var seed: UInt64
        public var caption: String

        public init(index: Int, seed: UInt64, caption: String) {
            self.index = index
            self.seed = seed
            self.caption = caption
        }
    }

    /// Reads a prompt table as tools/eval_adherence.py writes it: a header line
    /// `index<TAB>seed<TAB>caption`, then one prompt a line.
    public static func readPrompts(_ path: String) throws -> [Prompt] {
        let text: String
        do {
            guard let utf8 = String(data: try RegularFile.read(path), encoding: .utf8) else {
                throw EvalError.unreadablePrompts(path: path, reason: "not UTF-8 text")
            }
            text = utf8
        } catch let error as FileError {
            throw EvalError.unreadablePrompts(path: path, reason: error.reason)
        }
        var out: [Prompt] = []
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            if n == 0 && line.hasPrefix("index") { continue }
            let f = line.split(separator: "\t", maxSplits: 2, omittingEmptySubsequences: false)
            guard f.count == 3, let i = Int(f[0]), let s = UInt64(f[1]) else {
                throw EvalError.unreadablePrompts(path: path, reason: "line \(n + 1): expected index<TAB>seed<TAB>caption")
            }
            let caption = String(f[2])
            do { _ = try parseCaption(caption) } catch {
                throw EvalError.unreadablePrompts(path: path, reason: "line \(n + 1): \(error)")
            }
            out.append(Prompt(index: i, seed: s, caption: caption))
        }
        guard !out.isEmpty else { throw EvalError.unreadablePrompts(path: path, reason: "no prompts") }
        return out
    }
}

public enum EvalError: Error, Sendable, Equatable, CustomStringConvertible {
    case unreadablePrompts(path: String, reason: String)
    case mismatchedCounts(images: Int, captions: Int)

    public var description: String {
        switch self {
        case .unreadablePrompts(let path, let reason): return "\(path): cannot read the prompt set: \(reason)"
        case .mismatchedCounts(let i, let c): return "\(i) images for \(c) captions; expected as many of each (and at least one)"
        }
    }
}
