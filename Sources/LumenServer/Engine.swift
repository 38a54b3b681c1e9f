import Foundation
import HTTPTypes
import Logging
import Lumen

/// An error answered to the client: status, message (never a server path), and OpenAI's
/// `type`/`param`/`code` fields.
struct APIError: Error {
    var status: HTTPResponse.Status
    var message: String
    var type = "invalid_request_error"
    var param: String? = nil
    var code: String? = nil
    /// Seconds, for 429.
    var retryAfter: Int? = nil

    init(status: HTTPResponse.Status, message: String, type: String = "invalid_request_error", param: String? = nil,
         code: String? = nil, retryAfter: Int? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retryAfter = retryAfter
    }
}

/// A job's progress, as `/sdapi/v1/progress` reports it.
struct ProgressState: Sendable {
    /// The latest step preview (base64 PNG), for A1111's `current_image`.
    var currentImage: String? = nil
    var step = 0
    var steps = 0
    var image = 0
    var images = 0
    var started: Date? = nil
    var jobID: String? = nil
}

/// Loaded pipelines, the queue and the jobs: one generation at a time per pipeline (each has its
/// own thread), at most `queueLimit` batches waiting in all.
final class Engine: @unchecked Sendable {
    let catalog: ModelCatalog
    let config: ServerConfiguration
    let logger: Logger
    private let lock = NSLock()

    private struct LoadedModel {
        let name: String
        let pipeline: Pipeline
        /// `Pipeline.weightBytes`: what keeping it loaded costs.
        let bytes: Int
    }
    /// Loaded pipelines, least recently used first.
    private var loaded: [LoadedModel] = []
    /// Batches running per model: a model running one is never unloaded.
    private var busy: [String: Int] = [:]
    private var workers: [String: DispatchQueue] = [:]
    private var waiting = 0
    private var running = 0
    private var interruptRequested = false
    /// Set by `beginShutdown()`: no batch is queued any more.
    private var shuttingDown = false
    private var progress = ProgressState()
    /// Models the preview TAESD does not fit (warned about once).
    private var previewMisfits: Set<String> = []
    /// Seconds the last batch took, for Retry-After.
    private var lastJobSeconds = 1.0
    /// Jobs by id: every live one, and the last `finishedJobsKept` finished ones, fewer when their
    /// results' images (a submitted job's `b64_json`) pass `finishedResultBytesKept`.
    private var jobs: [String: Job] = [:]
    private var jobOrder: [String] = []
    private let finishedJobsKept = 64
    private let finishedResultBytesKept = 256 << 20

    /// What `GET /lumen/v1/status` counts, per batch.
    struct Counters {
        /// Batches that began to run (a batch dropped while waiting never does).
        var started = 0
        var completed = 0
        var failed = 0
        /// Dropped before they ran: the client went away, or `DELETE /lumen/v1/jobs/ID`.
        var cancelledWaiting = 0
        /// Stopped at a step boundary for the same reasons (or by `/sdapi/v1/interrupt`: failed).
        var cancelledRunning = 0
        var loads = 0
        var evictions = 0
    }
    private var counters = Counters()

    init(catalog: ModelCatalog, config: ServerConfiguration, logger: Logger) {
        self.catalog = catalog
        self.config = config
        self.logger = logger
    }

    var progressSnapshot: ProgressState { lock.withLock { progress } }

    /// Asks the running job to stop at its next step.
    func interrupt() { lock.withLock { if running > 0 { interruptRequested = true } } }

    /// The server is stopping (SIGINT/SIGTERM): refuse new batches (503), drop every job still
    /// waiting (its `cancelled` event says why), and let the running batches finish.
    func beginShutdown() {
        let live = lock.withLock { () -> [Job] in
            shuttingDown = true
            return jobs.values.filter { !$0.state.isFinal }
        }
        let dropped = live.filter { $0.cancelIfWaiting(reason: Self.shutdownReason) }.count
        logger.info("shutting down: \(dropped) waiting job(s) cancelled, the running ones finish")
    }

    static let shutdownReason = "the server is shutting down"

    /// Returns once no batch runs or waits (after `beginShutdown()`, the running ones finishing).
    func waitUntilIdle() async {
        while lock.withLock({ running + waiting > 0 }), !Task.isCancelled {
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
    }

    // MARK: - Jobs

    /// A new job, under the client's id when it chose one (`X-Lumen-Job-Id`, `force_task_id`).
    func makeJob(id: String?, model: String, images: Int, param: String = "X-Lumen-Job-Id") throws -> Job {
        if let id, !Job.isValidID(id) {
            throw APIError(status: .badRequest, message: "\(param): a job id is 1 to 64 letters, digits, '-' or '_'", param: param)
        }
        let job = Job(id: id ?? UUID().uuidString.lowercased(), model: model, images: images)
        try lock.withLock {
            guard jobs[job.id] == nil else {
                throw APIError(status: .conflict, message: "\(param) \(job.id): a job with this id exists already", param: param, code: "job_exists")
            }
            jobs[job.id] = job
            jobOrder.append(job.id)
            // Forget the oldest finished jobs beyond the kept number and bytes (live ones stay).
            var finished = jobOrder.filter { jobs[$0]?.state.isFinal == true }
            var bytes = finished.reduce(0) { $0 + (jobs[$1]?.resultBytes ?? 0) }
            while finished.count > finishedJobsKept || (bytes > finishedResultBytesKept && !finished.isEmpty) {
                let old = finished.removeFirst()
                bytes -= jobs[old]?.resultBytes ?? 0
                jobs[old] = nil
                jobOrder.removeAll { $0 == old }
            }
        }
        return job
    }

    func job(_ id: String) -> Job? { lock.withLock { jobs[id] } }

    // MARK: - Models

    /// The model's pipeline, loaded on first use (on the worker thread, so a load queues like a
    /// job). Loading one drops the least recently used idle pipelines while more than
    /// `maxLoadedModels` are loaded or their weights exceed `modelMemoryBytes`.
    /// Step previews for `pipeline` where the configured TAESD fits its latent space (checked
    /// once per model; a misfit is logged once and the model runs without previews).
    private func previewOptions(for pipeline: Pipeline, model: String) -> PreviewOptions? {
        guard let path = config.previewTAESD else { return nil }
        do {
            _ = try pipeline.taesd(path)
            return PreviewOptions(taesdPath: path, every: max(1, config.previewEvery))
        } catch {
            let first = lock.withLock { previewMisfits.insert(model).inserted }
            if first { logger.warning("no step previews for \(model): \(error)") }
            return nil
        }
    }

    private func pipeline(for entry: ModelCatalog.Entry) throws -> Pipeline {
        if let p = lock.withLock({ () -> Pipeline? in
            guard let i = loaded.firstIndex(where: { $0.name == entry.name }) else { return nil }
            let item = loaded.remove(at: i)
            loaded.append(item)
            return item.pipeline
        }) { return p }
        // Opening maps the files and reads nothing (weights are read as programs compile), so
        // the idle pipelines over the bound are dropped before the new one's first compile.
        let p = try Pipeline(modelPath: entry.path, backend: config.backend)
        let bytes = p.weightBytes
        lock.withLock {
            loaded.append(LoadedModel(name: entry.name, pipeline: p, bytes: bytes))
            counters.loads += 1
            evictLocked(keeping: entry.name)
        }
        logger.info("loaded \(entry.name): \(bytes) bytes of weights")
        return p
    }

    /// Drops idle pipelines, least recently used first, until at most `maxLoadedModels` are
    /// loaded and their weights fit `modelMemoryBytes`. A busy pipeline (and `name`'s) stays;
    /// the bound is then exceeded until a later load finds them idle.
    private func evictLocked(keeping name: String) {
        func over() -> Bool {
            if loaded.count > max(1, config.maxLoadedModels) { return true }
            guard let limit = config.modelMemoryBytes else { return false }
            return loaded.reduce(0) { $0 + $1.bytes } > limit
        }
        var i = 0
        while over(), i < loaded.count {
            let m = loaded[i]
            if m.name == name || busy[m.name, default: 0] > 0 {
                i += 1
                continue
            }
            loaded.remove(at: i)
            counters.evictions += 1
            logger.info("unloaded \(m.name) (\(m.bytes) bytes of weights), the least recently used idle model")
        }
    }

    private func worker(for name: String) -> DispatchQueue {
        lock.withLock {
            if let q = workers[name] { return q }
            let q = DispatchQueue(label: "lumen.serve.\(name)")
            workers[name] = q
            return q
        }
    }

    /// `GET /lumen/v1/status`: the queue, the counters and the models.
    var status: [String: Any] {
        lock.withLock {
            let loadedBytes = loaded.reduce(0) { $0 + $1.bytes }
            return [
                "queue": ["waiting": waiting, "running": running, "limit": config.queueLimit],
                "batches": ["started": counters.started, "completed": counters.completed, "failed": counters.failed,
                            "cancelled_waiting": counters.cancelledWaiting, "cancelled_running": counters.cancelledRunning],
                "models": catalog.entries.map { e -> [String: Any] in
                    let l = loaded.first { $0.name == e.name }
                    return ["name": e.name, "loaded": l != nil, "weight_bytes": l.map { $0.bytes as Any } ?? NSNull(),
                            "busy": busy[e.name, default: 0] > 0]
                },
                "model_memory": ["limit": config.modelMemoryBytes.map { $0 as Any } ?? NSNull(), "loaded_bytes": loadedBytes,
                                 "max_loaded_models": config.maxLoadedModels, "loads": counters.loads, "evictions": counters.evictions],
            ]
        }
    }

    // MARK: - Running

    /// Runs one batch of `job`: refused with 429 when the queue is full; dropped without running
    /// when the job is cancelled while it waits (the client went away, or the job was deleted);
    /// stopped at the next step when it is cancelled while it runs, or by `interrupt()`.
    func generate(model entry: ModelCatalog.Entry, request: GenerationRequest, job: Job, firstImage: Int = 0) async throws -> Output {
        let promise = try enqueue(model: entry, request: request, job: job, firstImage: firstImage)
        return try await withTaskCancellationHandler {
            try await promise.value
        } onCancel: {
            job.cancel(reason: "the request was cancelled")
        }
    }

    typealias Output = (images: [RGBImage], pipelineInfo: (scheduler: SchedulerKind, width: Int, height: Int))

    /// Queues one batch of `job` (429 at once when the queue is full); its images arrive in the
    /// promise. See `generate`.
    func enqueue(model entry: ModelCatalog.Entry, request: GenerationRequest, job: Job, firstImage: Int = 0) throws -> Promise<Output> {
        let ahead = lock.withLock { () -> Int? in
            if shuttingDown || waiting >= config.queueLimit { return nil }
            waiting += 1
            return waiting - 1 + running
        }
        if ahead == nil, lock.withLock({ shuttingDown }) {
            throw APIError(status: .serviceUnavailable, message: "\(Self.shutdownReason); no new jobs are taken", type: "server_error",
                           code: "shutting_down")
        }
        guard let ahead else {
            let retry = lock.withLock { max(1, Int(lastJobSeconds.rounded(.up)) * (waiting + 1)) }
            throw APIError(status: .tooManyRequests, message: "the queue is full (\(config.queueLimit) jobs waiting); retry later",
                           type: "rate_limit_error", code: "queue_full", retryAfter: retry)
        }
        let promise = Promise<Output>()
        let ticket = Ticket()
        let dropWhileWaiting: @Sendable () -> Void = { [self] in
            let dropped = lock.withLock { () -> Bool in
                guard ticket.state == .waiting else { return false }
                ticket.state = .dropped
                waiting -= 1
                counters.cancelledWaiting += 1
                return true
            }
            if dropped {
                job.cancelled()
                promise.resolve(.failure(CancellationError()))
            }
        }
        guard job.setCancelHandler(dropWhileWaiting) else {
            dropWhileWaiting()
            throw CancellationError()
        }
        job.queued(position: ahead)
        worker(for: entry.name).async {
            // Claim the batch, unless it was dropped while it waited.
            let claimed = self.lock.withLock { () -> Bool in
                guard ticket.state == .waiting else { return false }
                ticket.state = .claimed
                self.waiting -= 1
                return true
            }
            guard claimed else { return }
            _ = job.setCancelHandler(nil)
            if job.isCancelRequested {  // cancelled between the claim and here: still not run
                self.lock.withLock { self.counters.cancelledWaiting += 1 }
                job.cancelled()
                promise.resolve(.failure(CancellationError()))
                return
            }
            let start = Date()
            self.lock.withLock {
                self.running += 1
                self.busy[entry.name, default: 0] += 1
                self.counters.started += 1
                self.interruptRequested = false
                self.progress = ProgressState(step: 0, steps: request.steps, image: firstImage, images: request.count, started: start, jobID: job.id)
            }
            job.running(steps: request.steps, firstImage: firstImage)
            defer {
                self.lock.withLock {
                    self.running -= 1
                    self.busy[entry.name, default: 1] -= 1
                    self.lastJobSeconds = Date().timeIntervalSince(start)
                    self.progress = ProgressState()
                }
            }
            do {
                let pipeline = try self.pipeline(for: entry)
                let (w, h) = pipeline.size(for: request)
                let kind = pipeline.schedulerKind(for: request)
                var request = request
                request.previews = self.previewOptions(for: pipeline, model: entry.name)
                // A preview arrives just before its step's `.step` event, which carries it.
                var preview: String? = nil
                let images = try pipeline.generate(request) { event in
                    if case .preview(_, _, let images) = event, let first = images.first {
                        preview = try? PNGCodec.encode(first).base64EncodedString()
                        if let preview { self.lock.withLock { self.progress.currentImage = preview } }
                    }
                    if case .step(let i, let n, _) = event {
                        let stop = self.lock.withLock { () -> Bool in
                            self.progress.step = i
                            self.progress.steps = n
                            return self.interruptRequested
                        }
                        job.stepped(i, of: n, preview: preview)
                        preview = nil
                        if stop { throw InterruptedError() }
                        if job.isCancelRequested { throw CancellationError() }
                    }
                }
                self.lock.withLock { self.counters.completed += 1 }
                promise.resolve(.success((images, (kind, w, h))))
            } catch {
                self.lock.withLock {
                    if error is CancellationError { self.counters.cancelledRunning += 1 } else { self.counters.failed += 1 }
                }
                promise.resolve(.failure(error))
            }
        }
        return promise
    }
}

/// Where a batch is: waiting in its model's queue, claimed by the worker, or dropped unrun.
/// Read and written under the engine's lock.
private final class Ticket: @unchecked Sendable {
    enum State { case waiting, claimed, dropped }
    var state = State.waiting
}

/// A value that arrives once, awaited by one task.
final class Promise<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var result: Result<T, Error>?
    private var continuation: CheckedContinuation<T, Error>?

    func resolve(_ r: Result<T, Error>) {
        let c = lock.withLock { () -> CheckedContinuation<T, Error>? in
            guard result == nil else { return nil }
            result = r
            defer { continuation = nil }
            return continuation
        }
        c?.resume(with: r)
    }

    var value: T {
        get async throws {
            try await withCheckedThrowingContinuation { c in
                let r = lock.withLock { () -> Result<T, Error>? in
                    if let result { return result }
                    continuation = c
                    return nil
                }
                if let r { c.resume(with: r) }
            }
        }
    }
}

/// The job was stopped by `/sdapi/v1/interrupt`.
struct InterruptedError: Error {}
