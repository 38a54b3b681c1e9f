import Foundation
import HTTPTypes
import Hummingbird
import Lumen
import NIOCore

extension HTTPField.Name {
    /// A job's id: chosen by the client on a generation request (optional), answered on every
    /// generation response.
    static let lumenJobID = Self("X-Lumen-Job-Id")!
}

extension LumenServer {
    /// Jobs: every generation request is one. `POST /lumen/v1/jobs` submits one without waiting;
    /// `GET /lumen/v1/jobs/ID` is where it stands (and its result); `…/events` streams its progress
    /// as server-sent events; `DELETE` cancels it. `GET /lumen/v1/status` has the queue, counters
    /// and loaded models.
    func addJobRoutes(_ router: Router<LumenRequestContext>) {
        router.post("/lumen/v1/jobs") { request, _ in try await self.submitJob(request) }
        router.get("/lumen/v1/jobs/:id") { _, context in
            jsonResponse(try self.knownJob(context).snapshot)
        }
        router.delete("/lumen/v1/jobs/:id") { _, context in
            let job = try self.knownJob(context)
            job.cancel(reason: "cancelled by DELETE /lumen/v1/jobs/\(job.id)")
            return jsonResponse(job.snapshot)
        }
        router.get("/lumen/v1/jobs/:id/events") { _, context in
            let id = context.parameters.get("id") ?? ""
            // A client that chose its job's id may subscribe a moment before its request arrives.
            var job = self.engine.job(id)
            if job == nil && Job.isValidID(id) {
                for _ in 0..<250 where job == nil {
                    try await Task.sleep(nanoseconds: 20_000_000)
                    job = self.engine.job(id)
                }
            }
            guard let job else { throw Self.noJob(id) }
            return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                            body: ResponseBody(asyncSequence: job.events(keepAlive: self.config.eventsKeepAlive)))
        }
        router.get("/lumen/v1/status") { _, _ in jsonResponse(self.engine.status) }
    }

    private static func noJob(_ id: String) -> APIError {
        APIError(status: .notFound, message: "no job \(id.prefix(64)) on this server (finished jobs are kept for a while, then forgotten)",
                 param: "id", code: "job_not_found")
    }

    private func knownJob(_ context: LumenRequestContext) throws -> Job {
        let id = context.parameters.get("id") ?? ""
        guard let job = engine.job(id) else { throw Self.noJob(id) }
        return job
    }

    /// `POST /lumen/v1/jobs`: the body of `/v1/images/generations`; answers 202 at once with the
    /// job's id and where to follow it (a full queue is still 429, now).
    func submitJob(_ request: Request) async throws -> Response {
        let options = try openAIOptions(try await jsonObject(request))
        let g = options.request
        try validate(width: g.width, height: g.height, steps: g.steps, count: g.count)
        let job = try engine.makeJob(id: request.headers[.lumenJobID], model: options.entry.name, images: g.count)
        let promise: Promise<Engine.Output>
        do { promise = try engine.enqueue(model: options.entry, request: g, job: job) } catch {
            let e = apiError(error)
            job.fail(e)
            throw e
        }
        let base = "http://\(request.head.authority ?? "\(config.host):\(config.port)")"
        Task {
            do {
                let output = try await promise.value
                job.succeed(result: try self.openAIResult(output.images, options: options, base: base))
            } catch {
                let e = self.apiError(error)
                if e.code == "cancelled" { job.cancelled() } else { job.fail(e) }
            }
        }
        var response = jsonResponse(["id": job.id, "object": "image.job", "state": job.state.rawValue,
                                     "url": "/lumen/v1/jobs/\(job.id)", "events": "/lumen/v1/jobs/\(job.id)/events"],
                                    status: .accepted)
        response.headers[.lumenJobID] = job.id
        return response
    }

    /// Runs a synchronous generation request as a job: the job id (the client's
    /// `X-Lumen-Job-Id`, or `preferredID`, or a new one) is answered in `X-Lumen-Job-Id`, its
    /// events follow it, and the job is cancelled if the client disconnects.
    func synchronousJob(_ request: Request, _ context: LumenRequestContext, preferredID: String? = nil, idParam: String = "X-Lumen-Job-Id",
                        model: String, images: Int, _ body: (Job) async throws -> (response: Response, result: [String: Any]))
        async throws -> Response {
        let given = request.headers[.lumenJobID]
        let job = try engine.makeJob(id: given ?? preferredID, model: model, images: images,
                                     param: given != nil ? "X-Lumen-Job-Id" : idParam)
        do {
            var (response, result) = try await cancellingOnDisconnect(context.channel, job: job) { try await body(job) }
            job.succeed(result: result)
            response.headers[.lumenJobID] = job.id
            return response
        } catch {
            var e = apiError(error)
            if e.code == "cancelled" {
                if let reason = job.cancelledBecause { e.message = "the job was cancelled: \(reason)" }
                job.cancelled()
            } else {
                job.fail(e)
            }
            throw e
        }
    }
}
