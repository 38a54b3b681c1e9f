import AsyncHTTPClient
import Foundation
import Lumen
import LumenServer
import NIOCore
import NIOHTTP1
import XCTest

/// `lumen serve` over real HTTP: a server on a free loopback port with the built-in demo model,
/// driven by AsyncHTTPClient. The images it returns are checked pixel for pixel against the
/// library's own `Pipeline.generate` (what `lumen generate` runs) for the same settings.
final class ServerTests: ServerTestCase {
    func testOpenAIGenerationsMatchTheLibraryPixelForPixel() async throws {
        try await withServer { base in
            let models = try await send(.GET, base + "/v1/models")
            XCTAssertEqual(models.status, .ok)
            let ids = (models.json["data"] as? [[String: Any]])?.compactMap { $0["id"] as? String }
            XCTAssertEqual(ids, ["demo"])

            let r = try await send(.POST, base + "/v1/images/generations", json: [
                "prompt": "a red circle on a blue background", "model": "demo", "n": 2, "size": "64x64",
                "seed": 1234, "steps": 6, "guidance": 4.0, "guidance_rescale": 0.5, "scheduler": "euler", "response_format": "b64_json",
            ])
            XCTAssertEqual(r.status, .ok, String(decoding: r.body, as: UTF8.self))
            XCTAssertNotNil(r.json["created"] as? Int)
            let data = try XCTUnwrap(r.json["data"] as? [[String: Any]])
            XCTAssertEqual(data.count, 2)
            let expected = try reference {
                $0.prompt = "a red circle on a blue background"; $0.count = 2; $0.width = 64; $0.height = 64
                $0.seed = 1234; $0.steps = 6; $0.guidanceScale = 4; $0.guidanceRescale = 0.5; $0.scheduler = .euler
            }
            let unrescaled = try reference {
                $0.prompt = "a red circle on a blue background"; $0.count = 2; $0.width = 64; $0.height = 64
                $0.seed = 1234; $0.steps = 6; $0.guidanceScale = 4; $0.scheduler = .euler
            }
            XCTAssertNotEqual(unrescaled[0].pixels, expected[0].pixels, "guidance_rescale changes the image")
            for (item, want) in zip(data, expected) {
                let got = try decodePNG(XCTUnwrap(item["b64_json"] as? String)).image
                XCTAssertEqual(got.width, 64)
                XCTAssertEqual(got.pixels, want.pixels)
            }

            // response_format url: the image is served back by the same server.
            let u = try await send(.POST, base + "/v1/images/generations", json: [
                "prompt": "a green square", "size": "64x64", "seed": 7, "steps": 3, "response_format": "url",
            ])
            XCTAssertEqual(u.status, .ok)
            let url = try XCTUnwrap((u.json["data"] as? [[String: Any]])?.first?["url"] as? String)
            let png = try await send(.GET, url)
            XCTAssertEqual(png.status, .ok)
            XCTAssertEqual(png.headers.first(name: "content-type"), "image/png")
            let want = try reference { $0.prompt = "a green square"; $0.width = 64; $0.height = 64; $0.seed = 7; $0.steps = 3 }
            XCTAssertEqual(try decodePNG(png.body.base64EncodedString()).image.pixels, want[0].pixels)
        }
    }

    func testA1111RoutesMatchTheLibraryAndReportTheSeed() async throws {
        try await withServer { base in
            let samplers = try await send(.GET, base + "/sdapi/v1/samplers")
            XCTAssertEqual(samplers.status, .ok)
            let names = try XCTUnwrap(try JSONSerialization.jsonObject(with: samplers.body) as? [[String: Any]]).compactMap { $0["name"] as? String }
            XCTAssertEqual(Set(names), Set(SchedulerKind.allCases.map(\.displayName)))
            let models = try await send(.GET, base + "/sdapi/v1/sd-models")
            XCTAssertEqual(models.status, .ok)
            XCTAssertEqual((try JSONSerialization.jsonObject(with: models.body) as? [[String: Any]])?.first?["model_name"] as? String, "demo")

            let t = try await send(.POST, base + "/sdapi/v1/txt2img", json: [
                "prompt": "a yellow triangle", "negative_prompt": "", "steps": 5, "cfg_scale": 4, "width": 64, "height": 64,
                "seed": 99, "sampler_name": "DPM++ 2M Karras",
            ])
            XCTAssertEqual(t.status, .ok, String(decoding: t.body, as: UTF8.self))
            let images = try XCTUnwrap(t.json["images"] as? [String])
            XCTAssertEqual(images.count, 1)
            let got = try decodePNG(images[0])
            let want = try reference {
                $0.prompt = "a yellow triangle"; $0.negativePrompt = ""; $0.steps = 5; $0.guidanceScale = 4
                $0.width = 64; $0.height = 64; $0.seed = 99; $0.scheduler = .dpmpp2mKarras
            }
            XCTAssertEqual(got.image.pixels, want[0].pixels)
            XCTAssertTrue(got.text["parameters"]?.contains("Sampler: DPM++ 2M Karras") == true)
            let info = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(XCTUnwrap(t.json["info"] as? String).utf8)) as? [String: Any])
            XCTAssertEqual(info["seed"] as? Int, 99)

            // seed -1: a random seed, reported in info, that reproduces the image.
            let r = try await send(.POST, base + "/sdapi/v1/txt2img", json: [
                "prompt": "a yellow triangle", "steps": 3, "width": 64, "height": 64, "seed": -1, "sampler_name": "Euler",
            ])
            XCTAssertEqual(r.status, .ok)
            let rInfo = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(XCTUnwrap(r.json["info"] as? String).utf8)) as? [String: Any])
            let used = try XCTUnwrap(rInfo["seed"] as? Int)
            let again = try reference {
                $0.prompt = "a yellow triangle"; $0.negativePrompt = ""; $0.steps = 3; $0.guidanceScale = 7
                $0.width = 64; $0.height = 64; $0.seed = UInt64(used); $0.scheduler = .euler
            }
            XCTAssertEqual(try decodePNG(XCTUnwrap(r.json["images"] as? [String]).first!).image.pixels, again[0].pixels)

            // png-info reads the parameters back.
            let p = try await send(.POST, base + "/sdapi/v1/png-info", json: ["image": "data:image/png;base64," + images[0]])
            XCTAssertEqual(p.status, .ok)
            XCTAssertTrue((p.json["info"] as? String)?.contains("Seed: 99") == true)

            // img2img from that image matches the library's image-to-image.
            let i = try await send(.POST, base + "/sdapi/v1/img2img", json: [
                "init_images": [images[0]], "prompt": "a blue triangle", "steps": 6, "cfg_scale": 4, "seed": 5,
                "denoising_strength": 0.5, "sampler_name": "DDIM",
            ])
            XCTAssertEqual(i.status, .ok, String(decoding: i.body, as: UTF8.self))
            let source = try decodePNG(images[0]).image
            let wantI = try reference {
                $0.prompt = "a blue triangle"; $0.negativePrompt = ""; $0.steps = 6; $0.guidanceScale = 4; $0.seed = 5
                $0.strength = 0.5; $0.scheduler = .ddim; $0.width = 64; $0.height = 64
                $0.initImage = InitImage(width: 64, height: 64, rgb: source.pixels.map { Float(UInt32($0) * 257) / 65535 })
            }
            XCTAssertEqual(try decodePNG(XCTUnwrap(i.json["images"] as? [String]).first!).image.pixels, wantI[0].pixels)

            let progress = try await send(.GET, base + "/sdapi/v1/progress")
            XCTAssertEqual(progress.status, .ok)
            XCTAssertEqual(progress.json["progress"] as? Double, 0)
            let interrupt = try await send(.POST, base + "/sdapi/v1/interrupt")
            XCTAssertEqual(interrupt.status, .ok)
        }
    }

    func testErrorsHaveTheAPIsShapesAndStatusCodes() async throws {
        try await withServer({ $0.maxBodyBytes = 4096; $0.maxSteps = 50 }) { base in
            func check(_ r: Reply, _ status: HTTPResponseStatus, param: String? = nil, file: StaticString = #filePath, line: UInt = #line) {
                XCTAssertEqual(r.status, status, String(decoding: r.body, as: UTF8.self), file: file, line: line)
                let error = r.json["error"] as? [String: Any]
                XCTAssertNotNil(error?["message"] as? String, file: file, line: line)
                XCTAssertNotNil(error?["type"] as? String, file: file, line: line)
                if let param { XCTAssertEqual(error?["param"] as? String, param, file: file, line: line) }
                XCTAssertFalse(String(decoding: r.body, as: UTF8.self).contains("/Models/"), "a path leaked", file: file, line: line)
            }
            let gen = base + "/v1/images/generations"
            check(try await send(.POST, gen, json: ["prompt": "x", "model": "../demo"]), .badRequest, param: "model")
            check(try await send(.POST, gen, json: ["prompt": "x", "model": "/etc/passwd"]), .badRequest, param: "model")
            check(try await send(.POST, gen, json: ["prompt": "x", "model": "nope"]), .notFound, param: "model")
            check(try await send(.POST, gen, json: ["model": "demo"]), .badRequest, param: "prompt")
            check(try await send(.POST, gen, json: ["prompt": "x", "size": "60x64"]), .badRequest, param: "width")
            check(try await send(.POST, gen, json: ["prompt": "x", "size": "big"]), .badRequest, param: "size")
            check(try await send(.POST, gen, json: ["prompt": "x", "steps": 51]), .badRequest, param: "steps")
            check(try await send(.POST, gen, json: ["prompt": "x", "n": 0]), .badRequest, param: "n")
            check(try await send(.POST, gen, json: ["prompt": "x", "scheduler": "magic"]), .badRequest, param: "scheduler")
            check(try await send(.POST, gen, raw: Data("{not json".utf8)), .badRequest)
            check(try await send(.POST, gen, raw: Data(repeating: 32, count: 10_000)), .payloadTooLarge)
            check(try await send(.GET, base + "/v1/nothing"), .notFound)

            let a = try await send(.POST, base + "/sdapi/v1/txt2img", json: ["prompt": "x", "sampler_name": "DPM adaptive"])
            XCTAssertEqual(a.status, .badRequest)
            XCTAssertTrue((a.json["detail"] as? String)?.contains("sampler_name") == true)
            let png = try await send(.POST, base + "/sdapi/v1/png-info", json: ["image": Data("not a png".utf8).base64EncodedString()])
            XCTAssertEqual(png.status, .badRequest)
        }
        // A decoded image over the pixel bound is 413.
        try await withServer({ $0.maxImagePixels = 32 * 32 }) { base in
            let image = try RGBImage(width: 64, height: 64, pixels: [UInt8](repeating: 128, count: 64 * 64 * 3))
            let path = NSTemporaryDirectory() + "/lumen-server-test-\(UUID().uuidString).png"
            try image.writePNG(to: path)
            defer { try? FileManager.default.removeItem(atPath: path) }
            let b64 = try Data(contentsOf: URL(fileURLWithPath: path)).base64EncodedString()
            let r = try await send(.POST, base + "/sdapi/v1/img2img", json: ["init_images": [b64], "prompt": "x", "steps": 2])
            XCTAssertEqual(r.status, .payloadTooLarge, String(decoding: r.body, as: UTF8.self))
        }
    }

    func testTheAPIKeyIsRequiredOnEveryAPIRoute() async throws {
        try await withServer({ $0.apiKey = "sekrit" }) { base in
            for (method, path) in [(HTTPMethod.GET, "/v1/models"), (.POST, "/v1/images/generations"), (.GET, "/sdapi/v1/sd-models"),
                                   (.POST, "/sdapi/v1/txt2img"), (.GET, "/sdapi/v1/progress"), (.POST, "/sdapi/v1/interrupt")] {
                let none = try await send(method, base + path, json: ["prompt": "x"])
                XCTAssertEqual(none.status, .unauthorized, path)
                let wrong = try await send(method, base + path, json: ["prompt": "x"], headers: [("Authorization", "Bearer nope")])
                XCTAssertEqual(wrong.status, .unauthorized, path)
            }
            let ok = try await send(.GET, base + "/v1/models", headers: [("Authorization", "Bearer sekrit")])
            XCTAssertEqual(ok.status, .ok)
        }
    }

    /// With one job running and `queueLimit` waiting, the next is refused with 429 and a
    /// Retry-After; none fails otherwise.
    func testAFullQueueAnswers429WithRetryAfter() async throws {
        try await withServer({ $0.queueLimit = 1 }) { base in
            let statuses = try await withThrowingTaskGroup(of: (HTTPResponseStatus, String?).self) { group in
                for i in 0..<6 {
                    group.addTask {
                        let r = try await self.send(.POST, base + "/v1/images/generations", json: [
                            "prompt": "a red circle", "size": "64x64", "steps": 40, "n": 2, "seed": i,
                        ])
                        return (r.status, r.headers.first(name: "retry-after"))
                    }
                }
                var all: [(HTTPResponseStatus, String?)] = []
                for try await s in group { all.append(s) }
                return all
            }
            let ok = statuses.filter { $0.0 == .ok }.count
            let limited = statuses.filter { $0.0 == .tooManyRequests }
            XCTAssertEqual(ok + limited.count, 6, "\(statuses)")
            XCTAssertGreaterThanOrEqual(ok, 1)
            XCTAssertGreaterThanOrEqual(limited.count, 1, "six at once with one slot running and one waiting: some must be refused")
            for l in limited { XCTAssertGreaterThan(Int(l.1 ?? "") ?? 0, 0, "429 without Retry-After") }
        }
    }
}
