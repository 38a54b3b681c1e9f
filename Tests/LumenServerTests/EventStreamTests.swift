import AsyncHTTPClient
import Foundation
import LumenServer
import NIOCore
import NIOHTTP1
import XCTest

/// What a job's event stream sends besides events: `: keep-alive` comments while the job waits
/// (`ServerConfiguration.eventsKeepAlive`), and, to a listener that arrives late, the running
/// batch's latest step preview.
final class EventStreamTests: ServerTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures").path

    /// A long job that holds the one worker (150 steps, two images), running when this returns.
    func holdTheWorker(_ base: String, id: String) async throws {
        let a = try await send(.POST, base + "/lumen/v1/jobs", json: [
            "prompt": "a red circle", "size": "64x64", "steps": 150, "n": 2, "seed": 1, "response_format": "url",
        ], headers: [("X-Lumen-Job-Id", id)])
        XCTAssertEqual(a.status, .accepted, String(decoding: a.body, as: UTF8.self))
        _ = try await waitFor(base, id, ["running"])
    }

    func testAClientWaitingBehindALongJobReceivesKeepAliveComments() async throws {
        try await withServer({ $0.eventsKeepAlive = 0.2 }) { base in
            try await self.holdTheWorker(base, id: "long-a")
            let b = try await self.send(.POST, base + "/lumen/v1/jobs", json: ["prompt": "x", "size": "64x64", "steps": 5],
                                        headers: [("X-Lumen-Job-Id", "waiting-b")])
            XCTAssertEqual(b.status, .accepted)

            let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: base + "/lumen/v1/jobs/waiting-b/events"),
                                                               timeout: .seconds(120))
            XCTAssertEqual(response.status, .ok)
            var text = ""
            var deleted = false
            let start = Date()
            for try await buffer in response.body {
                text += String(buffer: buffer)
                // Three comments while B waits (about 0.6 s), then B is deleted: its stream ends.
                if !deleted && text.components(separatedBy: ": keep-alive\n\n").count > 3 {
                    deleted = true
                    let r = try await self.send(.DELETE, base + "/lumen/v1/jobs/waiting-b")
                    XCTAssertEqual(r.json["state"] as? String, "cancelled")
                }
                if Date().timeIntervalSince(start) > 60 { break }
            }
            XCTAssertTrue(deleted, "fewer than three keep-alive comments in 60 s: \(text.prefix(500))")
            let blocks = text.components(separatedBy: "\n\n").filter { !$0.isEmpty }
            XCTAssertTrue(blocks.first?.hasPrefix("event: queued\n") == true, "\(blocks.first ?? "")")
            XCTAssertTrue(blocks.last?.hasPrefix("event: cancelled\n") == true, "\(blocks.last ?? "")")
            let comments = blocks.filter { $0 == ": keep-alive" }
            XCTAssertGreaterThanOrEqual(comments.count, 3)
            XCTAssertEqual(comments.count + 2, blocks.count, "only comments between the first and the last event: \(blocks)")
            // The running job was left alone.
            let a = try await self.state(base, "long-a")
            XCTAssertEqual(a["state"] as? String, "running")
            _ = try await self.send(.DELETE, base + "/lumen/v1/jobs/long-a")
        }
    }

    /// With keep-alives off (0), a waiting job's stream stays quiet.
    func testNoKeepAliveCommentsWhenTurnedOff() async throws {
        try await withServer({ $0.eventsKeepAlive = 0 }) { base in
            try await self.holdTheWorker(base, id: "long-c")
            _ = try await self.send(.POST, base + "/lumen/v1/jobs", json: ["prompt": "x", "size": "64x64", "steps": 5],
                                    headers: [("X-Lumen-Job-Id", "waiting-d")])
            let reader = Task { () -> String in
                let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: base + "/lumen/v1/jobs/waiting-d/events"),
                                                                   timeout: .seconds(120))
                var text = ""
                for try await buffer in response.body { text += String(buffer: buffer) }
                return text
            }
            try await Task.sleep(nanoseconds: 800_000_000)
            _ = try await self.send(.DELETE, base + "/lumen/v1/jobs/waiting-d")
            let text = try await reader.value
            XCTAssertFalse(text.contains(": keep-alive"), text)
            XCTAssertTrue(text.contains("event: cancelled"), text)
            _ = try await self.send(.DELETE, base + "/lumen/v1/jobs/long-c")
        }
    }

    /// A listener that opens a running job's events between two previews gets the latest one in
    /// its first event (so a page that joins late still shows a preview); so does the job's record.
    func testALateListenerGetsTheLatestPreview() async throws {
        let taesd = Self.fixtures + "/taesd/tiny"
        try await withServer({ $0.previewTAESD = taesd; $0.previewEvery = 4 }) { base in
            try await self.holdTheWorker(base, id: "late")
            var record = try await self.state(base, "late")
            while (record["step"] as? Int ?? 0) < 5, record["state"] as? String == "running" {
                try await Task.sleep(nanoseconds: 10_000_000)
                record = try await self.state(base, "late")
            }
            XCTAssertEqual(record["state"] as? String, "running")
            XCTAssertTrue(record["preview"] is String, "the record has no preview at step \(record["step"] ?? "?")")

            let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: base + "/lumen/v1/jobs/late/events"),
                                                               timeout: .seconds(120))
            var text = ""
            for try await buffer in response.body {
                text += String(buffer: buffer)
                if text.contains("\n\n") { break }
            }
            let first = try XCTUnwrap(text.components(separatedBy: "\n\n").first)
            XCTAssertTrue(first.hasPrefix("event: step\ndata: "), first)
            let data = try XCTUnwrap(first.components(separatedBy: "\ndata: ").last)
            let event = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any])
            XCTAssertGreaterThanOrEqual(event["step"] as? Int ?? 0, 5)
            let preview = try XCTUnwrap(event["preview"] as? String, "no preview in the first event")
            let image = try self.decodePNG(preview).image
            XCTAssertEqual([image.width, image.height], [64, 64])
            _ = try await self.send(.DELETE, base + "/lumen/v1/jobs/late")
        }
    }
}
