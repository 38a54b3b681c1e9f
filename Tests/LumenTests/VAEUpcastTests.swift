import Foundation
import Lumen
import LumenTestSupport
import LumenVulkan
import XCTest

/// The fp16 VAE problem: SDXL's VAE overflows f16 activations (diffusers' `force_upcast` in its
/// config, which makes diffusers decode in f32). A VAE whose config says so is compiled with f32
/// activations even on an executor asked for f16; one that says `force_upcast: false` (the fixed
/// fp16 VAEs) keeps the executor's choice. Latents large enough to overflow f16 (|z| up to ~1e5
/// after 1/scaling_factor, above f16's 65504) make the difference visible.
final class VAEUpcastTests: TemporaryDirectoryTestCase {
    static var folder: String { Fixtures.root + "/tiny-sdxl" }

    private func hugeLatents() throws -> Tensor {
        var rng = SplitMix64(seed: 15)
        let values = (0..<(4 * 8 * 8)).map { _ in Float(Double(rng.next() >> 11) / Double(1 << 53) * 2 - 1) * 1.2e4 }
        return try Tensor(shape: [1, 4, 8, 8], values: values)
    }

    func testForceUpcastDecodesInF32OnF16Vulkan() throws {
        _ = try testVulkanExecutor()
        let f16 = try VulkanExecutor(validation: true, options: .init(profile: false, activations: .f16))
        guard f16.usesF16Activations else { throw XCTSkip("this Vulkan device has no 16-bit storage") }
        let latents = try hugeLatents()
        let cpu = try Pipeline(modelPath: Self.folder, backend: .cpu).decode(latents)[0]
        let pipeline = try Pipeline(modelPath: Self.folder, executor: f16)
        XCTAssertTrue(pipeline.model.vaeConfig.forceUpcast)
        let image = try pipeline.decode(latents)[0]
        let d = pixelDifference(image.pixels.map(Int.init), cpu.pixels.map(Int.init))
        // f32 activations on lavapipe against the CPU executor: SDXLFixtureTests' lavapipe bound.
        XCTAssertLessThanOrEqual(d.largest, 12)
        XCTAssertLessThan(d.mean, 1)
        let distinct = Set(image.pixels)
        XCTAssertGreaterThan(distinct.count, 8, "a flat image")

        // The same VAE with force_upcast false runs in f16 and overflows: refused with a typed
        // error, never a black or NaN image (so the case above tests something).
        let vae = dir + "/vae"
        try FileManager.default.createDirectory(atPath: vae, withIntermediateDirectories: true)
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.folder + "/vae/config.json"))) as! [String: Any]
        config["force_upcast"] = false
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: vae + "/config.json"))
        try FileManager.default.createSymbolicLink(atPath: vae + "/diffusion_pytorch_model.safetensors",
                                                   withDestinationPath: Self.folder + "/vae/diffusion_pytorch_model.safetensors")
        let unforced = try Pipeline(modelPath: Self.folder, executor: f16, vaePath: vae)
        XCTAssertFalse(unforced.model.vaeConfig.forceUpcast)
        XCTAssertThrowsError(try unforced.decode(latents)) { error in
            XCTAssertTrue("\(error)".contains("non-finite") || "\(error)".contains("NaN") || "\(error)".contains("inf"), "\(error)")
        }
    }
}
