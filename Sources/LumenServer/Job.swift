import Foundation
import NIOCore

/// One client request's generation: its id, state and progress, and the server-sent events its
/// listeners (`GET /lumen/v1/jobs/ID/events`) receive. A request of several batches (A1111's
/// `n_iter`) is one job whose batches queue one after another.
final class Job: @unchecked Sendable {
    enum State: String {
        case queued, running, done, failed, cancelled
        var isFinal: Bool { self == .done || self == .failed || self == .cancelled }
    }

    let id: String
    let model: String
    let created = Date()
    private let lock = NSLock()
    private var state_ = State.queued
    private var step = 0, steps = 0, image = 0, images = 1
    private var started: Date?
    private var batchStarted: Date?
    private var finished: Date?
    private var result: [String: Any]?
    /// Bytes of base64 image text the result holds (the engine bounds what finished jobs keep).
    private(set) var resultBytes = 0
    private var error: APIError?
    private var cancelReason: String?
    /// The running batch's latest step preview (base64 PNG), for a listener that arrives between
    /// previews and for the job's record.
    private var latestPreview: String?
    /// What cancels the job's current batch while it waits (set by the engine while queued).
    private var onCancel: (@Sendable () -> Void)?
    private var listeners: [UUID: Listener] = [:]

    /// One `GET …/events` stream, and when it was last written to (for its keep-alive comments).
    private struct Listener {
        let continuation: AsyncStream<ByteBuffer>.Continuation
        var lastSent: Date
    }

    init(id: String, model: String, images: Int) {
        self.id = id
        self.model = model
        self.images = images
    }

    var state: State { lock.withLock { state_ } }
    var isCancelRequested: Bool { lock.withLock { cancelReason != nil } }
    var hasStarted: Bool { lock.withLock { started != nil } }

    /// Asks the job to stop: a waiting batch is dropped without running, a running one stops at
    /// its next step. `reason` is said in the `cancelled` event.
    func cancel(reason: String) {
        let handler = lock.withLock { () -> (@Sendable () -> Void)? in
            guard !state_.isFinal, cancelReason == nil else { return nil }
            cancelReason = reason
            let h = onCancel
            onCancel = nil
            return h
        }
        handler?()
    }

    /// Cancels the job only if a batch of it is waiting (has a cancel handler): a running batch
    /// is left to finish. True when it was cancelled.
    func cancelIfWaiting(reason: String) -> Bool {
        let handler = lock.withLock { () -> (@Sendable () -> Void)? in
            guard !state_.isFinal, cancelReason == nil, let h = onCancel else { return nil }
            cancelReason = reason
            onCancel = nil
            return h
        }
        handler?()
        return handler != nil
    }

    /// The reason it was asked to stop, if it was.
    var cancelledBecause: String? { lock.withLock { cancelReason } }

    /// Set by the engine while a batch waits; nil once it runs. Returns false (and sets nothing)
    /// when the job was already asked to stop.
    func setCancelHandler(_ handler: (@Sendable () -> Void)?) -> Bool {
        lock.withLock {
            if handler != nil && cancelReason != nil { return false }
            onCancel = handler
            return true
        }
    }

    // MARK: - Transitions (the engine's and the routes')

    func queued(position: Int) {
        let event = lock.withLock { () -> ByteBuffer? in
            guard !state_.isFinal else { return nil }
            state_ = .queued
            return Self.event("queued", ["id": id, "state": "queued", "position": position])
        }
        event.map(broadcast)
    }

    /// A batch of `count` images starting at image `first` (0-based) of the job begins.
    func running(steps: Int, firstImage: Int) {
        let event = lock.withLock { () -> ByteBuffer? in
            guard !state_.isFinal else { return nil }
            state_ = .running
            let now = Date()
            if started == nil { started = now }
            batchStarted = now
            step = 0
            self.steps = steps
            image = firstImage
            latestPreview = nil
            return Self.event("started", ["id": id, "state": "running", "steps": steps, "image": firstImage, "images": images])
        }
        event.map(broadcast)
    }

    /// Step `index` of `count` is done. `preview`: the step's preview image as base64 PNG (with
    /// `--preview-taesd`, every `--preview-every` steps), else nil, sent as null.
    func stepped(_ index: Int, of count: Int, preview: String? = nil) {
        let event = lock.withLock { () -> ByteBuffer in
            step = index
            steps = count
            var fields = progressFields()
            if let preview {
                fields["preview"] = preview
                latestPreview = preview
            }
            return Self.event("step", fields)
        }
        broadcast(event)
    }

    /// Seconds left in the running batch, from its pace so far (nil before its first step).
    private func eta() -> Double? {
        guard let batchStarted, step > 0 else { return nil }
        return Date().timeIntervalSince(batchStarted) / Double(step) * Double(steps - step)
    }

    /// `step`/`total` of the running batch, its first image of `images`, the seconds left, and
    /// `preview` (null here; `stepped` fills it on the steps that have one).
    private func progressFields() -> [String: Any] {
        ["id": id, "state": state_.rawValue, "step": step, "total": steps, "image": image, "images": images,
         "eta": eta().map { ($0 * 1000).rounded() / 1000 } ?? NSNull(), "preview": NSNull()]
    }

    func succeed(result: [String: Any]) {
        let bytes = ((result["data"] as? [[String: Any]]) ?? []).reduce(0) { $0 + (($1["b64_json"] as? String)?.utf8.count ?? 0) }
        finish(.done, ["id": id, "state": "done", "result": result]) {
            $0.result = result
            $0.resultBytes = bytes
        }
    }

    func fail(_ e: APIError) {
        finish(.failed, ["id": id, "state": "failed", "error": Self.errorObject(e)]) { $0.error = e }
    }

    func cancelled() {
        let reason = lock.withLock { cancelReason ?? "cancelled" }
        finish(.cancelled, ["id": id, "state": "cancelled", "reason": reason]) { _ in }
    }

    private func finish(_ s: State, _ fields: [String: Any], _ update: (Job) -> Void) {
        let (event, streams) = lock.withLock { () -> (ByteBuffer?, [AsyncStream<ByteBuffer>.Continuation]) in
            guard !state_.isFinal else { return (nil, []) }
            state_ = s
            finished = Date()
            onCancel = nil
            latestPreview = nil
            update(self)
            let streams = listeners.values.map(\.continuation)
            listeners.removeAll()
            return (Self.event(s == .done ? "done" : s == .failed ? "error" : "cancelled", fields), streams)
        }
        guard let event else { return }
        for c in streams {
            c.yield(event)
            c.finish()
        }
    }

    private func broadcast(_ event: ByteBuffer) {
        let streams = lock.withLock { () -> [AsyncStream<ByteBuffer>.Continuation] in
            let now = Date()
            for key in listeners.keys { listeners[key]?.lastSent = now }
            return listeners.values.map(\.continuation)
        }
        for c in streams { c.yield(event) }
    }

    /// An SSE comment: clients ignore it; it keeps proxies and idle-connection timers from closing
    /// a stream that waits in the queue or between slow steps, and shows a gone client on write.
    static let keepAliveComment = ": keep-alive\n\n"

    /// The job's events from now on, starting with where it stands (`queued`, `step` with the
    /// last step and the batch's latest preview, or the final event, after which the stream ends).
    /// With `keepAlive` (seconds), a `: keep-alive` comment goes out whenever that long has passed
    /// without an event.
    func events(keepAlive: Double? = nil) -> AsyncStream<ByteBuffer> {
        // A listener that stops reading is dropped when its stream ends; until then at most the
        // newest 256 events wait for it.
        AsyncStream(bufferingPolicy: .bufferingNewest(256)) { continuation in
            let key = UUID()
            let live = lock.withLock { () -> Bool in
                switch state_ {
                case .queued:
                    continuation.yield(Self.event("queued", ["id": id, "state": "queued"]))
                case .running:
                    var fields = progressFields()
                    if let latestPreview { fields["preview"] = latestPreview }
                    continuation.yield(Self.event("step", fields))
                case .done:
                    continuation.yield(Self.event("done", ["id": id, "state": "done", "result": result ?? [:]]))
                case .failed:
                    continuation.yield(Self.event("error", ["id": id, "state": "failed", "error": error.map(Self.errorObject) ?? [:]]))
                case .cancelled:
                    continuation.yield(Self.event("cancelled", ["id": id, "state": "cancelled", "reason": cancelReason ?? "cancelled"]))
                }
                if state_.isFinal {
                    continuation.finish()
                    return false
                }
                listeners[key] = Listener(continuation: continuation, lastSent: Date())
                return true
            }
            guard live else { return }
            var pinger: Task<Void, Never>? = nil
            if let interval = keepAlive, interval > 0 {
                pinger = Task { [weak self] in
                    while !Task.isCancelled, let wait = self?.keepAlive(key, every: interval) {
                        try? await Task.sleep(nanoseconds: UInt64(wait * 1e9))
                    }
                }
            }
            continuation.onTermination = { [weak self, pinger] _ in
                pinger?.cancel()
                guard let self else { return }
                self.lock.withLock { _ = self.listeners.removeValue(forKey: key) }
            }
        }
    }

    /// Writes a keep-alive comment to listener `key` when `interval` seconds have passed since
    /// its last write. Returns the seconds until the next one may be due; nil once it is gone.
    private func keepAlive(_ key: UUID, every interval: Double) -> Double? {
        let (due, stream) = lock.withLock { () -> (Double?, AsyncStream<ByteBuffer>.Continuation?) in
            guard let l = listeners[key] else { return (nil, nil) }
            let due = l.lastSent.addingTimeInterval(interval).timeIntervalSinceNow
            if due > 0.001 { return (due, nil) }
            listeners[key]?.lastSent = Date()
            return (interval, l.continuation)
        }
        stream?.yield(ByteBuffer(string: Self.keepAliveComment))
        return due
    }

    /// `GET /lumen/v1/jobs/ID`.
    var snapshot: [String: Any] {
        lock.withLock {
            var o = progressFields()
            if let latestPreview { o["preview"] = latestPreview }
            o["object"] = "image.job"
            o["model"] = model
            o["created"] = Int(created.timeIntervalSince1970)
            o["started"] = started.map { Int($0.timeIntervalSince1970) } ?? NSNull()
            o["finished"] = finished.map { Int($0.timeIntervalSince1970) } ?? NSNull()
            o["events"] = "/lumen/v1/jobs/\(id)/events"
            if let result { o["result"] = result }
            if let error { o["error"] = Self.errorObject(error) }
            if state_ == .cancelled { o["reason"] = cancelReason ?? "cancelled" }
            return o
        }
    }

    static func errorObject(_ e: APIError) -> [String: Any] {
        ["message": e.message, "type": e.type, "param": e.param ?? NSNull(), "code": e.code ?? NSNull()]
    }

    /// One server-sent event: `event: NAME` and one `data:` line of JSON.
    static func event(_ name: String, _ fields: [String: Any]) -> ByteBuffer {
        let data = (try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return ByteBuffer(string: "event: \(name)\ndata: \(String(decoding: data, as: UTF8.self))\n\n")
    }

    /// A job id a client may choose (`X-Lumen-Job-Id`, A1111's `force_task_id`).
    static func isValidID(_ s: String) -> Bool {
        (1...64).contains(s.utf8.count) && s.utf8.allSatisfy { c in
            (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 45 || c == 95
        }
    }
}
