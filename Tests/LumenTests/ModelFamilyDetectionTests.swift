import Foundation
import Lumen
import XCTest

/// `lumen info`'s family and variant, and families Lumen does not run refused naming what was found.
final class ModelFamilyDetectionTests: TemporaryDirectoryTestCase {
    func testVariantsAreNamed() throws {
        XCTAssertEqual(try StableDiffusionModel.load(path: Fixtures.root + "/tiny-sdxl").variant, "base (two text encoders)")
        XCTAssertEqual(try StableDiffusionModel.load(path: Fixtures.root + "/tiny-sdxl-single-f16.safetensors").variant, "base (two text encoders)")
        XCTAssertEqual(try StableDiffusionModel.load(path: Fixtures.tinyFolder).variant, "standard")
        XCTAssertTrue(try StableDiffusionModel.load(path: Fixtures.root + "/tiny-sd-inpaint").variant.contains("inpainting"))
        let (status, out, err) = try runLumen(["info", Fixtures.root + "/tiny-sdxl-single-f16.safetensors"])
        XCTAssertEqual(status, 0, err)
        XCTAssertTrue(out.contains("family:  Stable Diffusion XL") && out.contains("variant: base (two text encoders)"), out)
        XCTAssertTrue(out.contains("stable-diffusion-xl-base-1.0"), out)
    }

    func testKolorsIsRefusedByName() throws {
        let folder = dir + "/kolors"
        for sub in ["unet", "vae", "text_encoder"] {
            try FileManager.default.createDirectory(atPath: folder + "/" + sub, withIntermediateDirectories: true)
        }
        try Data(#"{"_class_name": "KolorsPipeline"}"#.utf8).write(to: URL(fileURLWithPath: folder + "/model_index.json"))
        try Data(#"{"architectures": ["ChatGLMModel"]}"#.utf8).write(to: URL(fileURLWithPath: folder + "/text_encoder/config.json"))
        XCTAssertThrowsError(try StableDiffusionModel.load(path: folder)) { error in
            XCTAssertTrue("\(error)".contains("Kolors") && "\(error)".contains("ChatGLM"), "\(error)")
        }
        let file = dir + "/kolors-unet.safetensors"
        try SafetensorsWriter.write([("model.diffusion_model.encoder_hid_proj.weight", try Tensor(zeros: [2, 2], dtype: .f16)),
                                     ("model.diffusion_model.input_blocks.0.0.weight", try Tensor(zeros: [2, 4, 3, 3], dtype: .f16))], to: file)
        XCTAssertThrowsError(try StableDiffusionModel.load(path: file)) { error in
            XCTAssertTrue("\(error)".contains("Kolors") && "\(error)".contains("encoder_hid_proj"), "\(error)")
        }
    }
}
