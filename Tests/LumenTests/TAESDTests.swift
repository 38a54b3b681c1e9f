import Foundation
import Lumen
import LumenTestSupport
import XCTest

/// TAESD's decoder against diffusers' `AutoencoderTiny` (tools/make_taesd_fixtures.py): a tiny random
/// model as a diffusers folder and as the original taesd_decoder single file, on the CPU (each
/// instruction set) and on lavapipe.
final class TAESDTests: XCTestCase {
    static var folder: String { Fixtures.root + "/taesd" }

    func check(_ executor: any Executor, bound: Double, _ what: String) throws {
        let ref = try SafetensorsFile(path: Self.folder + "/reference.safetensors")
        for path in [Self.folder + "/tiny", Self.folder + "/tiny_decoder.safetensors"] {
            let taesd = try AutoencoderTinyDecoder(path: path)
            XCTAssertEqual(taesd.config.blocks, [1, 2, 1, 1])  // a folder's config; the single file's from its shapes
            XCTAssertEqual(taesd.config.latentChannels, 4)
            let out = try taesd.decode(try ref.tensor("latents"), executor: executor)
            assertRelativeError(out, try ref.tensor("sample"), below: bound, "\(what): \((path as NSString).lastPathComponent)")
        }
    }

    func testDecoderEqualsDiffusersOnCPU() throws {
        try forEachInstructionSet(modelInstructionSets) { isa in try check(CPUExecutor(), bound: 1e-5, "CPU \(isa)") }
    }

    func testDecoderEqualsDiffusersOnVulkan() throws {
        // Measured 6.9e-7 here, as on the CPU (the fixture's weights are f32 values rounded to f16).
        try check(try testVulkanExecutor(), bound: 1e-5, "lavapipe")
    }

    func testBadFilesAreRefusedByName() {
        XCTAssertThrowsError(try AutoencoderTinyDecoder(path: Fixtures.tinyFolder + "/vae/diffusion_pytorch_model.safetensors")) {
            XCTAssertTrue("\($0)".contains("not a TAESD decoder") && "\($0)".contains("diffusion_pytorch_model.safetensors"), "\($0)")
        }
        XCTAssertThrowsError(try AutoencoderTinyDecoder(path: Self.folder + "/none")) {
            XCTAssertTrue("\($0)".contains("none"), "\($0)")
        }
    }
}
