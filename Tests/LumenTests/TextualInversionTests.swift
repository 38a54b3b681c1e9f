import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// Textual-inversion embeddings (#20) against diffusers' `load_textual_inversion`
/// (tools/make_embedding_fixtures.py): A1111's and diffusers' layouts on tiny-sd, the SDXL
/// clip_l/clip_g pair on tiny-sdxl.
final class TextualInversionTests: XCTestCase {
    static var folder: String { Fixtures.root + "/embeddings" }
    static var reference: SafetensorsFile { get throws { try SafetensorsFile(path: folder + "/reference.safetensors") } }

    struct Prompts: Decodable { let prompt: String; let negative_prompt: String }

    func request(_ key: String) throws -> GenerationRequest {
        let p = try JSONDecoder().decode(Prompts.self, from: Data(XCTUnwrap(try Self.reference.metadata[key]).utf8))
        var r = GenerationRequest(prompt: p.prompt)
        r.negativePrompt = p.negative_prompt
        return r
    }

    func testFileLayoutsAndTokens() throws {
        let a1111 = try TextualInversion(path: Self.folder + "/lumenstyle.safetensors")
        XCTAssertEqual(a1111.token, "lumenstyle")  // A1111: the file name
        XCTAssertEqual(a1111.count, 2)
        XCTAssertEqual(a1111.widths, [16])
        let diffusers = try TextualInversion(path: Self.folder + "/learned_embeds.safetensors")
        XCTAssertEqual(diffusers.token, "<cat-toy>")  // diffusers: the key
        XCTAssertEqual(diffusers.count, 1)
        XCTAssertEqual(try TextualInversion(path: Self.folder + "/learned_embeds.safetensors", token: "mytoken").token, "mytoken")
        let xl = try TextualInversion(path: Self.folder + "/xlstyle.safetensors")
        XCTAssertEqual(xl.widths, [16, 8])
        XCTAssertEqual(xl.count, 3)
    }

    func testSD15EmbeddingsEqualDiffusers() throws {
        try forEachInstructionSet(modelInstructionSets) { _ in
            let embeddings = [try TextualInversion(path: Self.folder + "/lumenstyle.safetensors"),
                              try TextualInversion(path: Self.folder + "/learned_embeds.safetensors")]
            let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu, embeddings: embeddings)
            let (context, _) = try pipeline.promptEmbeddings(for: try request("sd"))
            assertRelativeError(context, try Self.reference.tensor("sd.context"), below: 1e-5, "context with embeddings")
            // Without the embeddings the tokens are ordinary text: a different context.
            let plain = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu).promptEmbeddings(for: try request("sd")).context
            XCTAssertGreaterThan(relativeError(plain.toFloats(), try Self.reference.tensor("sd.context").toFloats()), 1e-3)
        }
    }

    func testSDXLPairEqualsDiffusers() throws {
        try forEachInstructionSet(modelInstructionSets) { _ in
            let pipeline = try Pipeline(modelPath: Fixtures.root + "/tiny-sdxl", backend: .cpu,
                                        embeddings: [try TextualInversion(path: Self.folder + "/xlstyle.safetensors")])
            let (context, pooled) = try pipeline.promptEmbeddings(for: try request("sdxl"))
            assertRelativeError(context, try Self.reference.tensor("sdxl.context"), below: 1e-5, "SDXL context with embeddings")
            assertRelativeError(try XCTUnwrap(pooled), try Self.reference.tensor("sdxl.pooled"), below: 1e-5, "SDXL pooled with embeddings")
        }
    }

    func testWrongFilesAreRefusedByName() throws {
        // An SD embedding on SDXL, an SDXL pair on SD, a file that is no embedding, a token twice.
        XCTAssertThrowsError(try Pipeline(modelPath: Fixtures.root + "/tiny-sdxl", backend: .cpu,
                                          embeddings: [try TextualInversion(path: Self.folder + "/lumenstyle.safetensors")])) {
            XCTAssertTrue("\($0)".contains("lumenstyle.safetensors") && "\($0)".contains("clip_l"), "\($0)")
        }
        XCTAssertThrowsError(try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu,
                                          embeddings: [try TextualInversion(path: Self.folder + "/xlstyle.safetensors")])) {
            XCTAssertTrue("\($0)".contains("xlstyle.safetensors") && "\($0)".contains("SDXL"), "\($0)")
        }
        XCTAssertThrowsError(try TextualInversion(path: Fixtures.tinyFolder + "/vae/diffusion_pytorch_model.safetensors")) {
            XCTAssertTrue("\($0)".contains("not a textual-inversion embedding"), "\($0)")
        }
        let e = try TextualInversion(path: Self.folder + "/lumenstyle.safetensors")
        XCTAssertThrowsError(try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu, embeddings: [e, e])) {
            XCTAssertTrue("\($0)".contains("lumenstyle"), "\($0)")
        }
    }
}
