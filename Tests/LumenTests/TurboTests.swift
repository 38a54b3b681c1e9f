import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// Turbo recipes (tools/make_turbo_fixtures.py): tiny SD and SDXL models with SD-Turbo/SDXL-Turbo's
/// scheduler config (Euler ancestral, `trailing` spacing), 1 and 4 steps at guidance 0 (no negative
/// batch), against diffusers' pipelines.
final class TurboTests: XCTestCase {
    static var reference: SafetensorsFile { get throws { try SafetensorsFile(path: Fixtures.root + "/turbo-reference.safetensors") } }
    static let folders = ["sd": Fixtures.root + "/tiny-sd-turbo", "sdxl": Fixtures.root + "/tiny-sdxl-turbo"]

    func testTurboRecipesMatchDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            try check({ try Pipeline(modelPath: $0, backend: .cpu) }, maxPixelError: 1)
        }
    }

    func testTurboRecipesOnVulkanMatchDiffusers() throws {
        let vulkan = try testVulkanExecutor()
        // The bound of the other lavapipe pipeline tests (SDXLFixtureTests).
        try check({ try Pipeline(modelPath: $0, executor: vulkan) }, maxPixelError: 12)
        XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")
    }

    private func check(_ open: (String) throws -> Pipeline, maxPixelError: Int) throws {
        let ref = try Self.reference
        for (key, folder) in Self.folders.sorted(by: { $0.key < $1.key }) {
            let pipeline = try open(folder)
            for steps in [1, 4] {
                let r = try DiffusersRequest(ref, key: "\(key).request_\(steps)").request
                XCTAssertEqual(r.guidanceScale, 0)
                XCTAssertEqual(pipeline.schedulerKind(for: r), .eulerAncestral)
                try assertDraws(pipeline, r, like: "\(key).image_\(steps)", in: ref, maxPixelError: maxPixelError)
            }
        }
    }
}
