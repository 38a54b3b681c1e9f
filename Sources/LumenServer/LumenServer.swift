import Foundation
import Hummingbird
import Logging
import Lumen
import NIOCore
import ServiceLifecycle

/// `lumen serve`: the OpenAI images API and AUTOMATIC1111's API over one loaded-model queue.
public final class LumenServer: Sendable {
    let engine: Engine
    let config: ServerConfiguration
    let results: ResultStore
    let logger: Logger

    public init(configuration: ServerConfiguration, logger: Logger = Logger(label: "lumen.serve")) throws {
        let catalog = try ModelCatalog(modelPaths: configuration.modelPaths, modelsDirs: configuration.modelsDirs)
        self.config = configuration
        self.engine = Engine(catalog: catalog, config: configuration, logger: logger)
        self.results = ResultStore()
        self.logger = logger
    }

    public var modelNames: [String] { engine.catalog.entries.map(\.name) }

    /// Runs until SIGINT/SIGTERM (`gracefulShutdownSignals`) or until the task is cancelled;
    /// `onRunning` gets the bound port (useful with port 0). A signal begins a graceful shutdown:
    /// the jobs still waiting are cancelled (their requests answer 503, their event streams end
    /// with `cancelled`), new ones are refused, the running batches finish and their requests are
    /// answered, then the server stops listening and this returns.
    public func run(gracefulShutdownSignals: Bool = true, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let router = Router(context: LumenRequestContext.self)
        router.add(middleware: APIMiddleware(apiKey: config.apiKey))
        addRoutes(router)
        addJobRoutes(router)
        addPageRoutes(router)
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(config.host, port: config.port), serverName: "lumen"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
        // Services shut down in reverse order: the engine's hook first (waiting jobs cancelled, so
        // their requests end), then the HTTP server (which waits for the requests in flight).
        let group = ServiceGroup(configuration: .init(
            services: [app, EngineShutdown(engine: engine)],
            gracefulShutdownSignals: gracefulShutdownSignals ? [.sigterm, .sigint] : [],
            logger: logger))
        try await group.run()
        // A submitted job's running batch has no request in flight: let it finish too.
        await engine.waitUntilIdle()
    }

    // MARK: - Request parsing helpers

    func body(_ request: Request) async throws -> ByteBuffer {
        var request = request
        if let length = request.headers[.contentLength].flatMap(Int.init), length > config.maxBodyBytes {
            throw APIError(status: .contentTooLarge, message: "the request body is \(length) bytes, more than the \(config.maxBodyBytes) allowed",
                           code: "body_too_large")
        }
        do {
            return try await request.collectBody(upTo: config.maxBodyBytes)
        } catch {
            throw APIError(status: .contentTooLarge, message: "the request body is more than the \(config.maxBodyBytes) bytes allowed",
                           code: "body_too_large")
        }
    }

    func jsonObject(_ request: Request) async throws -> [String: Any] {
        let buffer = try await body(request)
        guard let object = try? JSONSerialization.jsonObject(with: Data(buffer: buffer)) as? [String: Any] else {
            throw APIError(status: .badRequest, message: "the request body is not a JSON object")
        }
        return object
    }

    /// Bounds every request: size, steps, image count.
    func validate(width: Int?, height: Int?, steps: Int, count: Int) throws {
        for (name, v) in [("width", width), ("height", height)] {
            guard let v else { continue }
            if v < 8 || v > config.maxSide || v % 8 != 0 {
                throw APIError(status: .badRequest, message: "\(name) \(v): expected a multiple of 8 from 8 to \(config.maxSide)", param: name)
            }
        }
        if steps < 1 || steps > config.maxSteps {
            throw APIError(status: .badRequest, message: "steps \(steps): expected 1 to \(config.maxSteps)", param: "steps")
        }
        if count < 1 || count > config.maxImagesPerRequest {
            throw APIError(status: .badRequest, message: "\(count) images: expected 1 to \(config.maxImagesPerRequest) a request", param: "n")
        }
    }

    /// An error from the engine as an API error that never carries a path.
    func apiError(_ error: Error) -> APIError {
        switch error {
        case let e as APIError: return e
        case is InterruptedError:
            return APIError(status: .conflict, message: "the job was interrupted", type: "server_error", code: "interrupted")
        case is CancellationError:
            return APIError(status: .serviceUnavailable, message: "the job was cancelled", type: "server_error", code: "cancelled")
        case let e as GenerationError:
            switch e {
            case .invalidRequest(let s): return APIError(status: .badRequest, message: "invalid request: \(s)")
            case .insufficientMemory: return APIError(status: .badRequest, message: "not enough memory for this request; try a smaller size or fewer images", code: "insufficient_memory")
            default: return APIError(status: .internalServerError, message: "the generation failed", type: "server_error")
            }
        default:
            logger.error("generation failed: \(error)")
            return APIError(status: .internalServerError, message: "the generation failed (the server's log says why)", type: "server_error")
        }
    }
}

/// Part of the server's service group: when the group begins a graceful shutdown, the engine
/// stops taking jobs and drops the waiting ones before the HTTP server drains its requests.
private struct EngineShutdown: Service {
    let engine: Engine

    func run() async throws {
        // Returns when the group shuts down gracefully; throws when it is cancelled.
        try? await gracefulShutdown()
        engine.beginShutdown()
    }
}

/// Images generated by this server, by id (bounded: the oldest go first), for `url` responses
/// and the page's gallery.
final class ResultStore: @unchecked Sendable {
    struct Item {
        let id: String
        let png: Data
        let parameters: [String: String]
    }
    private let lock = NSLock()
    private var items: [Item] = []
    let limit = 64

    func add(png: Data, parameters: [String: String]) -> String {
        let id = UUID().uuidString.lowercased()
        lock.withLock {
            items.append(Item(id: id, png: png, parameters: parameters))
            if items.count > limit { items.removeFirst(items.count - limit) }
        }
        return id
    }

    func get(_ id: String) -> Item? { lock.withLock { items.first { $0.id == id } } }
    var all: [Item] { lock.withLock { items } }
}

/// `--api-key`: every route but the page and its assets needs `Authorization: Bearer KEY`;
/// errors thrown by handlers become JSON in the shape of the route's API.
struct APIMiddleware: RouterMiddleware {
    typealias Context = LumenRequestContext
    let apiKey: String?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        let a1111 = path.hasPrefix("/sdapi/")
        let open = path == "/" || path.hasPrefix("/static/")
        if let apiKey, !open {
            let given = request.headers[.authorization] ?? ""
            if given != "Bearer \(apiKey)" {
                return errorResponse(APIError(status: .unauthorized,
                                              message: given.isEmpty ? "no API key given: send Authorization: Bearer KEY" : "incorrect API key",
                                              code: "invalid_api_key"), a1111: a1111)
            }
        }
        do {
            return try await next(request, context)
        } catch let e as APIError {
            return errorResponse(e, a1111: a1111)
        } catch let e as HTTPError where e.status == .notFound {
            return errorResponse(APIError(status: .notFound, message: "no route \(request.method) \(path)"), a1111: a1111)
        } catch let e as HTTPError {
            return errorResponse(APIError(status: e.status, message: e.body ?? e.status.reasonPhrase), a1111: a1111)
        }
    }
}

func jsonResponse(_ object: Any, status: HTTPResponse.Status = .ok) -> Response {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
    return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

/// OpenAI's `{"error": {message, type, param, code}}`, or FastAPI's `{"detail": ...}` (A1111)
/// with the same fields beside it.
func errorResponse(_ e: APIError, a1111: Bool) -> Response {
    let inner: [String: Any] = ["message": e.message, "type": e.type, "param": e.param ?? NSNull(), "code": e.code ?? NSNull()]
    var response = jsonResponse(a1111 ? ["detail": e.message, "error": e.type, "errors": e.message] : ["error": inner], status: e.status)
    if let retry = e.retryAfter { response.headers[.retryAfter] = String(retry) }
    return response
}
