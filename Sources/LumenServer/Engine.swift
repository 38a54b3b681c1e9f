import Foundation
import HTTPTypes
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
    var step = 0
    var steps = 0
    var image = 0
    var images = 0
    var started: Date? = nil
    var jobID: String? = nil
}

/// Loaded pipelines and the queue: one generation at a time per pipeline (each has its own
/// thread), at most `queueLimit` jobs waiting in all.
final class Engine: @unchecked Sendable {
    let catalog: ModelCatalog
    let config: ServerConfiguration
    private let lock = NSLock()
    /// Loaded pipelines, most recently used last.
    private var loaded: [(name: String, pipeline: Pipeline)] = []
    private var workers: [String: DispatchQueue] = [:]
    private var waiting = 0
    private var running = 0
    private var interruptRequested = false
    private var progress = ProgressState()
    /// Seconds the last jobs took, for Retry-After.
    private var lastJobSeconds = 1.0

    init(catalog: ModelCatalog, config: ServerConfiguration) {
        self.catalog = catalog
        self.config = config
    }

    var progressSnapshot: ProgressState { lock.withLock { progress } }

    /// Asks the running job to stop at its next step.
    func interrupt() { lock.withLock { if running > 0 { interruptRequested = true } } }

    /// The model's pipeline, loaded on first use (on the worker thread, so a load queues like a
    /// job). Called with the worker's queue held.
    private func pipeline(for entry: ModelCatalog.Entry) throws -> Pipeline {
        if let p = lock.withLock({ () -> Pipeline? in
            guard let i = loaded.firstIndex(where: { $0.name == entry.name }) else { return nil }
            let item = loaded.remove(at: i)
            loaded.append(item)
            return item.pipeline
        }) { return p }
        let p = try Pipeline(modelPath: entry.path, backend: config.backend)
        lock.withLock {
            loaded.append((entry.name, p))
            while loaded.count > max(1, config.maxLoadedModels) { loaded.removeFirst() }
        }
        return p
    }

    private func worker(for name: String) -> DispatchQueue {
        lock.withLock {
            if let q = workers[name] { return q }
            let q = DispatchQueue(label: "lumen.serve.\(name)")
            workers[name] = q
            return q
        }
    }

    /// Runs one request: refused with 429 when the queue is full, cancelled before it starts
    /// when the client's task is cancelled (the client went away), stopped at the next step by
    /// `interrupt()`. `onStep` sees each step's progress.
    func generate(model entry: ModelCatalog.Entry, request: GenerationRequest,
                  onStep: @escaping @Sendable (Int, Int) -> Void = { _, _ in }) async throws -> (images: [RGBImage], pipelineInfo: (scheduler: SchedulerKind, width: Int, height: Int)) {
        let retry = lock.withLock { () -> Int? in
            if waiting >= config.queueLimit { return max(1, Int(lastJobSeconds.rounded(.up)) * (waiting + 1)) }
            waiting += 1
            return nil
        }
        if let retry {
            throw APIError(status: .tooManyRequests, message: "the queue is full (\(config.queueLimit) jobs waiting); retry later",
                           type: "rate_limit_error", code: "queue_full", retryAfter: retry)
        }
        let queue = worker(for: entry.name)
        let cancelled = CancelFlag()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                queue.async {
                    self.lock.withLock { self.waiting -= 1 }
                    if cancelled.isSet {
                        continuation.resume(throwing: CancellationError())
                        return
                    }
                    let start = Date()
                    self.lock.withLock {
                        self.running += 1
                        self.interruptRequested = false
                        self.progress = ProgressState(step: 0, steps: request.steps, image: 0, images: request.count, started: start)
                    }
                    defer {
                        self.lock.withLock {
                            self.running -= 1
                            self.lastJobSeconds = Date().timeIntervalSince(start)
                            self.progress = ProgressState()
                        }
                    }
                    do {
                        let pipeline = try self.pipeline(for: entry)
                        let (w, h) = pipeline.size(for: request)
                        let kind = pipeline.schedulerKind(for: request)
                        let images = try pipeline.generate(request) { event in
                            if case .step(let i, let n, _) = event {
                                let stop = self.lock.withLock { () -> Bool in
                                    self.progress.step = i
                                    self.progress.steps = n
                                    return self.interruptRequested
                                }
                                onStep(i, n)
                                if stop { throw InterruptedError() }
                            }
                        }
                        continuation.resume(returning: (images, (kind, w, h)))
                    } catch {
                        continuation.resume(throwing: error)
                    }
                }
            }
        } onCancel: {
            cancelled.set()
        }
    }
}

/// The job was stopped by `/sdapi/v1/interrupt`.
struct InterruptedError: Error {}

final class CancelFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}
