import Foundation
import Lumen
import LumenRuntime
import LumenTestSupport
import XCTest

/// Single-file ControlNets (tools/make_controlnet_single_file_fixtures.py): tiny-controlnet-a with
/// the original ControlNet names (control_model.*), as diffusers' ControlNetModel.from_single_file
/// reads it, and the diffusers-named files SDXL ControlNets are published as.
final class ControlNetSingleFileTests: XCTestCase {
    static var originalFile: String { Fixtures.root + "/tiny-controlnet-a.safetensors" }
    static var reference: SafetensorsFile { get throws { try SafetensorsFile(path: Fixtures.root + "/controlnet-single-file-reference.safetensors") } }

    /// The controlnet-reference "single" request with the ControlNet at `path`.
    static func request(_ path: String, case name: String = "single") throws -> GenerationRequest {
        var r = try ControlNetTests.request(try ControlNetTests.reference, name)
        r.controlNets[0].path = path
        return r
    }

    /// The shapes read from the tensors (and the heads from the model) are the folder's config.
    func testConfigAndLayoutFromTheNames() throws {
        let model = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu).model.unetConfig
        let folder = try ControlNet(path: Fixtures.root + "/tiny-controlnet-a")
        for (path, layout) in [(Self.originalFile, ControlNetLayout.original(prefix: "control_model.")),
                               (Fixtures.root + "/tiny-controlnet-a/diffusion_pytorch_model.safetensors", .diffusersSingleFile)] {
            let net = try ControlNet(path: path, model: model)
            XCTAssertEqual(net.layout, layout, path)
            let (a, b) = (net.config.unet, folder.config.unet)
            XCTAssertEqual(a.blockOutChannels, b.blockOutChannels, path)
            XCTAssertEqual(a.layersPerBlock, b.layersPerBlock, path)
            XCTAssertEqual(a.downBlockTypes, b.downBlockTypes, path)
            XCTAssertEqual(a.crossAttentionDim, b.crossAttentionDim, path)
            XCTAssertEqual(a.useLinearProjection, b.useLinearProjection, path)
            XCTAssertEqual(a.inChannels, b.inChannels, path)
            XCTAssertEqual(b.blockOutChannels.indices.map { a.heads(block: $0) }, b.blockOutChannels.indices.map { b.heads(block: $0) }, path)
            XCTAssertEqual(b.blockOutChannels.indices.map { a.transformerLayersPerBlock.value($0) },
                           b.blockOutChannels.indices.map { b.transformerLayersPerBlock.value($0) }, path)
            XCTAssertEqual(net.config.conditioningChannels, folder.config.conditioningChannels, path)
            XCTAssertEqual(net.config.conditioningEmbeddingOutChannels, folder.config.conditioningEmbeddingOutChannels, path)
        }
    }

    /// The original-named file draws diffusers' from_single_file image, and the folder's latents to
    /// the bit (the same f16 weights under other names).
    func testOriginalNamesMatchDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
            let r = try Self.request(Self.originalFile)
            // The latents are ~10–20 in size; the f32 networks agree with diffusers to ~1e-6 relative (as ControlNetTests).
            try assertMatchesFixture(pipeline, r, "single-file", in: try Self.reference, latentBound: 2e-3, maxPixelError: 1)
            XCTAssertEqual(try pipeline.latents(for: r).toFloats(),
                           try pipeline.latents(for: try Self.request(Fixtures.root + "/tiny-controlnet-a")).toFloats())
        }
    }

    /// Files with diffusers' names and no config: SD 1.x (tiny-controlnet-a's weight file) and SDXL
    /// (tiny-controlnet-xl's, with the added embedding), each the folder's latents to the bit.
    func testDiffusersNamedSingleFiles() throws {
        let sd = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
        XCTAssertEqual(try sd.latents(for: try Self.request(Fixtures.root + "/tiny-controlnet-a/diffusion_pytorch_model.safetensors")).toFloats(),
                       try sd.latents(for: try Self.request(Fixtures.root + "/tiny-controlnet-a")).toFloats())
        let xl = try Pipeline(modelPath: SDXLFixtureTests.folder, backend: .cpu)
        var r = try Self.request(Fixtures.root + "/tiny-controlnet-xl/diffusion_pytorch_model.safetensors", case: "xl")
        r.negativePrompt = nil
        var folder = r
        folder.controlNets[0].path = Fixtures.root + "/tiny-controlnet-xl"
        let got = try xl.latents(for: r).toFloats()
        XCTAssertEqual(got, try xl.latents(for: folder).toFloats())
        let worst = zip(got, try ControlNetTests.reference.tensor("xl.latents").toFloats()).map { abs($0 - $1) }.max()!
        XCTAssertLessThan(worst, 2e-3, "against StableDiffusionXLControlNetPipeline")
    }

    func testOriginalNamesOnVulkan() throws {
        let vulkan = try testVulkanExecutor()
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, executor: vulkan)
        // f16 weights and activations on lavapipe: the bound of the other Vulkan pipeline tests.
        try assertMatchesFixture(pipeline, try Self.request(Self.originalFile), "single-file", in: try Self.reference,
                                 latentBound: 0.25, maxPixelError: 12)
        XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")
    }

    func testRefusals() throws {
        let model = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu).model.unetConfig
        XCTAssertThrowsError(try ControlNet(path: Fixtures.root + "/tiny-sd.safetensors", model: model)) {
            XCTAssertTrue("\($0)".contains("no ControlNet tensors found"), "\($0)")
        }
        XCTAssertThrowsError(try ControlNet(path: Self.originalFile)) {
            XCTAssertTrue("\($0)".contains("takes its attention heads from the model it guides"), "\($0)")
        }
        XCTAssertThrowsError(try ControlNet(path: Fixtures.root + "/no-such-controlnet.safetensors", model: model)) {
            XCTAssertTrue("\($0)".contains("no such file or folder"), "\($0)")
        }
        // An SD 1.x ControlNet on an SDXL model is refused by the pipeline's family check.
        let sdxl = try Pipeline(modelPath: SDXLFixtureTests.folder, backend: .cpu)
        var r = try Self.request(Self.originalFile)
        r.scheduler = nil
        XCTAssertThrowsError(try sdxl.generate(r)) { XCTAssertTrue("\($0)".contains("made for another model family"), "\($0)") }
    }
}
