import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// The CLIP text encoder, UNet and VAE against diffusers/transformers outputs, from both the
/// diffusers folder and the single-file checkpoint. The fixture weights are f16 and the
/// reference ran in f32 on the same (upcast) weights, so the only differences are f32
/// rounding order: relative errors of order 1e-6, bounded here at 1e-5 (2e-5 for the UNet and
/// VAE, whose outputs pass through ~20 layers).
final class ModelFixtureTests: XCTestCase {
    static let layouts: [(String, () throws -> StableDiffusionModel)] = [
        ("folder", { try StableDiffusionModel.load(path: Fixtures.tinyFolder) }),
        ("single-file", { try StableDiffusionModel.load(path: Fixtures.tinySingleFile, configFolder: Fixtures.tinyFolder) }),
    ]

    func testTextEncoderMatchesTransformers() throws { try forEachInstructionSet(modelInstructionSets) { _ in try checkTextEncoder(CPUExecutor(), bound: 1e-5) } }
    func testUNetMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in try checkUNet(CPUExecutor(), bound: 2e-5) } }
    func testVAEDecodeAndEncodeMatchDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in try checkVAE(CPUExecutor(), bound: 2e-5) } }

    /// The same three networks on the Vulkan executor (lavapipe in CI) with the validation layer
    /// on: f32 activations, other summation orders than the CPU's, so bounds of 1e-4.
    func testNetworksOnVulkanMatchDiffusers() throws {
        let vulkan = try testVulkanExecutor()
        try checkTextEncoder(vulkan, bound: 1e-4)
        try checkUNet(vulkan, bound: 1e-4)
        try checkVAE(vulkan, bound: 1e-4)
        XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")
    }

    func checkTextEncoder(_ executor: any Executor, bound: Double) throws {
        let ids64 = try Fixtures.referenceTensor("text.input_ids")
        let ids = try Tensor(shape: ids64.shape, indices: ids64.toInts().map(Int32.init))
        for (layout, load) in Self.layouts {
            let model = try load()
            let g = Graph()
            let input = try g.input("ids", shape: ids.shape, dtype: .i32)
            let out = try CLIPTextModel(config: model.textEncoderConfig).build(g, ids: input, weights: model.textEncoderWeights)
            let penultimate = out.hiddenStates[out.hiddenStates.count - 2]
            let result = try executor.compile(g, outputs: [out.lastHiddenState, penultimate]).run(["ids": ids])
            assertRelativeError(result[out.lastHiddenState]!, try Fixtures.referenceTensor("text.last_hidden_state"), below: bound, "last hidden state (\(layout), \(executor.backendName))")
            assertRelativeError(result[penultimate]!, try Fixtures.referenceTensor("text.penultimate_hidden_state"), below: bound, "penultimate hidden state (\(layout), \(executor.backendName))")
        }
    }

    /// The feed-forwards computed in chunks of tokens (what an executor with a small binding limit
    /// gets) give diffusers' output too: a limit of 5 KB leaves one or two tokens a chunk.
    func testUNetWithChunkedFeedForwardMatchesDiffusers() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            try checkUNet(CPUExecutor(), bound: 2e-5, maxTensorBytes: 5000)
            let vulkan = try testVulkanExecutor()
            try checkUNet(vulkan, bound: 1e-4, maxTensorBytes: 5000)
            XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")
        }
    }

    func checkUNet(_ executor: any Executor, bound: Double, maxTensorBytes: Int? = nil) throws {
        for prefix in ["unet", "unet_odd"] {
            let sample = try Fixtures.referenceTensor("\(prefix).sample")
            let timestep = try Fixtures.referenceTensor("\(prefix).timestep")
            let context = try Fixtures.referenceTensor("\(prefix).encoder_hidden_states")
            for (layout, load) in Self.layouts {
                let model = try load()
                let g = Graph()
                let x = try g.input("sample", shape: sample.shape)
                let t = try g.input("timestep", shape: timestep.shape)
                let c = try g.input("context", shape: context.shape)
                let y = try UNet2DConditionModel(config: model.unetConfig).build(g, sample: x, timestep: t, context: c, weights: model.unetWeights,
                                                                                maxTensorBytes: maxTensorBytes)
                if maxTensorBytes != nil {
                    func concats(_ g: Graph) -> Int { g.nodes.filter { if case .concat = $0.op { return true } else { return false } }.count }
                    let plain = Graph()
                    _ = try UNet2DConditionModel(config: model.unetConfig).build(
                        plain, sample: try plain.input("sample", shape: sample.shape), timestep: try plain.input("timestep", shape: timestep.shape),
                        context: try plain.input("context", shape: context.shape), weights: model.unetWeights)
                    XCTAssertGreaterThan(concats(g), concats(plain), "the feed-forwards were chunked")
                }
                let out = try executor.compile(g, outputs: [y]).run(["sample": sample, "timestep": timestep, "context": context])
                assertRelativeError(out[y]!, try Fixtures.referenceTensor("\(prefix).out"), below: bound, "\(prefix) (\(layout), \(executor.backendName))")
            }
        }
    }

    func checkVAE(_ executor: any Executor, bound: Double) throws {
        let latents = try Fixtures.referenceTensor("vae.latents")
        let image = try Fixtures.referenceTensor("vae.image")
        for (layout, load) in Self.layouts {
            let model = try load()
            let vae = AutoencoderKL(config: model.vaeConfig)
            let g = Graph()
            let z = try g.input("latents", shape: latents.shape)
            let decoded = try vae.decode(g, latents: z, weights: model.vaeWeights)
            let x = try g.input("image", shape: image.shape)
            let (mean, logvar) = try vae.encode(g, image: x, weights: model.vaeWeights)
            let out = try executor.compile(g, outputs: [decoded, mean, logvar]).run(["latents": latents, "image": image])
            let on = "\(layout), \(executor.backendName)"
            assertRelativeError(out[decoded]!, try Fixtures.referenceTensor("vae.decoded"), below: bound, "VAE decode (\(on))")
            assertRelativeError(out[mean]!, try Fixtures.referenceTensor("vae.encoded_mean"), below: bound, "VAE encode mean (\(on))")
            assertRelativeError(out[logvar]!, try Fixtures.referenceTensor("vae.encoded_logvar"), below: bound, "VAE encode logvar (\(on))")
        }
    }

    func testEveryWeightOfTheFilesIsUsed() throws {
        // A model that ignored a tensor (a missing bias, a skipped norm) would still run; check
        // that building all three networks reads every floating-point tensor of the folder.
        let model = try StableDiffusionModel.load(path: Fixtures.tinyFolder)
        let g = Graph()
        let ids = try g.input("ids", shape: [1, 77], dtype: .i32)
        _ = try CLIPTextModel(config: model.textEncoderConfig).build(g, ids: ids, weights: model.textEncoderWeights)
        _ = try UNet2DConditionModel(config: model.unetConfig).build(
            g, sample: try g.input("x", shape: [1, 4, 8, 8]), timestep: try g.input("t", shape: [1]),
            context: try g.input("c", shape: [1, 77, model.unetConfig.crossAttentionDim]), weights: model.unetWeights)
        let vae = AutoencoderKL(config: model.vaeConfig)
        _ = try vae.decode(g, latents: try g.input("z", shape: [1, 4, 8, 8]), weights: model.vaeWeights)
        _ = try vae.encode(g, image: try g.input("img", shape: [1, 3, 64, 64]), weights: model.vaeWeights)
        for (store, name) in [(model.textEncoderWeights, "text encoder"), (model.unetWeights, "unet"), (model.vaeWeights, "vae")] {
            let all = Set(store.files.flatMap { f in f.entries.filter { $0.value.dtype?.isFloatingPoint == true }.map(\.key) })
            let used = Set(store.used.flatMap { [$0, String($0.dropFirst("text_model.".count))] })
            XCTAssertEqual(all.subtracting(used), [], "\(name): tensors never read")
        }
    }
}
