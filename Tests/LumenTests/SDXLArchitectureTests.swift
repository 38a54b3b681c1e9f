import Foundation
import Lumen
import LumenRuntime
import XCTest

/// The full SDXL base architecture's graphs, built from its configs (tools/sdxl_param_counts.py
/// writes them and diffusers/transformers' parameter counts on PyTorch's meta device): every
/// network asks for as many parameters as diffusers has. Shapes only: the weights are views of one
/// shared zero buffer, so the 3.5 billion parameters cost no memory.
final class SDXLArchitectureTests: XCTestCase {
    static let configs = Fixtures.root + "/sdxl-configs"

    /// Hands out zero tensors that share one buffer, counting each name's parameters once.
    final class ShapeOnlyWeights: WeightStore {
        private var shared: TensorStorage?
        private var seen: Set<String> = []
        private(set) var parameterCount = 0

        func tensor(_ name: String, shape: Shape) throws -> Tensor {
            if seen.insert(name).inserted { parameterCount += shape.count }
            let bytes = max(2, shape.count * 2)
            if (shared?.byteCount ?? 0) < bytes { shared = try TensorStorage(byteCount: bytes) }
            return try Tensor(shape: shape, dtype: .f16, storage: shared!)
        }
    }

    private func config<T: Decodable>(_ type: T.Type, _ name: String) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(contentsOf: URL(fileURLWithPath: Self.configs + "/\(name)/config.json")))
    }

    func testParameterCountsMatchDiffusers() throws {
        let expected = try JSONDecoder().decode([String: Int].self, from: Data(contentsOf: URL(fileURLWithPath: Self.configs + "/param_counts.json")))
        var counts: [String: Int] = [:]
        let g = Graph()

        let text = ShapeOnlyWeights()
        _ = try CLIPTextModel(config: try config(CLIPTextConfig.self, "text_encoder")).build(g, ids: try g.input("ids", shape: [1, 77], dtype: .i32), weights: text)
        counts["text_encoder"] = text.parameterCount

        let text2 = ShapeOnlyWeights()
        let encoder2 = CLIPTextModel(config: try config(CLIPTextConfig.self, "text_encoder_2"))
        let out2 = try encoder2.build(g, ids: try g.input("ids2", shape: [1, 77], dtype: .i32), weights: text2)
        _ = try encoder2.textEmbeds(g, out2, eosRows: try g.input("rows", shape: [1], dtype: .i32), weights: text2)
        counts["text_encoder_2"] = text2.parameterCount

        let unetConfig = try config(UNet2DConditionConfig.self, "unet")
        let unet = ShapeOnlyWeights()
        _ = try UNet2DConditionModel(config: unetConfig).build(
            g, sample: try g.input("sample", shape: [2, 4, 128, 128]), timestep: try g.input("timestep", shape: [2]),
            context: try g.input("context", shape: [2, 77, 2048]), weights: unet,
            added: (try g.input("text_embeds", shape: [2, 1280]), try g.input("time_ids", shape: [2, 6])))
        counts["unet"] = unet.parameterCount

        let vae = ShapeOnlyWeights()
        let v = AutoencoderKL(config: try config(AutoencoderKLConfig.self, "vae"))
        _ = try v.decode(g, latents: try g.input("z", shape: [1, 4, 8, 8]), weights: vae)
        _ = try v.encode(g, image: try g.input("img", shape: [1, 3, 64, 64]), weights: vae)
        counts["vae"] = vae.parameterCount

        XCTAssertEqual(counts, expected)
        XCTAssertEqual(expected["unet"], 2_567_463_684)  // the published SDXL base UNet size, a check on the configs
    }
}
