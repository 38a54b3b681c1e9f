import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// The full Stable Diffusion 1.5 architecture, built from its configs alone with random f16
/// weights made in Swift: the parameter counts equal PyTorch's (tools/sd15_param_counts.py,
/// which builds the same configs with diffusers/transformers), and one UNet step at 64×64
/// latents runs on the CPU executor. This is part of the normal test run (about 15-30 s here).
final class SD15ArchitectureTests: XCTestCase {
    static let configs = Fixtures.root + "/sd15-configs"

    func testParameterCountsMatchDiffusers() throws {
        let text = try JSONDecoder().decode(CLIPTextConfig.self, from: Data(contentsOf: URL(fileURLWithPath: Self.configs + "/text_encoder/config.json")))
        let unet = try JSONDecoder().decode(UNet2DConditionConfig.self, from: Data(contentsOf: URL(fileURLWithPath: Self.configs + "/unet/config.json")))
        let vae = try JSONDecoder().decode(AutoencoderKLConfig.self, from: Data(contentsOf: URL(fileURLWithPath: Self.configs + "/vae/config.json")))

        let textWeights = RandomWeights(seed: 1)
        let g = Graph()
        _ = try CLIPTextModel(config: text).build(g, ids: try g.input("ids", shape: [1, 77], dtype: .i32), weights: textWeights)
        XCTAssertEqual(textWeights.parameterCount, 123_060_480)

        let vaeWeights = RandomWeights(seed: 2)
        let v = AutoencoderKL(config: vae)
        _ = try v.decode(g, latents: try g.input("z", shape: [1, 4, 8, 8]), weights: vaeWeights)
        _ = try v.encode(g, image: try g.input("img", shape: [1, 3, 64, 64]), weights: vaeWeights)
        XCTAssertEqual(vaeWeights.parameterCount, 83_653_863)

        // One UNet forward at 512×512 (64×64 latents), batch 1.
        let unetWeights = RandomWeights(seed: 3)
        let ug = Graph()
        let x = try ug.input("sample", shape: [1, 4, 64, 64])
        let t = try ug.input("timestep", shape: [1])
        let c = try ug.input("context", shape: [1, 77, 768])
        let y = try UNet2DConditionModel(config: unet).build(ug, sample: x, timestep: t, context: c, weights: unetWeights)
        XCTAssertEqual(unetWeights.parameterCount, 859_520_964)
        let program = try CPUExecutor().compile(ug, outputs: [y])
        var rng = SplitMix64(seed: 5)
        let sample = try Tensor(shape: x.shape, values: (0..<x.shape.count).map { _ in Float.random(in: -1...1, using: &rng) })
        let context = try Tensor(shape: c.shape, values: (0..<c.shape.count).map { _ in Float.random(in: -1...1, using: &rng) })
        let out = try program.run(["sample": sample, "timestep": try Tensor([981]), "context": context])[y]!
        XCTAssertEqual(out.shape, [1, 4, 64, 64])
        let values = out.toFloats()
        XCTAssertTrue(values.allSatisfy(\.isFinite), "UNet output has non-finite values")
        let meanAbs = values.reduce(0) { $0 + abs($1) } / Float(values.count)
        XCTAssertGreaterThan(meanAbs, 1e-3, "UNet output is (nearly) all zero")
    }
}
