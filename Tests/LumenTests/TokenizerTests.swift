import Foundation
import Lumen
import XCTest

/// `CLIPTokenizer` against transformers 5.23's `CLIPTokenizer` on the real CLIP vocabulary: ids must be
/// identical for every fixture string (unpadded, and padded/truncated to 77 where recorded).
final class TokenizerTests: XCTestCase {
    static let folder = Fixtures.tinyFolder + "/tokenizer"

    private func cases() throws -> [(text: String, ids: [Int], padded: [Int]?)] {
        let fixture = try GenerationFixtures.json("tokenizer")
        let cases = try XCTUnwrap(fixture["cases"] as? [[String: Any]])
        return try cases.map {
            (try XCTUnwrap($0["text"] as? String), try XCTUnwrap($0["ids"] as? [Int]), $0["padded"] as? [Int])
        }
    }

    func testMatchesTransformers() throws {
        let tokenizer = try CLIPTokenizer(folder: Self.folder)
        let cases = try cases()
        XCTAssertGreaterThanOrEqual(cases.count, 300)
        var failures = 0
        for c in cases {
            let ids = tokenizer.encode(c.text)
            if ids != c.ids {
                failures += 1
                XCTFail("\(c.text.debugDescription): got \(ids), transformers \(c.ids)")
            }
            if let padded = c.padded {
                XCTAssertEqual(tokenizer.ids(c.text).map(Int.init), padded, "padded \(c.text.debugDescription)")
                XCTAssertEqual(tokenizer(c.text).count, 77)
            }
        }
        XCTAssertEqual(failures, 0)
    }

    func testSpecialTokensAndPadding() throws {
        let tokenizer = try CLIPTokenizer(folder: Self.folder)
        XCTAssertEqual(tokenizer.startToken, 49406)
        XCTAssertEqual(tokenizer.endToken, 49407)
        XCTAssertEqual(tokenizer.padToken, 49407)
        XCTAssertEqual(tokenizer.maxLength, 77)
        XCTAssertEqual(tokenizer.ids("", length: 4), [49406, 49407, 49407, 49407])
        // A leading byte-order mark is text to CLIP (its three UTF-8 bytes), not something to strip.
        XCTAssertEqual(tokenizer.encode("\u{FEFF}bom"), [49406, 171, 119, 379, 19469, 49407])
        let long = tokenizer.ids(String(repeating: "cat ", count: 200))
        XCTAssertEqual(long.count, 77)
        XCTAssertEqual(long.first, 49406)
        XCTAssertEqual(long.last, 49407)
    }

    /// transformers 5 saves `tokenizer.json` only; a folder holding just that file gives the same ids.
    func testTokenizerJSONGivesSameIds() throws {
        let fixture = try GenerationFixtures.json("tokenizer")
        XCTAssertEqual(fixture["tokenizer_json_merges_format"] as? String, "pairs")
        let vocabData = try Data(contentsOf: URL(fileURLWithPath: Self.folder + "/vocab.json"))
        let vocab = try XCTUnwrap(JSONSerialization.jsonObject(with: vocabData) as? [String: Any])
        let mergesText = try String(contentsOfFile: Self.folder + "/merges.txt", encoding: .utf8)
        let merges = mergesText.split(separator: "\n").dropFirst().map { $0.split(separator: " ").map(String.init) }
        let json: [String: Any] = [
            "added_tokens": [["id": 49406, "content": "<|startoftext|>", "special": true],
                             ["id": 49407, "content": "<|endoftext|>", "special": true]],
            "model": ["type": "BPE", "vocab": vocab, "merges": merges, "end_of_word_suffix": "</w>"],
        ]
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lumen-tok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try JSONSerialization.data(withJSONObject: json).write(to: dir.appendingPathComponent("tokenizer.json"))
        let fromJSON = try CLIPTokenizer(folder: dir.path)
        let fromFolder = try CLIPTokenizer(folder: Self.folder)
        for c in try cases().prefix(120) {
            XCTAssertEqual(fromJSON.encode(c.text), fromFolder.encode(c.text), c.text.debugDescription)
        }
    }

    func testErrorsNameTheFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lumen-tok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertThrowsError(try CLIPTokenizer(folder: dir.path)) {
            XCTAssertEqual($0 as? TokenizerError, .missingFiles(folder: dir.path))
        }
        try Data("{not json".utf8).write(to: dir.appendingPathComponent("vocab.json"))
        try Data("#version: 0.2\na b\n".utf8).write(to: dir.appendingPathComponent("merges.txt"))
        XCTAssertThrowsError(try CLIPTokenizer(folder: dir.path)) { error in
            guard case .malformed(let path, _)? = error as? TokenizerError else { return XCTFail("\(error)") }
            XCTAssertTrue(path.hasSuffix("vocab.json"))
        }
    }
}
