import AsyncHTTPClient
import Foundation
import Lumen
import LumenServer
import NIOCore
import NIOHTTP1
import XCTest

/// What the server tests share: a server on a free loopback port (the built-in demo model unless
/// configured otherwise), requests through AsyncHTTPClient, and the library's own images for the
/// same settings (what `lumen generate` runs).
class ServerTestCase: XCTestCase {
    struct Reply {
        let status: HTTPResponseStatus
        let headers: HTTPHeaders
        let body: Data
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
    }

    /// Starts a server, runs `body` with its base URL, then stops it.
    func withServer(_ configure: (inout ServerConfiguration) -> Void = { _ in },
                    _ body: (String) async throws -> Void) async throws {
        var config = ServerConfiguration()
        config.port = 0
        config.backend = .cpu
        configure(&config)
        let server = try LumenServer(configuration: config)
        let port = PortBox()
        let task = Task { try await server.run(gracefulShutdownSignals: false) { await port.set($0) } }
        defer { task.cancel() }
        var bound = 0
        for _ in 0..<600 {
            bound = await port.value
            if bound != 0 { break }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        XCTAssertNotEqual(bound, 0, "the server did not start")
        try await body("http://127.0.0.1:\(bound)")
        task.cancel()
        _ = try? await task.value
    }

    func send(_ method: HTTPMethod, _ url: String, json: Any? = nil, raw: Data? = nil,
              headers: [(String, String)] = []) async throws -> Reply {
        var request = HTTPClientRequest(url: url)
        request.method = method
        for (k, v) in headers { request.headers.add(name: k, value: v) }
        if let json {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: json)))
        } else if let raw {
            request.body = .bytes(ByteBuffer(bytes: raw))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(300))
        let buffer = try await response.body.collect(upTo: 64 << 20)
        return Reply(status: response.status, headers: response.headers, body: Data(buffer: buffer))
    }

    /// A job's record (`GET /lumen/v1/jobs/ID`).
    func state(_ base: String, _ id: String) async throws -> [String: Any] {
        try await send(.GET, base + "/lumen/v1/jobs/\(id)").json
    }

    /// Polls a job's record until its state is one of `states`.
    func waitFor(_ base: String, _ id: String, _ states: Set<String>, seconds: Double = 60) async throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let s = try await state(base, id)
            if let st = s["state"] as? String, states.contains(st) { return s }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        XCTFail("job \(id) never reached \(states)")
        return [:]
    }

    /// What `lumen generate` makes for the same settings: the library's pipeline, run directly.
    func reference(_ configure: (inout GenerationRequest) -> Void) throws -> [RGBImage] {
        let pipeline = try Pipeline(modelPath: XCTUnwrap(DefaultModel.locate()).path, backend: .cpu)
        var request = GenerationRequest(prompt: "")
        configure(&request)
        return try pipeline.generate(request)
    }

    func decodePNG(_ base64: String) throws -> (image: RGBImage, text: [String: String]) {
        let data = try XCTUnwrap(Data(base64Encoded: base64))
        let path = NSTemporaryDirectory() + "/lumen-server-test-\(UUID().uuidString).png"
        try data.write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let r = try RGBImage.readPNGWithText(path)
        return (r.image, Dictionary(r.text.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a }))
    }


    /// A multipart/form-data body: text fields, then file parts (name, filename, bytes).
    func multipart(_ fields: [(String, String)], files: [(String, String, Data)] = [],
                   boundary: String = "lumen-test-\(UUID().uuidString)") -> (body: Data, contentType: String) {
        var body = Data()
        for (name, value) in fields {
            body += Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"\r\n\r\n\(value)\r\n".utf8)
        }
        for (name, filename, data) in files {
            body += Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"\(name)\"; filename=\"\(filename)\"\r\nContent-Type: image/png\r\n\r\n".utf8)
            body += data
            body += Data("\r\n".utf8)
        }
        body += Data("--\(boundary)--\r\n".utf8)
        return (body, "multipart/form-data; boundary=\(boundary)")
    }

    /// PNG bytes of an RGB image, written by the library.
    func pngData(_ image: RGBImage) throws -> Data {
        let path = NSTemporaryDirectory() + "/lumen-server-test-\(UUID().uuidString).png"
        try image.writePNG(to: path)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try Data(contentsOf: URL(fileURLWithPath: path))
    }

    /// An 8-bit RGBA PNG (colour type 6) with stored (uncompressed) deflate blocks: the library
    /// writes RGB only, and OpenAI's masks are transparency.
    func rgbaPNG(width: Int, height: Int, rgba: [UInt8]) -> Data {
        precondition(rgba.count == width * height * 4)
        var crcTable = [UInt32](repeating: 0, count: 256)
        for n in 0..<256 {
            var c = UInt32(n)
            for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
            crcTable[n] = c
        }
        func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 255), UInt8(v >> 8 & 255), UInt8(v & 255)] }
        func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
            let body = Array(type.utf8) + data
            var crc: UInt32 = 0xFFFF_FFFF
            for b in body { crc = crcTable[Int((crc ^ UInt32(b)) & 255)] ^ (crc >> 8) }
            return be32(UInt32(data.count)) + body + be32(crc ^ 0xFFFF_FFFF)
        }
        var raw: [UInt8] = []
        for y in 0..<height { raw.append(0); raw += rgba[(y * width * 4)..<((y + 1) * width * 4)] }
        var zlib: [UInt8] = [0x78, 0x01]
        var offset = 0
        repeat {
            let n = min(65535, raw.count - offset)
            let last: UInt8 = offset + n == raw.count ? 1 : 0
            zlib += [last, UInt8(n & 255), UInt8(n >> 8), UInt8(~n & 255), UInt8((~n >> 8) & 255)]
            zlib += raw[offset..<(offset + n)]
            offset += n
        } while offset < raw.count
        var a: UInt32 = 1, b: UInt32 = 0
        for v in raw { a = (a + UInt32(v)) % 65521; b = (b + a) % 65521 }
        zlib += be32(b << 16 | a)
        let ihdr = be32(UInt32(width)) + be32(UInt32(height)) + [8, 6, 0, 0, 0]
        return Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", ihdr) + chunk("IDAT", zlib) + chunk("IEND", []))
    }

}

actor PortBox {
    var value = 0
    func set(_ v: Int) { value = v }
}
