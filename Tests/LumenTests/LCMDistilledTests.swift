import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// An LCM-distilled UNet (tools/make_lcm_fixtures.py): `time_cond_proj_dim`, the guidance scale as
/// an embedding through `time_embedding.cond_proj` instead of a negative batch, with LCMScheduler,
/// against StableDiffusionPipeline.
final class LCMDistilledTests: XCTestCase {
    static var folder: String { Fixtures.root + "/tiny-sd-lcm" }
    static var reference: SafetensorsFile { get throws { try SafetensorsFile(path: Fixtures.root + "/lcm-reference.safetensors") } }

    func testGenerationMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            let ref = try Self.reference
            let pipeline = try Pipeline(modelPath: Self.folder, backend: .cpu)
            XCTAssertEqual(pipeline.model.unetConfig.timeCondProjDim, 8)
            XCTAssertTrue(pipeline.model.variant.contains("LCM-distilled"), pipeline.model.variant)
            let r = try DiffusersRequest(ref, key: "request").request
            XCTAssertEqual(pipeline.schedulerKind(for: r), .lcm)
            try assertDraws(pipeline, r, like: "image", in: ref, maxPixelError: 1)
        }
    }

    func testOnVulkanMatchesDiffusers() throws {
        let vulkan = try testVulkanExecutor()
        let ref = try Self.reference
        // The bound of the other lavapipe pipeline tests (SDXLFixtureTests).
        try assertDraws(try Pipeline(modelPath: Self.folder, executor: vulkan), try DiffusersRequest(ref, key: "request").request,
                        like: "image", in: ref, maxPixelError: 12)
        XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")
    }

    /// The UNet refuses to be built without the embedding, by name.
    func testUNetNeedsTheGuidanceEmbedding() throws {
        let model = try StableDiffusionModel.load(path: Self.folder)
        let g = Graph()
        XCTAssertThrowsError(try UNet2DConditionModel(config: model.unetConfig).build(
            g, sample: try g.input("s", shape: [1, 4, 8, 8]), timestep: try g.input("t", shape: [1]),
            context: try g.input("c", shape: [1, 77, model.unetConfig.crossAttentionDim]), weights: model.unetWeights)) { error in
            XCTAssertTrue("\(error)".contains("timestep_cond"), "\(error)")
        }
    }
}
