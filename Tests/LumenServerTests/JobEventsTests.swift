import AsyncHTTPClient
import Foundation
import Lumen
import LumenServer
import NIOCore
import NIOHTTP1
import XCTest

/// Jobs and their progress as server-sent events: `POST /lumen/v1/jobs` (answered at once),
/// `GET /lumen/v1/jobs/ID`, `GET /lumen/v1/jobs/ID/events`, `DELETE`, and the `X-Lumen-Job-Id`
/// of the synchronous routes.
final class JobEventsTests: ServerTestCase {
    struct Event {
        let name: String
        let data: [String: Any]
    }

    /// Reads a job's event stream to its end (the stream closes after the final event).
    func events(_ url: String) async throws -> (status: HTTPResponseStatus, contentType: String?, events: [Event]) {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: url), timeout: .seconds(300))
        var text = ""
        for try await buffer in response.body { text += String(buffer: buffer) }
        var events: [Event] = []
        for block in text.components(separatedBy: "\n\n") where !block.isEmpty {
            var name = "message", data = ""
            for line in block.split(separator: "\n") {
                if line.hasPrefix("event: ") { name = String(line.dropFirst(7)) }
                if line.hasPrefix("data: ") { data += line.dropFirst(6) }
            }
            if data.isEmpty { continue }  // a `: keep-alive` comment
            let object = (try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? [String: Any] ?? [:]
            events.append(Event(name: name, data: object))
        }
        return (response.status, response.headers.first(name: "content-type"), events)
    }

    func checkProgress(_ events: [Event], steps: Int, file: StaticString = #filePath, line: UInt = #line) {
        let stepEvents = events.filter { $0.name == "step" }
        XCTAssertFalse(stepEvents.isEmpty, "no step event", file: file, line: line)
        var last = 0
        for e in stepEvents {
            let step = e.data["step"] as? Int ?? -1
            XCTAssertGreaterThanOrEqual(step, last, "steps out of order", file: file, line: line)
            last = step
            XCTAssertEqual(e.data["total"] as? Int, steps, file: file, line: line)
            XCTAssertTrue(e.data.keys.contains("preview"), "no preview field", file: file, line: line)
            if step > 0 { XCTAssertGreaterThanOrEqual(e.data["eta"] as? Double ?? -1, 0, "no eta", file: file, line: line) }
        }
        XCTAssertEqual(last, steps, "the last step event is not the last step", file: file, line: line)
        XCTAssertEqual(events.last?.name, "done", file: file, line: line)
    }

    func testAnAsyncJobStreamsItsStepsAndEndsWithItsImages() async throws {
        try await withServer { base in
            let submit = try await self.send(.POST, base + "/lumen/v1/jobs", json: [
                "prompt": "a red circle on a blue background", "size": "64x64", "seed": 21, "steps": 12, "guidance": 4.0,
                "scheduler": "euler",
            ])
            XCTAssertEqual(submit.status, .accepted, String(decoding: submit.body, as: UTF8.self))
            let id = try XCTUnwrap(submit.json["id"] as? String)
            XCTAssertEqual(submit.headers.first(name: "x-lumen-job-id"), id)
            XCTAssertEqual(submit.json["events"] as? String, "/lumen/v1/jobs/\(id)/events")

            let stream = try await self.events(base + "/lumen/v1/jobs/\(id)/events")
            XCTAssertEqual(stream.status, .ok)
            XCTAssertEqual(stream.contentType, "text/event-stream")
            self.checkProgress(stream.events, steps: 12)
            let want = try self.reference {
                $0.prompt = "a red circle on a blue background"; $0.width = 64; $0.height = 64; $0.seed = 21; $0.steps = 12
                $0.guidanceScale = 4; $0.scheduler = .euler
            }
            let done = try XCTUnwrap(stream.events.last?.data["result"] as? [String: Any])
            let b64 = try XCTUnwrap((done["data"] as? [[String: Any]])?.first?["b64_json"] as? String)
            XCTAssertEqual(try self.decodePNG(b64).image.pixels, want[0].pixels)

            // The job's record has the same result; a finished job's events are its final event.
            let record = try await self.send(.GET, base + "/lumen/v1/jobs/\(id)")
            XCTAssertEqual(record.json["state"] as? String, "done")
            XCTAssertEqual(record.json["step"] as? Int, 12)
            XCTAssertNotNil(record.json["result"] as? [String: Any])
            let again = try await self.events(base + "/lumen/v1/jobs/\(id)/events")
            XCTAssertEqual(again.events.map(\.name), ["done"])
        }
    }

    /// `--preview-taesd`: every `--preview-every`-th step event carries the first image's TAESD
    /// preview, the same pixels as the library's `.preview` event for the same request; a model the
    /// TAESD does not fit runs without previews (and does not fail).
    func testStepEventsCarryTAESDPreviews() async throws {
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures").path
        let model = fixtures + "/tiny-sd", taesd = fixtures + "/taesd/tiny"
        try await withServer({ $0.modelPaths = [model]; $0.previewTAESD = taesd; $0.previewEvery = 2 }) { base in
            let submit = try await self.send(.POST, base + "/lumen/v1/jobs", json: [
                "model": "tiny-sd", "prompt": "a red circle", "size": "64x64", "seed": 5, "steps": 4, "scheduler": "euler",
            ])
            XCTAssertEqual(submit.status, .accepted, String(decoding: submit.body, as: UTF8.self))
            let id = try XCTUnwrap(submit.json["id"] as? String)
            let stream = try await self.events(base + "/lumen/v1/jobs/\(id)/events")
            self.checkProgress(stream.events, steps: 4)
            let steps = stream.events.filter { $0.name == "step" }
            let withPreview = steps.filter { $0.data["preview"] is String }.map { $0.data["step"] as? Int ?? -1 }
            XCTAssertEqual(withPreview, [2, 4], "previews on steps 2 and 4 only")

            // The library's previews of the same request.
            let pipeline = try Pipeline(modelPath: model, backend: .cpu)
            var r = GenerationRequest(prompt: "a red circle")
            (r.width, r.height, r.seed, r.steps, r.scheduler) = (64, 64, 5, 4, .euler)
            r.previews = PreviewOptions(taesdPath: taesd, every: 2)
            var library: [Int: RGBImage] = [:]
            _ = try pipeline.generate(r) { event in
                if case .preview(let i, _, let images) = event { library[i] = images[0] }
            }
            XCTAssertEqual(library.keys.sorted(), [2, 4])
            for e in steps {
                guard let b64 = e.data["preview"] as? String, let step = e.data["step"] as? Int else { continue }
                XCTAssertEqual(try self.decodePNG(b64).image.pixels, library[step]?.pixels, "preview of step \(step)")
            }
        }
        // A TAESD with 4 pixels per latent does not fit the model's VAE (8): no previews, and the
        // job still runs.
        try await withServer({ $0.modelPaths = [model]; $0.previewTAESD = fixtures + "/taesd-preview/scale4"; $0.previewEvery = 1 }) { base in
            let submit = try await self.send(.POST, base + "/lumen/v1/jobs", json: [
                "model": "tiny-sd", "prompt": "a green square", "size": "64x64", "seed": 4, "steps": 2, "scheduler": "euler",
            ])
            XCTAssertEqual(submit.status, .accepted, String(decoding: submit.body, as: UTF8.self))
            let id = try XCTUnwrap(submit.json["id"] as? String)
            let stream = try await self.events(base + "/lumen/v1/jobs/\(id)/events")
            self.checkProgress(stream.events, steps: 2)
            XCTAssertTrue(stream.events.filter { $0.name == "step" }.allSatisfy { $0.data["preview"] is NSNull }, "previews from a TAESD that does not fit")
        }
    }

    func testASynchronousRequestsJobCanBeFollowedByTheIDItChose() async throws {
        try await withServer { base in
            // Subscribe first: the events route waits a moment for a chosen id to arrive.
            async let stream = self.events(base + "/lumen/v1/jobs/my-job-1/events")
            try await Task.sleep(nanoseconds: 200_000_000)
            let r = try await self.send(.POST, base + "/v1/images/generations", json: [
                "prompt": "a green square", "size": "64x64", "seed": 4, "steps": 8,
            ], headers: [("X-Lumen-Job-Id", "my-job-1")])
            XCTAssertEqual(r.status, .ok, String(decoding: r.body, as: UTF8.self))
            XCTAssertEqual(r.headers.first(name: "x-lumen-job-id"), "my-job-1")
            let events = try await stream
            self.checkProgress(events.events, steps: 8)

            // A1111's route answers its job id too, and takes force_task_id.
            let a = try await self.send(.POST, base + "/sdapi/v1/txt2img", json: [
                "prompt": "x", "steps": 2, "width": 64, "height": 64, "force_task_id": "task-7",
            ])
            XCTAssertEqual(a.status, .ok)
            XCTAssertEqual(a.headers.first(name: "x-lumen-job-id"), "task-7")
            let r1 = try await self.send(.GET, base + "/lumen/v1/jobs/task-7")
            XCTAssertEqual(r1.json["state"] as? String, "done")

            // Ids are checked: taken, malformed, unknown.
            let taken = try await self.send(.POST, base + "/v1/images/generations", json: ["prompt": "x", "size": "64x64", "steps": 1],
                                            headers: [("X-Lumen-Job-Id", "my-job-1")])
            XCTAssertEqual(taken.status, .conflict)
            XCTAssertEqual((taken.json["error"] as? [String: Any])?["param"] as? String, "X-Lumen-Job-Id")
            let bad = try await self.send(.POST, base + "/v1/images/generations", json: ["prompt": "x", "size": "64x64", "steps": 1],
                                          headers: [("X-Lumen-Job-Id", "../x")])
            XCTAssertEqual(bad.status, .badRequest)
            let r2 = try await self.send(.GET, base + "/lumen/v1/jobs/no.such.job/events")
            XCTAssertEqual(r2.status, .notFound)
            let r3 = try await self.send(.GET, base + "/lumen/v1/jobs/nope")
            XCTAssertEqual(r3.status, .notFound)
        }
    }
}
