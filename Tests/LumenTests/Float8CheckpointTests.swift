import Foundation
import Lumen
import LumenRuntime
import LumenTestSupport
import XCTest

/// A float8 (E4M3) single-file checkpoint against diffusers' from_single_file image of it
/// (tools/make_fp8_fixtures.py). Lumen refused the dtype; diffusers widens each weight exactly.
final class Float8CheckpointTests: XCTestCase {
    func testE4M3CheckpointMatchesDiffusers() throws {
        let dir = Fixtures.root + "/fp8"
        let file = try SafetensorsFile(path: dir + "/tiny-sd-e4m3.safetensors")
        let conv = "model.diffusion_model.input_blocks.0.0.weight"
        XCTAssertEqual(file.entries[conv]?.fileDType, "F8_E4M3")
        XCTAssertEqual(try file.tensor(conv).dtype, .f16)
        let ref = try SafetensorsFile(path: dir + "/reference.safetensors")
        let fields = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(XCTUnwrap(ref.metadata["request"]).utf8)) as? [String: Any])
        let out = NSTemporaryDirectory() + "lumen-fp8-\(UUID().uuidString).png"
        defer { try? FileManager.default.removeItem(atPath: out) }
        try assertCLIDraws([fields["prompt"] as! String, "--model", dir + "/tiny-sd-e4m3.safetensors",
                            "--config", Fixtures.tinyFolder, "--negative-prompt", fields["negative_prompt"] as! String,
                            "--steps", "\(fields["num_inference_steps"] as! Int)", "--guidance", "\(fields["guidance_scale"] as! Double)",
                            "--width", "64", "--height", "64", "--seed", "\(fields["seed"] as! Int)"], to: out, like: "image", in: ref)
    }
}
