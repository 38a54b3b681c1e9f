import Hummingbird
import NIOCore

/// The request context of `lumen serve`'s routes: Hummingbird's basic one plus the connection,
/// so a route can notice its client going away.
struct LumenRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: (any Channel)?

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// Calls `action` when the client's side of the connection ends: its end of the stream (the
/// server allows half-closed connections, so a client that closes its socket shows up as
/// `inputClosed`, not as a closed channel) or the connection closing. Hummingbird 2 does not
/// cancel a handler when its client leaves, so a queued job learns it from here.
final class DisconnectWatcher: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = NIOAny
    private let action: @Sendable () -> Void

    init(_ action: @escaping @Sendable () -> Void) { self.action = action }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.fireChannelRead(data) }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, case .inputClosed = e { action() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        action()
        context.fireChannelInactive()
    }
}

extension LumenServer {
    /// Runs `body` with a watcher on the request's connection that cancels `job` if the client
    /// goes away: a batch still waiting is then dropped without running, a running one stops at
    /// its next step.
    func cancellingOnDisconnect<T>(_ channel: (any Channel)?, job: Job, _ body: () async throws -> T) async throws -> T {
        guard let channel else { return try await body() }
        let watcher = DisconnectWatcher { job.cancel(reason: "the client disconnected") }
        try? await channel.pipeline.addHandler(watcher, position: .first).get()
        defer { channel.pipeline.removeHandler(watcher, promise: nil) }
        if !channel.isActive { job.cancel(reason: "the client disconnected") }
        return try await body()
    }
}
