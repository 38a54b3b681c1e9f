import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `lumen serve` (the real binary) on SIGTERM: the running request finishes and is answered, the
/// waiting ones are cancelled (503, their event streams end with `cancelled`), and the process
/// exits with status 0.
final class ShutdownTests: ServerTestCase {
    /// `lumen` is built beside the test bundle.
    static let binary: String = {
        let dir = Bundle.main.bundleURL.path.hasSuffix(".xctest") ? Bundle.main.bundleURL.deletingLastPathComponent().path
            : URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
        return dir + "/lumen"
    }()

    /// Starts `lumen serve --port 0` and returns the process and its base URL.
    func startServe(_ arguments: [String] = []) throws -> (Process, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["serve", "--port", "0", "--backend", "cpu"] + arguments
        let stderr = Pipe()
        process.standardError = stderr
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        var text = ""
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, text.range(of: #"http://127\.0\.0\.1:[0-9]+/"#, options: .regularExpression) == nil {
            let chunk = stderr.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        guard let range = text.range(of: #"http://127\.0\.0\.1:[0-9]+"#, options: .regularExpression) else {
            process.terminate()
            throw XCTSkip("lumen serve did not start: \(text)")
        }
        // Keep draining its log so that it never blocks on a full pipe.
        stderr.fileHandleForReading.readabilityHandler = { _ = $0.availableData }
        return (process, String(text[range]))
    }

    func testSIGTERMFinishesTheRunningRequestCancelsTheWaitingOnesAndExitsCleanly() async throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            return XCTFail("lumen binary not found at \(Self.binary)")
        }
        let (process, base) = try startServe()
        defer { if process.isRunning { process.terminate() } }

        // A: a synchronous request that runs; B: one that waits; C: a submitted job that waits.
        async let a = send(.POST, base + "/v1/images/generations", json: [
            "prompt": "a red circle", "size": "64x64", "steps": 150, "seed": 1,
        ], headers: [("X-Lumen-Job-Id", "job-a")])
        var record = try await waitFor(base, "job-a", ["running"])
        while (record["step"] as? Int ?? 0) < 1, record["state"] as? String == "running" {
            try await Task.sleep(nanoseconds: 10_000_000)
            record = try await state(base, "job-a")
        }
        async let b = send(.POST, base + "/sdapi/v1/txt2img", json: ["prompt": "a blue square", "width": 64, "height": 64, "steps": 5],
                           headers: [("X-Lumen-Job-Id", "job-b")])
        _ = try await waitFor(base, "job-b", ["queued"])
        let c = try await send(.POST, base + "/lumen/v1/jobs", json: ["prompt": "x", "size": "64x64", "steps": 5],
                               headers: [("X-Lumen-Job-Id", "job-c")])
        XCTAssertEqual(c.status, .accepted)
        let eventsC = Task { () -> String in
            let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: base + "/lumen/v1/jobs/job-c/events"),
                                                               timeout: .seconds(120))
            var text = ""
            for try await buffer in response.body { text += String(buffer: buffer) }
            return text
        }
        try await Task.sleep(nanoseconds: 200_000_000)  // C's stream is open
        let before = try await state(base, "job-a")
        XCTAssertEqual(before["state"] as? String, "running", "A finished before the signal: make it longer")

        kill(process.processIdentifier, SIGTERM)

        // B is cancelled at once and says why; C's stream ends with its cancellation.
        let rb = try await b
        XCTAssertEqual(rb.status, .serviceUnavailable, String(decoding: rb.body.prefix(300), as: UTF8.self))
        XCTAssertTrue((rb.json["detail"] as? String ?? "").contains("shutting down"), String(decoding: rb.body.prefix(300), as: UTF8.self))
        let textC = try await eventsC.value
        XCTAssertTrue(textC.contains("event: cancelled"), textC)
        XCTAssertTrue(textC.contains("the server is shutting down"), textC)
        XCTAssertFalse(textC.contains("event: started"), "C ran: \(textC)")

        // A runs to its last step and is answered with its image.
        let ra = try await a
        XCTAssertEqual(ra.status, .ok, String(decoding: ra.body.prefix(300), as: UTF8.self))
        let b64 = try XCTUnwrap(((ra.json["data"] as? [[String: Any]])?.first)?["b64_json"] as? String)
        XCTAssertEqual([try decodePNG(b64).image.width], [64])

        // Then the process exits by itself, with status 0.
        let deadline = Date().addingTimeInterval(30)
        while process.isRunning, Date() < deadline { try await Task.sleep(nanoseconds: 50_000_000) }
        XCTAssertFalse(process.isRunning, "lumen serve still runs 30 s after its last request")
        if !process.isRunning {
            XCTAssertEqual(process.terminationReason, .exit)
            XCTAssertEqual(process.terminationStatus, 0)
        }
    }
}
