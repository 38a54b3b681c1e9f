import Foundation
import Lumen
import LumenRuntime
import LumenTestSupport
import XCTest

/// An SDXL inpainting checkpoint as one single file with the original names (its UNet's conv_in
/// takes 9 channels), against diffusers' StableDiffusionXLInpaintPipeline on the folder
/// (inpaint-reference.safetensors, case sdxl-inpaint9). The file is written here rather than
/// committed: tiny-sdxl-inpaint shares tiny-sdxl's text encoders and VAE, so it is
/// tiny-sdxl-single-f16's encoders and VAE (the folder's own values in f16) and the inpainting
/// UNet's tensors under their original names. diffusers' `from_single_file(config=folder)` reads
/// such a file back as a 9-channel UNet (checked by hand with tools/make_sdxl_single_file_fixtures.py's
/// converters, 2026-12-04).
final class SDXLInpaintSingleFileTests: TemporaryDirectoryTestCase {
    func testSDXLInpaintingSingleFileMatchesDiffusers() throws {
        let base = try SafetensorsFile(path: Fixtures.root + "/tiny-sdxl-single-f16.safetensors")
        let folder = Fixtures.root + "/tiny-sdxl-inpaint"
        let unet = try SafetensorsFile(path: folder + "/unet/diffusion_pytorch_model.safetensors")
        let config = try JSONDecoder().decode(UNet2DConditionConfig.self,
                                              from: Data(contentsOf: URL(fileURLWithPath: folder + "/unet/config.json")))
        var tensors: [(name: String, tensor: Tensor)] = []
        for name in base.names where !name.hasPrefix("model.diffusion_model.") { tensors.append((name, try base.tensor(name))) }
        for name in unet.names { tensors.append((StableDiffusionModel.originalUNetName(name, config: config), try unet.tensor(name))) }
        let path = dir + "/tiny-sdxl-inpaint-single.safetensors"
        try SafetensorsWriter.write(tensors, to: path)

        try forEachInstructionSet(modelInstructionSets) { _ in
            let pipeline = try Pipeline(modelPath: path, backend: .cpu, configFolder: folder)
            XCTAssertTrue(pipeline.model.isInpainting)
            let ref = try MaskedImageToImageTests.reference
            try assertMatchesFixture(pipeline, try MaskedImageToImageTests.request(ref, "sdxl-inpaint9"), "sdxl-inpaint9", in: ref,
                                     latentBound: 1e-3, maxPixelError: 1)
        }
    }
}
