import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// Prompts as AUTOMATIC1111 reads them (#20) against tools/make_prompt_fixtures.py, a Python
/// reference of A1111's parser, chunking and weighting run with transformers' CLIP on the tiny
/// fixture models.
final class PromptSyntaxTests: XCTestCase {
    static var folder: String { Fixtures.root + "/prompts" }

    struct ParseCase: Decodable {
        let prompt: String
        let pieces: [[Piece]]
        enum Piece: Decodable {
            case text(String), weight(Double)
            init(from decoder: Decoder) throws {
                let c = try decoder.singleValueContainer()
                if let s = try? c.decode(String.self) { self = .text(s) } else { self = .weight(try c.decode(Double.self)) }
            }
        }
    }

    func testParserEqualsReferenceExactly() throws {
        let cases = try JSONDecoder().decode([ParseCase].self, from: Data(contentsOf: URL(fileURLWithPath: Self.folder + "/parse.json")))
        XCTAssertGreaterThan(cases.count, 25)
        for c in cases {
            let expected = c.pieces.map { pair -> PromptPiece in
                guard case .text(let t) = pair[0], case .weight(let w) = pair[1] else { fatalError("malformed parse.json") }
                return PromptPiece(t, w)
            }
            // Weights compared with ==: the same doubles multiplied in the same order.
            XCTAssertEqual(try PromptAttention.parse(c.prompt), expected, c.prompt.debugDescription)
        }
    }

    func testBadWeightIsATypedError() {
        XCTAssertThrowsError(try PromptAttention.parse("a (cat:1.2.3) b")) { error in
            XCTAssertEqual(error as? PromptSyntaxError, .invalidWeight("1.2.3"))
            XCTAssertTrue("\(error)".contains("1.2.3"))
        }
    }

    struct Case: Decodable { let prompt: String; let negative_prompt: String }

    static func cases(_ file: SafetensorsFile) throws -> [String: Case] {
        try JSONDecoder().decode([String: Case].self, from: Data(XCTUnwrap(file.metadata["cases"]).utf8))
    }

    /// The chunks of [negative, prompt], padded to one count, as the reference lays them out.
    static func paddedChunks(_ texts: [String], _ chunkers: [PromptChunker]) throws -> [[[PromptChunk]]] {
        let raw = try chunkers.map { c in try texts.map { try c.chunks($0) } }
        let n = raw.flatMap { $0.map(\.count) }.max()!
        return zip(raw, chunkers).map { t, c in t.map { $0 + Array(repeating: c.emptyChunk, count: n - $0.count) } }
    }

    func testSD15ChunksAndContextEqualReference() throws {
        let ref = try SafetensorsFile(path: Self.folder + "/sd-reference.safetensors")
        let cases = try Self.cases(ref)
        XCTAssertEqual(cases.count, 6)
        try forEachInstructionSet(modelInstructionSets) { _ in
            let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
            let chunker = try PromptChunker(tokenizer: pipeline.tokenizer)
            for (name, c) in cases.sorted(by: { $0.key < $1.key }) {
                let chunks = try Self.paddedChunks([c.negative_prompt, c.prompt], [chunker])[0]
                XCTAssertEqual(chunks.flatMap { $0.flatMap { $0.ids.map(Int.init) } }, try ref.tensor("\(name).ids").toInts(), "\(name): ids")
                XCTAssertEqual(chunks.flatMap { $0.flatMap(\.multipliers) }, try ref.tensor("\(name).multipliers").toFloats(), "\(name): multipliers")
                var r = GenerationRequest(prompt: c.prompt)
                r.negativePrompt = c.negative_prompt
                r.promptSyntax = .a1111
                let (context, pooled) = try pipeline.promptEmbeddings(for: r)
                XCTAssertNil(pooled)
                // 1e-5 as the plain encoder tests: f32 accumulation orders differ from torch's.
                assertRelativeError(context, try ref.tensor("\(name).context"), below: 1e-5, "\(name): context")
            }
        }
    }

    /// Textual-inversion embeddings in A1111 prompts, against tools/make_a1111_embedding_fixtures.py:
    /// found by their name's tokens (capitals match, a longer word does not) and moved whole to
    /// the next chunk where they would straddle the boundary.
    func testEmbeddingsAreFoundAndKeptWholeAsA1111Does() throws {
        let ref = try SafetensorsFile(path: Self.folder + "/embedding-reference.safetensors")
        let cases = try Self.cases(ref)
        XCTAssertEqual(Set(cases.keys), ["case", "suffix", "boundary"])
        let embedding = try TextualInversion(path: Fixtures.root + "/embeddings/lumenstyle.safetensors")
        try forEachInstructionSet(modelInstructionSets) { _ in
            let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu, embeddings: [embedding])
            let vocab = pipeline.model.textEncoderConfig.vocabSize
            let chunker = try PromptChunker(tokenizer: pipeline.tokenizer.adding([("lumenstyle", [vocab, vocab + 1])]))
            for (name, c) in cases.sorted(by: { $0.key < $1.key }) {
                let chunks = try Self.paddedChunks([c.negative_prompt, c.prompt], [chunker])[0]
                XCTAssertEqual(chunks.flatMap { $0.flatMap { $0.ids.map(Int.init) } }, try ref.tensor("\(name).ids").toInts(), "\(name): ids")
                XCTAssertEqual(chunks.flatMap { $0.flatMap(\.multipliers) }, try ref.tensor("\(name).multipliers").toFloats(), "\(name): multipliers")
                var r = GenerationRequest(prompt: c.prompt)
                r.negativePrompt = c.negative_prompt
                r.promptSyntax = .a1111
                // 1e-5 as the other A1111 context tests.
                assertRelativeError(try pipeline.promptEmbeddings(for: r).context, try ref.tensor("\(name).context"), below: 1e-5, "\(name): context")
            }
        }
        // More vectors than a chunk holds: a typed error, not a chunk longer than 77.
        let tokenizer = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu).tokenizer
        XCTAssertThrowsError(try PromptChunker(tokenizer: tokenizer.adding([("huge", Array(50000..<50080))]))) { error in
            XCTAssertEqual(error as? PromptSyntaxError, .embeddingTooLong(token: "huge", vectors: 80))
        }
    }

    /// The long prompt's three chunks reach the UNet: latents against StableDiffusionPipeline
    /// given the reference context as prompt_embeds.
    func testLongPromptGenerationEqualsDiffusers() throws {
        let ref = try SafetensorsFile(path: Self.folder + "/sd-reference.safetensors")
        let c = try XCTUnwrap(try Self.cases(ref)["long"])
        try forEachInstructionSet(modelInstructionSets) { _ in
            let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
            var r = GenerationRequest(prompt: c.prompt)
            r.negativePrompt = c.negative_prompt
            r.promptSyntax = .a1111
            r.steps = 3
            r.seed = 7
            let latents = try pipeline.latents(for: r)
            // 1e-4: the bound PipelineTests holds the same pipeline's latents to.
            assertRelativeError(latents, try ref.tensor("long.latents"), below: 1e-4, "long prompt latents")
            // Plain syntax truncates to 77 tokens: a different picture.
            r.promptSyntax = .plain
            XCTAssertGreaterThan(relativeError(try pipeline.latents(for: r).toFloats(), try ref.tensor("long.latents").toFloats()), 1e-3)
        }
    }

    func testSDXLChunksContextAndPooledEqualReference() throws {
        let ref = try SafetensorsFile(path: Self.folder + "/sdxl-reference.safetensors")
        let cases = try Self.cases(ref)
        XCTAssertEqual(cases.count, 2)
        try forEachInstructionSet(modelInstructionSets) { _ in
            let pipeline = try Pipeline(modelPath: Fixtures.root + "/tiny-sdxl", backend: .cpu)
            let chunkers = [try PromptChunker(tokenizer: pipeline.tokenizer), try PromptChunker(tokenizer: XCTUnwrap(pipeline.tokenizer2))]
            for (name, c) in cases.sorted(by: { $0.key < $1.key }) {
                let chunks = try Self.paddedChunks([c.negative_prompt, c.prompt], chunkers)
                XCTAssertEqual(chunks[0].flatMap { $0.flatMap { $0.ids.map(Int.init) } }, try ref.tensor("\(name).ids").toInts(), "\(name): ids")
                XCTAssertEqual(chunks[1].flatMap { $0.flatMap { $0.ids.map(Int.init) } }, try ref.tensor("\(name).ids2").toInts(), "\(name): ids2")
                var r = GenerationRequest(prompt: c.prompt)
                r.negativePrompt = c.negative_prompt
                r.promptSyntax = .a1111
                let (context, pooled) = try pipeline.promptEmbeddings(for: r)
                assertRelativeError(context, try ref.tensor("\(name).context"), below: 1e-5, "\(name): context")
                assertRelativeError(try XCTUnwrap(pooled), try ref.tensor("\(name).pooled"), below: 1e-5, "\(name): pooled")
            }
        }
    }
}
