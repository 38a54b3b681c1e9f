import AsyncHTTPClient
import Foundation
import Lumen
import LumenServer
import NIOCore
import NIOHTTP1
import XCTest

/// `--model-memory`: loaded pipelines are bounded by their weights' bytes, the least recently
/// used idle one dropped first; checked with two tiny fixture models through
/// `GET /lumen/v1/status`.
final class ModelMemoryTests: ServerTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures").path
    let a = fixtures + "/tiny-sd", b = fixtures + "/tiny-sd2"

    /// What the CPU holds for a folder's weights, counted here from the files' headers: every
    /// tensor's elements × 4 bytes (the CPU executor widens weights to f32).
    func cpuWeightBytes(_ folder: String) throws -> Int {
        var total = 0
        for sub in ["text_encoder", "unet", "vae"] {
            let dir = folder + "/" + sub
            for name in try FileManager.default.contentsOfDirectory(atPath: dir) where name.hasSuffix(".safetensors") {
                let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + name))
                let n = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
                let header = try XCTUnwrap(try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + n))) as? [String: Any])
                for (key, value) in header where key != "__metadata__" {
                    let shape = try XCTUnwrap((value as? [String: Any])?["shape"] as? [Int])
                    total += shape.reduce(1, *) * 4
                }
            }
        }
        return total
    }

    func models(_ base: String) async throws -> [String: [String: Any]] {
        let status = try await send(.GET, base + "/lumen/v1/status").json
        let list = try XCTUnwrap(status["models"] as? [[String: Any]])
        return Dictionary(uniqueKeysWithValues: list.map { ($0["name"] as! String, $0) })
    }

    func generate(_ base: String, model: String) async throws {
        let r = try await send(.POST, base + "/v1/images/generations", json: [
            "prompt": "a cat", "model": model, "size": "64x64", "steps": 2, "seed": 1,
        ])
        XCTAssertEqual(r.status, .ok, String(decoding: r.body, as: UTF8.self))
    }

    func testTheLeastRecentlyUsedModelIsDroppedWhenTheWeightsExceedTheBound() async throws {
        let (bytesA, bytesB) = (try cpuWeightBytes(a), try cpuWeightBytes(b))
        XCTAssertEqual(try Pipeline(modelPath: a, backend: .cpu).weightBytes, bytesA)
        XCTAssertEqual(try Pipeline(modelPath: b, backend: .cpu).weightBytes, bytesB)
        // Room for either model, not both.
        try await withServer({ $0.modelPaths = [self.a, self.b]; $0.maxLoadedModels = 8; $0.modelMemoryBytes = bytesA + bytesB - 1 }) { base in
            try await self.generate(base, model: "tiny-sd")
            var m = try await self.models(base)
            XCTAssertEqual(m["tiny-sd"]?["loaded"] as? Bool, true)
            XCTAssertEqual(m["tiny-sd"]?["weight_bytes"] as? Int, bytesA)
            XCTAssertEqual(m["tiny-sd2"]?["loaded"] as? Bool, false)

            try await self.generate(base, model: "tiny-sd2")
            m = try await self.models(base)
            XCTAssertEqual(m["tiny-sd"]?["loaded"] as? Bool, false, "the least recently used model stayed")
            XCTAssertEqual(m["tiny-sd2"]?["loaded"] as? Bool, true)

            try await self.generate(base, model: "tiny-sd")
            m = try await self.models(base)
            XCTAssertEqual(m["tiny-sd"]?["loaded"] as? Bool, true)
            XCTAssertEqual(m["tiny-sd2"]?["loaded"] as? Bool, false)
            let r1 = try await self.send(.GET, base + "/lumen/v1/status")
            let memory = try XCTUnwrap(r1.json["model_memory"] as? [String: Any])
            XCTAssertEqual(memory["loads"] as? Int, 3)
            XCTAssertEqual(memory["evictions"] as? Int, 2)
            XCTAssertEqual(memory["loaded_bytes"] as? Int, bytesA)
        }
        // Room for both: both stay, and a third use loads nothing.
        try await withServer({ $0.modelPaths = [self.a, self.b]; $0.maxLoadedModels = 8; $0.modelMemoryBytes = bytesA + bytesB }) { base in
            try await self.generate(base, model: "tiny-sd")
            try await self.generate(base, model: "tiny-sd2")
            try await self.generate(base, model: "tiny-sd")
            let m = try await self.models(base)
            XCTAssertEqual(m["tiny-sd"]?["loaded"] as? Bool, true)
            XCTAssertEqual(m["tiny-sd2"]?["loaded"] as? Bool, true)
            let r2 = try await self.send(.GET, base + "/lumen/v1/status")
            let memory = try XCTUnwrap(r2.json["model_memory"] as? [String: Any])
            XCTAssertEqual(memory["loads"] as? Int, 2)
            XCTAssertEqual(memory["evictions"] as? Int, 0)
            XCTAssertEqual(memory["loaded_bytes"] as? Int, bytesA + bytesB)
        }
    }
}
