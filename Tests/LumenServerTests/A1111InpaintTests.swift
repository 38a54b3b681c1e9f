import AsyncHTTPClient
import Foundation
import Lumen
import LumenServer
import NIOCore
import NIOHTTP1
import XCTest

/// `POST /sdapi/v1/img2img` with A1111's mask fields, over real HTTP: each image equals the
/// library's masked image-to-image for the settings the fields stand for (the mask binarized as
/// A1111 reads it, its blur, the crop of "Only masked"), and bad fields are 400s naming them.
final class A1111InpaintTests: ServerTestCase {
    let (w, h) = (64, 64)

    /// A 64×64 picture from the demo model, to repaint.
    func source() throws -> RGBImage {
        try reference { $0.prompt = "a red circle on a blue background"; $0.width = 64; $0.height = 64; $0.seed = 3; $0.steps = 4 }[0]
    }

    func initImage(_ image: RGBImage) -> InitImage {
        InitImage(width: image.width, height: image.height, rgb: image.pixels.map { Float($0) / 255 })
    }

    /// A grey mask: the left 24 columns white, and in the top row of latents an 8×8 block at
    /// level 128 (kept by A1111, whose threshold is > 128, though diffusers' ≥ 0.5 repaints it)
    /// and one at 129 (repainted by both).
    func greyMask() -> (levels: [UInt8], binary: [Bool]) {
        var levels = [UInt8](repeating: 0, count: w * h)
        for y in 0..<h {
            for x in 0..<w {
                if x < 24 { levels[y * w + x] = 255 }
                if y < 8 && (40..<48).contains(x) { levels[y * w + x] = 128 }
                if y < 8 && (48..<56).contains(x) { levels[y * w + x] = 129 }
            }
        }
        return (levels, levels.map { $0 > 128 })
    }

    func maskImage(_ on: [Bool]) -> InitImage {
        InitImage(width: w, height: h, rgb: on.flatMap { $0 ? [Float(1), 1, 1] : [0, 0, 0] })
    }

    func greyPNG(_ levels: [UInt8]) throws -> String {
        try pngData(RGBImage(width: w, height: h, pixels: levels.flatMap { [$0, $0, $0] })).base64EncodedString()
    }

    func image(_ r: Reply, file: StaticString = #filePath, line: UInt = #line) throws -> (image: RGBImage, text: [String: String]) {
        XCTAssertEqual(r.status, .ok, String(decoding: r.body, as: UTF8.self), file: file, line: line)
        return try decodePNG(XCTUnwrap((r.json["images"] as? [String])?.first, file: file, line: line))
    }

    /// The fields every request here shares, and the library request they stand for.
    func fields(_ source: String, _ extra: [String: Any]) -> [String: Any] {
        var o: [String: Any] = ["init_images": [source], "prompt": "a yellow triangle", "steps": 5, "cfg_scale": 4, "seed": 21,
                                "denoising_strength": 0.9, "sampler_name": "DDIM"]
        for (k, v) in extra { o[k] = v }
        return o
    }

    func library(_ initImage: InitImage, _ configure: (inout GenerationRequest) -> Void) throws -> [UInt8] {
        try reference {
            $0.prompt = "a yellow triangle"; $0.negativePrompt = ""; $0.promptSyntax = .a1111; $0.steps = 5; $0.guidanceScale = 4
            $0.seed = 21; $0.strength = 0.9; $0.scheduler = .ddim; $0.width = 64; $0.height = 64; $0.initImage = initImage
            configure(&$0)
        }[0].pixels
    }

    func testMaskFieldsMatchTheLibrarysMaskedImageToImage() async throws {
        let picture = try source()
        let initial = initImage(picture)
        let b64 = try pngData(picture).base64EncodedString()
        let (levels, binary) = greyMask()
        let maskB64 = try greyPNG(levels)
        try await withServer { base in
            let url = base + "/sdapi/v1/img2img"
            // 1. The whole picture, no blur: the mask binarized at > 128.
            let plain = try self.image(try await self.send(.POST, url, json: self.fields(b64, [
                "mask": maskB64, "mask_blur": 0, "inpaint_full_res": false, "inpainting_fill": 1, "inpainting_mask_invert": 0,
            ])))
            let want = try self.library(initial) { $0.mask = self.maskImage(binary) }
            XCTAssertEqual(plain.image.pixels, want)
            // The binarization mattered: the grey mask as diffusers reads it repaints the 128 block too.
            let diffusersRead = try self.library(initial) {
                $0.mask = InitImage(width: self.w, height: self.h, rgb: levels.flatMap { [Float($0) / 255, Float($0) / 255, Float($0) / 255] })
            }
            XCTAssertNotEqual(plain.image.pixels, diffusersRead)
            let unmasked = try self.library(initial) { _ in }
            XCTAssertNotEqual(plain.image.pixels, unmasked, "the mask changed nothing")
            XCTAssertFalse(plain.text["parameters"]?.contains("Mask blur") ?? true)

            // 2. A1111's defaults: mask blur 4, "Only masked" with no padding, fill "original".
            let defaults = try await self.send(.POST, url, json: self.fields(b64, ["mask": "data:image/png;base64," + maskB64]))
            let d = try self.image(defaults)
            let wantDefaults = try self.library(initial) { $0.mask = self.maskImage(binary); $0.maskBlur = 4; $0.maskCrop = 0 }
            XCTAssertEqual(d.image.pixels, wantDefaults)
            XCTAssertNotEqual(d.image.pixels, want)
            let text = try XCTUnwrap(d.text["parameters"])
            XCTAssertTrue(text.contains("Mask blur: 4") && text.contains("Inpaint area: Only masked, Masked area padding: 0"), text)
            let echoed = try XCTUnwrap(defaults.json["parameters"] as? [String: Any])
            XCTAssertNil(echoed["mask"], "the mask is not echoed back, as A1111 does not")
            XCTAssertNil(echoed["init_images"])

            // 3. "Only masked" with padding and an equal blur per axis.
            let cropped = try self.image(try await self.send(.POST, url, json: self.fields(b64, [
                "mask": maskB64, "mask_blur_x": 3, "mask_blur_y": 3, "inpaint_full_res": true, "inpaint_full_res_padding": 8,
            ])))
            XCTAssertEqual(cropped.image.pixels, try self.library(initial) { $0.mask = self.maskImage(binary); $0.maskBlur = 3; $0.maskCrop = 8 })
        }
    }

    /// An RGBA mask whose alpha is not opaque everywhere is its alpha channel (A1111's
    /// create_binary_mask); `inpainting_mask_invert` 1 repaints the rest.
    func testAlphaMaskAndInvert() async throws {
        let picture = try source()
        let initial = initImage(picture)
        let b64 = try pngData(picture).base64EncodedString()
        var rgba = [UInt8](repeating: 0, count: w * h * 4)
        var opaque = [Bool](repeating: false, count: w * h)
        for y in 0..<h {
            for x in 0..<w {
                let p = y * w + x
                let alpha: UInt8 = y < 32 ? 255 : (x < 32 ? 129 : 128)
                // The colour says the opposite of the alpha, so reading grey levels would fail.
                let grey: UInt8 = alpha > 128 ? 0 : 255
                rgba[4 * p] = grey; rgba[4 * p + 1] = grey; rgba[4 * p + 2] = grey; rgba[4 * p + 3] = alpha
                opaque[p] = alpha > 128
            }
        }
        let maskB64 = rgbaPNG(width: w, height: h, rgba: rgba).base64EncodedString()
        try await withServer { base in
            let url = base + "/sdapi/v1/img2img"
            let r = try self.image(try await self.send(.POST, url, json: self.fields(b64, [
                "mask": maskB64, "inpainting_mask_invert": 1, "inpaint_full_res": 0, "mask_blur": 2,
            ])))
            XCTAssertEqual(r.image.pixels, try self.library(initial) { $0.mask = self.maskImage(opaque.map { !$0 }); $0.maskBlur = 2 })
            XCTAssertTrue(r.text["parameters"]?.contains("Mask mode: Inpaint not masked") == true)
            let notInverted = try self.image(try await self.send(.POST, url, json: self.fields(b64, [
                "mask": maskB64, "inpaint_full_res": false, "mask_blur": 2,
            ])))
            XCTAssertEqual(notInverted.image.pixels, try self.library(initial) { $0.mask = self.maskImage(opaque); $0.maskBlur = 2 })

            // A blank mask with "Only masked" is plain image-to-image, as A1111 falls back to.
            let blank = try self.image(try await self.send(.POST, url, json: self.fields(b64, [
                "mask": try self.greyPNG([UInt8](repeating: 128, count: self.w * self.h)),
            ])))
            XCTAssertEqual(blank.image.pixels, try self.library(initial) { _ in })
        }
    }

    func testBadMaskFieldsAre400sNamingTheField() async throws {
        let picture = try source()
        let b64 = try pngData(picture).base64EncodedString()
        let maskB64 = try greyPNG(greyMask().levels)
        try await withServer { base in
            func check(_ extra: [String: Any], param: String, _ text: String, file: StaticString = #filePath, line: UInt = #line) async throws {
                let r = try await self.send(.POST, base + "/sdapi/v1/img2img", json: self.fields(b64, extra))
                XCTAssertEqual(r.status, .badRequest, String(decoding: r.body, as: UTF8.self), file: file, line: line)
                // FastAPI's shape, as A1111 answers: the message names the field first.
                let message = r.json["detail"] as? String ?? ""
                XCTAssertTrue(message.hasPrefix(param), "\"\(message)\" does not start with \"\(param)\"", file: file, line: line)
                XCTAssertTrue(message.contains(text), "\"\(message)\" does not say \"\(text)\"", file: file, line: line)
            }
            let small = try self.pngData(RGBImage(width: 32, height: 64, pixels: [UInt8](repeating: 255, count: 32 * 64 * 3)))
            try await check(["mask": small.base64EncodedString()], param: "mask", "same size")
            try await check(["mask": Data("not a png".utf8).base64EncodedString()], param: "mask", "PNG")
            try await check(["mask": 5], param: "mask", "base64 PNG")
            try await check(["mask": maskB64, "inpainting_fill": 0], param: "inpainting_fill", "only 1 (original")
            try await check(["mask": maskB64, "inpainting_fill": 2], param: "inpainting_fill", "latent noise")
            try await check(["mask": maskB64, "inpainting_mask_invert": 2], param: "inpainting_mask_invert", "expected 0")
            try await check(["mask": maskB64, "mask_blur_x": 2, "mask_blur_y": 3], param: "mask_blur_y", "one standard deviation")
            try await check(["mask": maskB64, "mask_blur": 4, "mask_blur_x": 2], param: "mask_blur_x", "differs from mask_blur")
            try await check(["mask": maskB64, "mask_blur": -1], param: "mask_blur", "0…")
            try await check(["mask": maskB64, "mask_blur": 1.5], param: "mask_blur", "integer")
            try await check(["mask": maskB64, "inpaint_full_res": "yes"], param: "inpaint_full_res", "true or false")
            try await check(["mask": maskB64, "inpaint_full_res_padding": -3], param: "inpaint_full_res_padding", "0…")
        }
    }
}
