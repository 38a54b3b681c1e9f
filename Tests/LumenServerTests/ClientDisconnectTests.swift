import AsyncHTTPClient
import Foundation
import Lumen
import LumenServer
import NIOCore
import NIOHTTP1
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A queued request whose client goes away never runs; `DELETE /lumen/v1/jobs/ID` does the same
/// for a submitted job. Checked with the server's own counters (`GET /lumen/v1/status`) and the
/// jobs' records.
final class ClientDisconnectTests: ServerTestCase {
    /// Sends a whole HTTP request on a new loopback connection and returns the socket, unread.
    func rawRequest(port: Int, _ text: String) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        XCTAssertEqual(connected, 0, "connect: \(String(cString: strerror(errno)))")
        let bytes = Array(text.utf8)
        XCTAssertEqual(bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) }, bytes.count)
        return fd
    }

    func testAQueuedRequestWhoseClientDisconnectsNeverRuns() async throws {
        try await withServer({ $0.queueLimit = 4 }) { base in
            let port = Int(base.split(separator: ":").last!)!
            // A long job holds the one worker.
            let a = try await self.send(.POST, base + "/lumen/v1/jobs", json: [
                "prompt": "a red circle", "size": "64x64", "steps": 150, "n": 2, "seed": 1, "response_format": "url",
            ])
            XCTAssertEqual(a.status, .accepted)
            let idA = try XCTUnwrap(a.json["id"] as? String)
            _ = try await self.waitFor(base, idA, ["running"])

            // B queues behind it on a connection its client then closes.
            let body = #"{"prompt": "a blue square", "size": "64x64", "steps": 5, "seed": 2}"#
            let fd = try self.rawRequest(port: port, "POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + "Content-Type: application/json\r\nX-Lumen-Job-Id: job-b\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
            _ = try await self.waitFor(base, "job-b", ["queued"])
            // C is submitted and then deleted while it waits.
            let c = try await self.send(.POST, base + "/lumen/v1/jobs", json: ["prompt": "x", "size": "64x64", "steps": 5],
                                        headers: [("X-Lumen-Job-Id", "job-c")])
            XCTAssertEqual(c.status, .accepted)
            let queued = try await self.send(.GET, base + "/lumen/v1/status").json
            XCTAssertEqual((queued["queue"] as? [String: Any])?["waiting"] as? Int, 2)
            close(fd)
            let b = try await self.waitFor(base, "job-b", ["cancelled", "running", "done"], seconds: 10)
            XCTAssertEqual(b["state"] as? String, "cancelled")
            XCTAssertEqual(b["reason"] as? String, "the client disconnected")
            let deleted = try await self.send(.DELETE, base + "/lumen/v1/jobs/job-c")
            XCTAssertEqual(deleted.json["state"] as? String, "cancelled")
            // Both were dropped while A still ran: the queue is empty at once.
            let r1 = try await self.state(base, idA)
            XCTAssertEqual(r1["state"] as? String, "running")
            let status = try await self.send(.GET, base + "/lumen/v1/status").json
            XCTAssertEqual((status["queue"] as? [String: Any])?["waiting"] as? Int, 0)

            _ = try await self.waitFor(base, idA, ["done"])
            try await Task.sleep(nanoseconds: 300_000_000)  // B and C's turns on the worker pass
            let end = try await self.send(.GET, base + "/lumen/v1/status").json
            let batches = try XCTUnwrap(end["batches"] as? [String: Any])
            XCTAssertEqual(batches["started"] as? Int, 1, "only A ran: \(batches)")
            XCTAssertEqual(batches["completed"] as? Int, 1)
            XCTAssertEqual(batches["cancelled_waiting"] as? Int, 2)
            let r2 = try await self.state(base, "job-b")
            XCTAssertTrue(r2["started"] is NSNull, "B started")
            let r3 = try await self.state(base, "job-c")
            XCTAssertTrue(r3["started"] is NSNull, "C started")
        }
    }

    /// A running job stops at its next step when its client disconnects or it is deleted.
    func testARunningJobStopsAtItsNextStepWhenItsClientLeavesOrItIsDeleted() async throws {
        try await withServer { base in
            let port = Int(base.split(separator: ":").last!)!
            let body = #"{"prompt": "a blue square", "size": "64x64", "steps": 150, "seed": 2}"#
            let fd = try self.rawRequest(port: port, "POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + "Content-Type: application/json\r\nX-Lumen-Job-Id: job-d\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
            var d = try await self.waitFor(base, "job-d", ["running"])
            while (d["step"] as? Int ?? 0) < 1, d["state"] as? String == "running" {
                try await Task.sleep(nanoseconds: 20_000_000)
                d = try await self.state(base, "job-d")
            }
            close(fd)
            d = try await self.waitFor(base, "job-d", ["cancelled", "done"], seconds: 20)
            XCTAssertEqual(d["state"] as? String, "cancelled")
            XCTAssertEqual(d["reason"] as? String, "the client disconnected")
            XCTAssertLessThan(d["step"] as? Int ?? 150, 150)

            let e = try await self.send(.POST, base + "/lumen/v1/jobs", json: ["prompt": "x", "size": "64x64", "steps": 150],
                                        headers: [("X-Lumen-Job-Id", "job-e")])
            XCTAssertEqual(e.status, .accepted)
            var s = try await self.waitFor(base, "job-e", ["running"])
            while (s["step"] as? Int ?? 0) < 1, s["state"] as? String == "running" {
                try await Task.sleep(nanoseconds: 20_000_000)
                s = try await self.state(base, "job-e")
            }
            _ = try await self.send(.DELETE, base + "/lumen/v1/jobs/job-e")
            s = try await self.waitFor(base, "job-e", ["cancelled", "done"], seconds: 20)
            XCTAssertEqual(s["state"] as? String, "cancelled")
            XCTAssertLessThan(s["step"] as? Int ?? 150, 150)

            let status = try await self.send(.GET, base + "/lumen/v1/status").json
            let batches = try XCTUnwrap(status["batches"] as? [String: Any])
            XCTAssertEqual(batches["started"] as? Int, 2)
            XCTAssertEqual(batches["cancelled_running"] as? Int, 2, "\(batches)")
            XCTAssertEqual(batches["completed"] as? Int, 0)
        }
    }
}
