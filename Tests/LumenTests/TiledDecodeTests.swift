import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// Tiled VAE decoding against diffusers' `AutoencoderKL.tiled_decode` of the tiny model's VAE with
/// small tiles (tools/make_tiled_fixtures.py), and its use by the pipeline.
final class TiledDecodeTests: XCTestCase {
    static let reference = Fixtures.root + "/tiled-vae-reference.safetensors"

    func layout(_ file: SafetensorsFile) throws -> VAETileLayout {
        let m = file.metadata
        return VAETileLayout(latentTileSize: Int(m["tile_latent_min_size"]!)!, sampleTileSize: Int(m["tile_sample_min_size"]!)!,
                             overlapFactor: Double(m["tile_overlap_factor"]!)!)
    }

    func checkTiledDecode(_ executor: any Executor, bound: Double) throws {
        let file = try SafetensorsFile(path: Self.reference)
        let layout = try layout(file)
        XCTAssertEqual([layout.overlapSize, layout.blendExtent, layout.rowLimit], [3, 8, 24])
        let model = try StableDiffusionModel.load(path: Fixtures.tinyFolder)
        let vae = AutoencoderKL(config: model.vaeConfig)
        for name in ["wide", "small"] {
            let latents = try file.tensor("\(name).latents")
            var compiled: [String: (program: any Program, output: Value)] = [:]
            var shapes: [String] = []
            let out = try AutoencoderKL.tiledDecode(latents: latents, layout: layout, decodeTile: { tile in
                let key = "\(tile.shape[2])x\(tile.shape[3])"
                if compiled[key] == nil {
                    let g = Graph()
                    let z = try g.input("latents", shape: tile.shape)
                    let y = try vae.decode(g, latents: z, weights: model.vaeWeights)
                    compiled[key] = (try executor.compile(g, outputs: [y]), y)
                }
                let p = compiled[key]!
                return try p.program.run(["latents": tile])[p.output]!
            }, finishedShape: { h, w in shapes.append("\(h)x\(w)") })
            let expected = try file.tensor("\(name).decoded")
            assertRelativeError(out, expected, below: bound, "tiled decode \(name) (\(executor.backendName))")
            XCTAssertEqual(Set(shapes).count, shapes.count, "each tile shape is decoded in one group")
            XCTAssertEqual(out.shape[3], layout.outputLength(latents.shape[3], scaleFactor: 8))
        }
    }

    func testTiledDecodeMatchesDiffusersOnCPU() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            try checkTiledDecode(CPUExecutor(), bound: 2e-5)
        }
    }

    func testTiledDecodeMatchesDiffusersOnVulkan() throws {
        let vulkan = try testVulkanExecutor()
        try checkTiledDecode(vulkan, bound: 1e-4)
        XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")
    }

    /// The tile layouts diffusers' defaults give and where `.auto` tiles.
    func testTileLayoutChoice() throws {
        var sd = AutoencoderKLConfig()
        sd.sampleSize = 512
        let d = VAETileLayout(config: sd)
        XCTAssertEqual([d.latentTileSize, d.sampleTileSize, d.overlapSize, d.blendExtent, d.rowLimit], [64, 512, 48, 128, 384])
        XCTAssertEqual(d.outputLength(96, scaleFactor: 8), 768)
        XCTAssertEqual(d.outputLength(125, scaleFactor: 8), 1000)
        XCTAssertFalse(d.tiles(latentHeight: 64, latentWidth: 64))

        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
        var r = GenerationRequest(prompt: "x")
        for (w, h) in [(64, 64), (80, 48), (48, 96)] {  // the pipeline fixtures' sizes decode untiled
            (r.width, r.height) = (w, h)
            XCTAssertNil(try pipeline.vaeTileLayout(for: r), "\(w)x\(h)")
        }
        (r.width, r.height) = (96, 96)  // above 2 × sample_size² pixels, which no longer matters: it fits
        XCTAssertNil(try pipeline.vaeTileLayout(for: r))
        r.vaeTiling = .off
        XCTAssertNil(try pipeline.vaeTileLayout(for: r))
        r.vaeTiling = .tiles(sampleSize: 32)
        (r.width, r.height) = (64, 64)
        XCTAssertEqual(try pipeline.vaeTileLayout(for: r), VAETileLayout(latentTileSize: 4, sampleTileSize: 32))
        r.vaeTiling = .tiles(sampleSize: 40)
        XCTAssertThrowsError(try pipeline.generate(r))
    }

    /// A whole generation with tiles: the image has the requested size, and off / auto agree
    /// where auto does not tile.
    func testPipelineDecodesInTiles() throws {
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
        var r = GenerationRequest(prompt: "a red circle")
        r.steps = 2
        (r.width, r.height) = (88, 56)
        r.vaeTiling = .tiles(sampleSize: 32)
        let tiled = try pipeline.generate(r)[0]
        XCTAssertEqual([tiled.width, tiled.height], [88, 56])
        r.vaeTiling = .off
        let whole = try pipeline.generate(r)[0]
        r.vaeTiling = .auto
        XCTAssertEqual(try pipeline.generate(r)[0].pixels, whole.pixels)
        XCTAssertNotEqual(tiled.pixels, whole.pixels, "tiling blends the seams")
    }

    /// diffusers' tiled encoding (`_tiled_encode`) of the tiny VAE with 32-pixel tiles: the
    /// blended moments of two images whose edge tiles are smaller.
    func checkTiledEncode(_ executor: any Executor, bound: Double) throws {
        let file = try SafetensorsFile(path: Self.reference)
        let layout = try layout(file)
        XCTAssertEqual([layout.encodeStride, layout.encodeBlendExtent, layout.encodeRowLimit], [24, 1, 3])
        let model = try StableDiffusionModel.load(path: Fixtures.tinyFolder)
        let vae = AutoencoderKL(config: model.vaeConfig)
        for name in ["encode.wide", "encode.small"] {
            let image = try file.tensor("\(name).image")
            XCTAssertTrue(layout.tilesImage(height: image.shape[2], width: image.shape[3]))
            var compiled: [String: (program: any Program, output: Value)] = [:]
            let out = try AutoencoderKL.tiledEncode(image: image, layout: layout, encodeTile: { tile in
                let key = "\(tile.shape[2])x\(tile.shape[3])"
                if compiled[key] == nil {
                    let g = Graph()
                    let x = try g.input("image", shape: tile.shape)
                    let y = try vae.encodeMoments(g, image: x, weights: model.vaeWeights)
                    compiled[key] = (try executor.compile(g, outputs: [y]), y)
                }
                let p = compiled[key]!
                return try p.program.run(["image": tile])[p.output]!
            })
            assertRelativeError(out, try file.tensor("\(name).moments"), below: bound, "tiled encode \(name) (\(executor.backendName))")
        }
    }

    func testTiledEncodeMatchesDiffusersOnCPU() throws { try forEachInstructionSet(modelInstructionSets) { _ in
            try checkTiledEncode(CPUExecutor(), bound: 2e-5)
        }
    }

    func testTiledEncodeMatchesDiffusersOnVulkan() throws {
        let vulkan = try testVulkanExecutor()
        try checkTiledEncode(vulkan, bound: 1e-4)
        XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")
    }

    /// Image-to-image with a tiled encoding: the pipeline chooses it as asked, keeps the size,
    /// and the seams change the result a little, not the whole picture.
    func testPipelineEncodesInTiles() throws {
        let pipeline = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu)
        let (w, h) = (88, 56)
        var rgb = [Float](repeating: 0, count: w * h * 3)
        for y in 0..<h { for x in 0..<w { for c in 0..<3 { rgb[(y * w + x) * 3 + c] = Float((x * (c + 1) + y * 3) % 97) / 96 } } }
        var r = GenerationRequest(prompt: "a red circle")
        r.steps = 4
        r.initImage = InitImage(width: w, height: h, rgb: rgb)
        r.strength = 0.5
        XCTAssertNil(try pipeline.vaeEncodeTileLayout(for: r), "auto does not tile an image this small on the CPU")
        let whole = try pipeline.generate(r)[0]
        r.vaeTiling = .tiles(sampleSize: 32)
        XCTAssertEqual(try pipeline.vaeEncodeTileLayout(for: r), VAETileLayout(latentTileSize: 4, sampleTileSize: 32))
        let tiled = try pipeline.generate(r)[0]
        XCTAssertEqual([tiled.width, tiled.height], [w, h])
        XCTAssertNotEqual(tiled.pixels, whole.pixels)
        r.vaeTiling = .off
        XCTAssertNil(try pipeline.vaeEncodeTileLayout(for: r))
        XCTAssertEqual(try pipeline.generate(r)[0].pixels, whole.pixels)
        r.initImage = nil
        r.vaeTiling = .tiles(sampleSize: 32)
        XCTAssertNil(try pipeline.vaeEncodeTileLayout(for: r), "no init image, nothing to encode")
    }

    /// A device that binds little: a whole generation on lavapipe told to bind activations of at
    /// most 120 KB. The pipeline decodes in 32-pixel tiles and builds the UNet's feed-forwards in
    /// chunks, and draws what the CPU draws with the same tiles (the chunking changes no value);
    /// unchunked, the same UNet is refused with a typed error naming the tensor.
    func testGenerationWithinASmallBindingLimit() throws {
        let limit = 120_000
        let vulkan = try testVulkanExecutor(options: VulkanExecutor.Options(maxActivationBinding: limit))
        XCTAssertEqual(vulkan.activationBindingLimit, limit)
        let small = try Pipeline(modelPath: Fixtures.tinyFolder, executor: vulkan)
        var r = GenerationRequest(prompt: "a red circle")
        r.steps = 3
        r.guidanceScale = 5
        r.seed = 11
        (r.width, r.height) = (96, 96)
        XCTAssertEqual(try small.vaeTileLayout(for: r), VAETileLayout(latentTileSize: 4, sampleTileSize: 32))
        let constrained = try small.generate(r)[0]
        XCTAssertEqual(vulkan.validationMessages.map(\.description), [], "validation messages")

        var onCPU = r
        onCPU.vaeTiling = .tiles(sampleSize: 32)
        let expected = try Pipeline(modelPath: Fixtures.tinyFolder, backend: .cpu).generate(onCPU)[0]
        var total = 0, worst = 0
        for (a, b) in zip(constrained.pixels, expected.pixels) {
            let d = abs(Int(a) - Int(b))
            total += d
            worst = max(worst, d)
        }
        XCTAssertLessThan(Double(total) / Double(expected.pixels.count), 1, "mean |Vulkan - CPU| in 8-bit levels")
        XCTAssertLessThanOrEqual(worst, 12)

        // The UNet without chunking needs a larger binding, and says which.
        let model = try StableDiffusionModel.load(path: Fixtures.tinyFolder)
        let g = Graph()
        let y = try UNet2DConditionModel(config: model.unetConfig).build(
            g, sample: try g.input("sample", shape: [2, 4, 12, 12]), timestep: try g.input("timestep", shape: [2]),
            context: try g.input("context", shape: [2, 77, model.unetConfig.crossAttentionDim]), weights: model.unetWeights)
        XCTAssertThrowsError(try vulkan.compile(g, outputs: [y])) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("binds activations of at most 120000 bytes") && text.contains("f32[2x144x256]"), text)
        }
    }
}
