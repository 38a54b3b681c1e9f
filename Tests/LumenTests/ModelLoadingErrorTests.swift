import Foundation
import Lumen
import XCTest

/// Model folders and files Lumen cannot use are refused with messages naming what is wrong.
final class ModelLoadingErrorTests: TemporaryDirectoryTestCase {
    private func copyTiny() throws -> String {
        let path = dir + "/tiny"
        try FileManager.default.copyItem(atPath: Fixtures.tinyFolder, toPath: path)
        return path
    }

    func testEmptyFolderAndMissingPath() throws {
        XCTAssertThrowsError(try StableDiffusionModel.load(path: dir)) { error in
            guard case ModelFileError.missingFile(let p, let detail) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(p, dir)
            XCTAssertTrue(detail.contains("empty"))
        }
        XCTAssertThrowsError(try StableDiffusionModel.load(path: dir + "/absent")) { error in
            guard case ModelFileError.missingFile = error else { return XCTFail("\(error)") }
        }
    }

    /// Block types are a closed set decoded at load: an unknown one names the file and lists the valid ones.
    func testUnknownBlockTypeListsTheSupportedOnes() throws {
        let path = try copyTiny()
        let configPath = path + "/unet/config.json"
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: configPath))) as! [String: Any]
        var down = config["down_block_types"] as! [String]
        down[0] = "SimpleCrossAttnDownBlock2D"
        config["down_block_types"] = down
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: configPath))
        XCTAssertThrowsError(try StableDiffusionModel.load(path: path)) { error in
            let text = "\(error)"
            for part in [configPath, "SimpleCrossAttnDownBlock2D", "CrossAttnDownBlock2D, DownBlock2D"] {
                XCTAssertTrue(text.contains(part), "\(part) not in: \(text)")
            }
        }
    }

    func testMissingTensorAndWrongShapeNameTheTensor() throws {
        // A config that disagrees with the weights: cross_attention_dim 24 instead of 16.
        let path = try copyTiny()
        let configPath = path + "/unet/config.json"
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: configPath))) as! [String: Any]
        config["cross_attention_dim"] = 24
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: configPath))
        let model = try StableDiffusionModel.load(path: path)
        let g = Graph()
        XCTAssertThrowsError(try UNet2DConditionModel(config: model.unetConfig).build(
            g, sample: try g.input("x", shape: [1, 4, 8, 8]), timestep: try g.input("t", shape: [1]),
            context: try g.input("c", shape: [1, 77, 24]), weights: model.unetWeights)) { error in
            guard case ModelFileError.wrongShape(let file, let tensor, let expected, let got) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(file.hasSuffix("unet/diffusion_pytorch_model.safetensors"))
            XCTAssertTrue(tensor.hasSuffix("attn2.to_k.weight"), tensor)
            XCTAssertEqual(expected, [32, 24])
            XCTAssertEqual(got, [32, 16])
        }
        // A file without a tensor the config needs.
        let vaeFile = path + "/vae/diffusion_pytorch_model.safetensors"
        let original = try SafetensorsFile(path: vaeFile)
        let kept = try original.names.filter { $0 != "decoder.conv_out.bias" }.map { ($0, try original.tensor($0)) }
        try SafetensorsWriter.write(kept, to: vaeFile)
        let model2 = try StableDiffusionModel.load(path: path)
        let g2 = Graph()
        XCTAssertThrowsError(try AutoencoderKL(config: model2.vaeConfig).decode(
            g2, latents: try g2.input("z", shape: [1, 4, 8, 8]), weights: model2.vaeWeights)) { error in
            guard case ModelFileError.missingTensor(let file, let tensor) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(file.hasSuffix("vae/diffusion_pytorch_model.safetensors"))
            XCTAssertEqual(tensor, "decoder.conv_out.bias")
        }
    }

    func testPickleOnlyAndOtherFamiliesAreRefused() throws {
        let path = try copyTiny()
        try FileManager.default.removeItem(atPath: path + "/unet/diffusion_pytorch_model.safetensors")
        try Data("not really a pickle".utf8).write(to: URL(fileURLWithPath: path + "/unet/diffusion_pytorch_model.bin"))
        XCTAssertThrowsError(try StableDiffusionModel.load(path: path)) { error in
            guard case ModelFileError.unsupported(let file, let detail) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(file.hasSuffix("diffusion_pytorch_model.bin"))
            XCTAssertTrue(detail.contains("safetensors") && detail.contains("pickle"), detail)
        }
        let ckpt = dir + "/model.ckpt"
        try Data([0x80, 0x02]).write(to: URL(fileURLWithPath: ckpt))
        XCTAssertThrowsError(try StableDiffusionModel.load(path: ckpt)) { error in
            guard case ModelFileError.unsupported(_, let detail) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(detail.contains("pickle"))
        }
        let sdxl = dir + "/sdxl"
        for sub in ["unet", "vae", "text_encoder", "text_encoder_2"] {
            try FileManager.default.createDirectory(atPath: sdxl + "/" + sub, withIntermediateDirectories: true)
        }
        // SDXL folders load (SDXLFixtureTests); one without its second tokenizer is named as such.
        XCTAssertThrowsError(try StableDiffusionModel.load(path: sdxl)) { error in
            guard case ModelFileError.missingFile(let file, let detail) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(file.hasSuffix("tokenizer_2") && detail.contains("SDXL"), "\(file): \(detail)")
        }
        let flux = dir + "/flux.safetensors"
        try SafetensorsWriter.write([("double_blocks.0.img_attn.qkv.weight", try Tensor(zeros: [3, 1], dtype: .f16))], to: flux)
        XCTAssertThrowsError(try StableDiffusionModel.load(path: flux)) { error in
            guard case ModelFileError.unsupported(_, let detail) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(detail.contains("Flux"), detail)
        }
    }

    func testMalformedConfigNamesFileAndKey() throws {
        let path = try copyTiny()
        try Data(#"{"block_out_channels": "wide"}"#.utf8).write(to: URL(fileURLWithPath: path + "/unet/config.json"))
        XCTAssertThrowsError(try StableDiffusionModel.load(path: path)) { error in
            guard case ModelFileError.malformed(let file, let detail) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(file.hasSuffix("unet/config.json"))
            XCTAssertTrue(detail.contains("block_out_channels"), detail)
        }
    }

    func testSingleFileConfigInferredFromShapes() throws {
        // Without a config folder the shapes give everything but the head count (SD 1.x: 8).
        let model = try StableDiffusionModel.load(path: Fixtures.tinySingleFile)
        let folder = try StableDiffusionModel.load(path: Fixtures.tinyFolder)
        XCTAssertEqual(model.unetConfig.blockOutChannels, folder.unetConfig.blockOutChannels)
        XCTAssertEqual(model.unetConfig.layersPerBlock, folder.unetConfig.layersPerBlock)
        XCTAssertEqual(model.unetConfig.downBlockTypes, folder.unetConfig.downBlockTypes)
        XCTAssertEqual(model.unetConfig.upBlockTypes, folder.unetConfig.upBlockTypes)
        XCTAssertEqual(model.unetConfig.crossAttentionDim, folder.unetConfig.crossAttentionDim)
        XCTAssertEqual(model.vaeConfig.blockOutChannels, folder.vaeConfig.blockOutChannels)
        XCTAssertEqual(model.vaeConfig.layersPerBlock, folder.vaeConfig.layersPerBlock)
        XCTAssertEqual(model.textEncoderConfig.hiddenSize, folder.textEncoderConfig.hiddenSize)
        XCTAssertEqual(model.textEncoderConfig.numHiddenLayers, folder.textEncoderConfig.numHiddenLayers)
        XCTAssertEqual(model.textEncoderConfig.intermediateSize, folder.textEncoderConfig.intermediateSize)
        XCTAssertEqual(model.layout, .singleFile)
        XCTAssertEqual(model.family, .sd1)
    }
}
