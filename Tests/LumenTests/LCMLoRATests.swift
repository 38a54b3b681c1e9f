import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// The LCM-LoRA recipe (tools/make_lcm_lora_fixtures.py): a LoRA merged into tiny SD / SDXL,
/// LCMScheduler made from the model's own scheduler config (`--scheduler lcm`), 4 steps at
/// guidance 1 (no negative batch), against diffusers' pipelines.
final class LCMLoRATests: XCTestCase {
    static var reference: SafetensorsFile { get throws { try SafetensorsFile(path: Fixtures.root + "/lcm-lora-reference.safetensors") } }
    static let models = [("sd", Fixtures.root + "/tiny-sd", Fixtures.root + "/lora/tiny-kohya.safetensors"),
                         ("sdxl", Fixtures.root + "/tiny-sdxl", Fixtures.root + "/lora/tiny-sdxl-kohya.safetensors")]

    func testLCMLoRARecipeMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            try check({ try Pipeline(modelPath: $0, backend: .cpu, loras: [LoRAWeight(path: $1)]) }, maxPixelError: 1)
        }
    }

    func testLCMLoRARecipeOnVulkanMatchesDiffusers() throws {
        let vulkan = try testVulkanExecutor()
        // The bound of the other lavapipe pipeline tests (SDXLFixtureTests).
        try check({ try Pipeline(modelPath: $0, executor: vulkan, loras: [LoRAWeight(path: $1)]) }, maxPixelError: 12)
        XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")
    }

    private func check(_ open: (String, String) throws -> Pipeline, maxPixelError: Int) throws {
        let ref = try Self.reference
        for (key, folder, lora) in Self.models {
            var r = try DiffusersRequest(ref, key: "\(key).request").request
            r.scheduler = .lcm
            XCTAssertEqual(r.guidanceScale, 1)
            try assertDraws(try open(folder, lora), r, like: "\(key).image", in: ref, maxPixelError: maxPixelError)
        }
    }
}
