import AsyncHTTPClient
import Foundation
import Lumen
import LumenServer
import NIOCore
import NIOHTTP1
import XCTest

/// `POST /v1/images/edits` (OpenAI's multipart form): image-to-image without a mask, inpainting
/// with one, each image equal pixel for pixel to the library's for the same init image, mask and
/// seed; and the multipart parser's bounds and errors.
final class ImageEditsTests: ServerTestCase {
    func post(_ base: String, _ form: (body: Data, contentType: String)) async throws -> Reply {
        try await send(.POST, base + "/v1/images/edits", raw: form.body, headers: [("Content-Type", form.contentType)])
    }

    /// A 64×64 picture from the demo model, to edit.
    func source() throws -> RGBImage {
        try reference { $0.prompt = "a red circle on a blue background"; $0.width = 64; $0.height = 64; $0.seed = 3; $0.steps = 4 }[0]
    }

    func testEditWithoutAMaskIsImageToImage() async throws {
        let image = try source()
        try await withServer { base in
            let r = try await self.post(base, self.multipart([
                ("prompt", "a green square"), ("model", "demo"), ("n", "1"), ("size", "64x64"), ("response_format", "b64_json"),
                ("seed", "11"), ("steps", "6"), ("guidance", "4.5"), ("scheduler", "euler-a"), ("strength", "0.6"),
                ("negative_prompt", "blurry"),
            ], files: [("image", "in.png", try self.pngData(image))]))
            XCTAssertEqual(r.status, .ok, String(decoding: r.body, as: UTF8.self))
            XCTAssertNotNil(r.json["created"] as? Int)
            let data = try XCTUnwrap(r.json["data"] as? [[String: Any]])
            XCTAssertEqual(data.count, 1)
            let got = try self.decodePNG(XCTUnwrap(data[0]["b64_json"] as? String)).image
            let want = try self.reference {
                $0.prompt = "a green square"; $0.negativePrompt = "blurry"; $0.seed = 11; $0.steps = 6; $0.guidanceScale = 4.5
                $0.scheduler = .eulerAncestral; $0.strength = 0.6
                $0.initImage = InitImage(width: 64, height: 64, rgb: image.pixels.map { Float(UInt32($0) * 257) / 65535 })
            }
            XCTAssertEqual(got.pixels, want[0].pixels)
            XCTAssertNotEqual(got.pixels, image.pixels, "the edit returned its input")

            // `image[]` (how clients send a list) is the same image; no size means the image's.
            let list = try await self.post(base, self.multipart([
                ("prompt", "a green square"), ("seed", "11"), ("steps", "6"), ("guidance", "4.5"), ("scheduler", "euler-a"),
                ("strength", "0.6"), ("negative_prompt", "blurry"),
            ], files: [("image[]", "in.png", try self.pngData(image))]))
            XCTAssertEqual(list.status, .ok, String(decoding: list.body, as: UTF8.self))
            let again = try self.decodePNG(XCTUnwrap((list.json["data"] as? [[String: Any]])?.first?["b64_json"] as? String)).image
            XCTAssertEqual(again.pixels, want[0].pixels)
        }
    }

    /// The form's other numbers (guidance_rescale, eta) arrive as text like the rest and are read
    /// as numbers (they were refused as "expected a number"): DDIM with eta draws noise each step.
    func testFormNumbersForRescaleAndEta() async throws {
        let image = try source()
        try await withServer { base in
            let r = try await self.post(base, self.multipart([
                ("prompt", "a green square"), ("seed", "5"), ("steps", "4"), ("guidance", "4.5"), ("scheduler", "ddim"),
                ("strength", "0.75"), ("guidance_rescale", "0.5"), ("eta", "0.3"),
            ], files: [("image", "in.png", try self.pngData(image))]))
            XCTAssertEqual(r.status, .ok, String(decoding: r.body, as: UTF8.self))
            let got = try self.decodePNG(XCTUnwrap((r.json["data"] as? [[String: Any]])?.first?["b64_json"] as? String)).image
            let want = try self.reference {
                $0.prompt = "a green square"; $0.seed = 5; $0.steps = 4; $0.guidanceScale = 4.5; $0.scheduler = .ddim
                $0.strength = 0.75; $0.guidanceRescale = 0.5; $0.eta = 0.3
                $0.initImage = InitImage(width: 64, height: 64, rgb: image.pixels.map { Float(UInt32($0) * 257) / 65535 })
            }
            XCTAssertEqual(got.pixels, want[0].pixels)
            let bad = try await self.post(base, self.multipart([("prompt", "x"), ("eta", "a lot")], files: [("image", "in.png", try self.pngData(image))]))
            XCTAssertEqual(bad.status, .badRequest)
        }
    }

    /// OpenAI's mask: transparent is edited, opaque kept; a pixel is repainted where 1 − alpha
    /// is at least one half (Lumen's white = repaint mask, binarized as diffusers does).
    func testEditWithATransparentMaskIsInpainting() async throws {
        let image = try source()
        let (w, h) = (64, 64)
        var rgba = [UInt8](repeating: 0, count: w * h * 4)
        var white = [UInt8](repeating: 0, count: w * h * 3)  // the same mask as Lumen's --mask reads it
        for y in 0..<h {
            for x in 0..<w {
                // The left half transparent; two 8×8 blocks (one latent each) of partial alpha.
                var alpha: UInt8 = x < 24 ? 0 : 255
                if (40..<48).contains(x) && y < 8 { alpha = 100 }  // mostly transparent: repainted
                if (48..<56).contains(x) && y < 8 { alpha = 200 }  // mostly opaque: kept
                let p = y * w + x
                rgba[4 * p] = 10; rgba[4 * p + 1] = 200; rgba[4 * p + 2] = 30; rgba[4 * p + 3] = alpha
                if alpha < 128 { white[3 * p] = 255; white[3 * p + 1] = 255; white[3 * p + 2] = 255 }
            }
        }
        try await withServer { base in
            let fields = [("prompt", "a yellow triangle"), ("seed", "5"), ("steps", "5"), ("guidance", "4"), ("scheduler", "ddim")]
            let r = try await self.post(base, self.multipart(fields, files: [
                ("image", "in.png", try self.pngData(image)), ("mask", "mask.png", self.rgbaPNG(width: w, height: h, rgba: rgba)),
            ]))
            XCTAssertEqual(r.status, .ok, String(decoding: r.body, as: UTF8.self))
            let got = try self.decodePNG(XCTUnwrap((r.json["data"] as? [[String: Any]])?.first?["b64_json"] as? String)).image
            let initImage = InitImage(width: w, height: h, rgb: image.pixels.map { Float(UInt32($0) * 257) / 65535 })
            let want = try self.reference {
                $0.prompt = "a yellow triangle"; $0.seed = 5; $0.steps = 5; $0.guidanceScale = 4; $0.scheduler = .ddim
                $0.strength = 1  // diffusers' inpainting default
                $0.initImage = initImage
                $0.mask = InitImage(width: w, height: h, rgb: white.map { Float($0) / 255 })
            }
            XCTAssertEqual(got.pixels, want[0].pixels)
            // The mask mattered: without it the same request is plain image-to-image.
            let unmasked = try self.reference {
                $0.prompt = "a yellow triangle"; $0.seed = 5; $0.steps = 5; $0.guidanceScale = 4; $0.scheduler = .ddim
                $0.strength = 1; $0.initImage = initImage
            }
            XCTAssertNotEqual(got.pixels, unmasked[0].pixels)
        }
    }

    func testEditErrorsNameTheFieldInOpenAIsShape() async throws {
        let image = try source()
        let png = try pngData(image)
        try await withServer({ $0.maxBodyBytes = 64 << 10 }) { base in
            func check(_ r: Reply, _ status: HTTPResponseStatus, param: String?, _ text: String, file: StaticString = #filePath, line: UInt = #line) {
                XCTAssertEqual(r.status, status, String(decoding: r.body, as: UTF8.self), file: file, line: line)
                let error = r.json["error"] as? [String: Any]
                XCTAssertEqual(error?["param"] as? String, param, file: file, line: line)
                XCTAssertNotNil(error?["type"] as? String, file: file, line: line)
                let message = error?["message"] as? String ?? ""
                XCTAssertTrue(message.contains(text), "\"\(message)\" does not say \"\(text)\"", file: file, line: line)
            }
            let ok: [(String, String)] = [("prompt", "x"), ("steps", "2")]
            let img = ("image", "in.png", png)

            check(try await self.send(.POST, base + "/v1/images/edits", json: ["prompt": "x"]), .badRequest, param: nil, "multipart/form-data")
            check(try await self.post(base, self.multipart(ok)), .badRequest, param: "image", "required")
            check(try await self.post(base, self.multipart([("steps", "2")], files: [img])), .badRequest, param: "prompt", "prompt")
            check(try await self.post(base, self.multipart(ok, files: [img, ("image[]", "b.png", png)])), .badRequest, param: "image", "one image")
            check(try await self.post(base, self.multipart(ok, files: [("image", "in.png", Data("not a png".utf8))])), .badRequest, param: "image", "PNG")
            check(try await self.post(base, self.multipart([("prompt", "x"), ("steps", "many")], files: [img])), .badRequest, param: "steps", "integer")
            check(try await self.post(base, self.multipart([("prompt", "x"), ("strength", "0")], files: [img])), .badRequest, param: "strength", "(0, 1]")
            check(try await self.post(base, self.multipart([("prompt", "x"), ("size", "128x128")], files: [img])), .badRequest, param: "size", "64x64")
            check(try await self.post(base, self.multipart(ok + [("prompt", "y")], files: [img])), .badRequest, param: "prompt", "more than once")
            // A mask without alpha, or of another size.
            check(try await self.post(base, self.multipart(ok, files: [img, ("mask", "m.png", png)])), .badRequest, param: "mask", "alpha")
            let small = self.rgbaPNG(width: 32, height: 32, rgba: [UInt8](repeating: 0, count: 32 * 32 * 4))
            check(try await self.post(base, self.multipart(ok, files: [img, ("mask", "m.png", small)])), .badRequest, param: "mask", "same size")
            let odd = try self.pngData(RGBImage(width: 60, height: 64, pixels: [UInt8](repeating: 9, count: 60 * 64 * 3)))
            check(try await self.post(base, self.multipart(ok, files: [("image", "odd.png", odd)])), .badRequest, param: "image", "multiple of 8")

            // The parser's bounds and malformed bodies.
            let many = self.multipart((0..<65).map { ("f\($0)", "v") }, files: [img])
            check(try await self.post(base, many), .badRequest, param: nil, "more than 64 parts")
            let b = "bnd"
            let longHeader = Data("--\(b)\r\nContent-Disposition: form-data; name=\"prompt\"\r\nX-Pad: \(String(repeating: "a", count: 9000))\r\n\r\nx\r\n--\(b)--\r\n".utf8)
            check(try await self.post(base, (longHeader, "multipart/form-data; boundary=\(b)")), .badRequest, param: nil, "longer than")
            let truncated = Data("--\(b)\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nx".utf8)
            check(try await self.post(base, (truncated, "multipart/form-data; boundary=\(b)")), .badRequest, param: nil, "ends inside a part")
            let noName = Data("--\(b)\r\nContent-Disposition: form-data\r\n\r\nx\r\n--\(b)--\r\n".utf8)
            check(try await self.post(base, (noName, "multipart/form-data; boundary=\(b)")), .badRequest, param: nil, "with a name")
            check(try await self.post(base, (Data("x".utf8), "multipart/form-data")), .badRequest, param: nil, "boundary")
            check(try await self.post(base, (Data("no parts here".utf8), "multipart/form-data; boundary=\(b)")), .badRequest, param: nil, "never occurs")
            let big = self.multipart(ok, files: [img, ("mask", "m.png", Data(repeating: 1, count: 70 << 10))])
            let tooLarge = try await self.post(base, big)
            XCTAssertEqual(tooLarge.status, .payloadTooLarge)
        }
    }
}
