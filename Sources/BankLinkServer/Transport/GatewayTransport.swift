import BankLinkCore
import GRPCCore
import GRPCNIOTransportCore
import NIOCore
import NIOExtras
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NIOSSL
import Synchronization

/// banklinkd's gRPC server transport: HTTP/2 over mutual TLS on swift-nio-http2, with the hot
/// unary methods answered in each stream's pipeline (``UnaryFastPath``) and every other call
/// handed to gRPC Swift's server as an `RPCStream`.
///
/// Why not grpc-swift-nio-transport's `HTTP2ServerTransport`: it gives every stream an async
/// channel and a task before its HEADERS are read, so even a call answered in the pipeline pays
/// for them — about half of the server's CPU per fast call (docs/architecture.md, "The gRPC
/// transport"). Here a stream costs a task only when its HEADERS name a method gRPC Swift serves.
///
/// What it keeps of grpc-swift-nio-transport (``GatewayStreamHandler``,
/// ``GatewayConnectionHandler``): the request checks and their statuses, trailers and
/// trailers-only answers, percent-encoded `grpc-message`, metadata, cancellation of the handler
/// when the client resets the stream or the connection goes, the HTTP/2 settings (window, frame
/// size, header list size, concurrent streams), keepalive and client PING policing, idle
/// connections closed, and the two-step `GOAWAY` on drain. `grpc-timeout` is enforced by gRPC
/// Swift's executor (for calls it serves) and by the fast path. `GatewayServer.Configuration`
/// `transport = .grpcNIO` (`BANKLINK_TRANSPORT=grpc-nio`) serves with grpc-swift-nio-transport
/// instead, for comparison.
public final class GatewayTransport: ServerTransport {
  public typealias Bytes = GatewayBytes

  struct Configuration: Sendable {
    var host: String
    var port: Int
    var sslContext: NIOSSLContext
    var verifier: ClientCertificateVerifier
    var peers: ConnectionPeers
    var admission: ConnectionAdmission
    var limits: ConnectionLimits
    var fastPath: UnaryFastPath?
    var connection: GatewayConnectionHandler.Settings
    var eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
  }

  /// HTTP/2 settings, as grpc-swift-nio-transport's defaults set them (a 64 KiB window, 16 KiB
  /// frames, its header list bound) with banklinkd's stream limit.
  static let targetWindowSize = (1 << 16) - 1
  static let maxFrameSize = 1 << 14

  private let configuration: Configuration
  private let quiescing: ServerQuiescingHelper
  private let descriptors = Mutex<[String: MethodDescriptor]>([:])
  private let accepted: AsyncStream<AcceptedStream>
  private let acceptor: AsyncStream<AcceptedStream>.Continuation
  private let address: EventLoopPromise<NIOCore.SocketAddress?>
  private let published = Atomic<Bool>(false)
  private let shuttingDown = Atomic<Bool>(false)
  private let acceptedCount = Atomic<Int>(0)

  init(configuration: Configuration) {
    self.configuration = configuration
    self.quiescing = ServerQuiescingHelper(group: configuration.eventLoopGroup)
    // Unbounded: each element is a stream the HTTP/2 layer already admitted (within its
    // concurrent-streams limit per connection and the connection limits), not a new buffer.
    (self.accepted, self.acceptor) = AsyncStream.makeStream(of: AcceptedStream.self)
    self.address = configuration.eventLoopGroup.any().makePromise()
  }

  deinit {
    self.publish(nil)
  }

  /// The address listened on, once bound (nil if binding failed or the transport stopped).
  var listeningAddress: NIOCore.SocketAddress? {
    get async { try? await self.address.futureResult.get() }
  }

  public func configure(context: GRPCServerContext) {
    self.descriptors.withLock { descriptors in
      for method in context.methods { descriptors["/" + method.fullyQualifiedMethod] = method }
    }
  }

  public func listen(
    streamHandler: @escaping @Sendable (_ stream: RPCStream<Inbound, Outbound>, _ context: ServerContext) async -> Void
  ) async throws {
    let server: any Channel
    do {
      server = try await self.bind()
    } catch {
      self.publish(nil)
      throw error
    }
    self.publish(server.localAddress)
    await withDiscardingTaskGroup { group in
      for await stream in self.accepted {
        group.addTask { await Self.serve(stream, handler: streamHandler) }
      }
    }
    // Drained (every connection closed after the shutdown began), or cancelled: then the
    // connections still open are closed too, not left serving refusals.
    try? await server.close()
    if !self.shuttingDown.load(ordering: .acquiring) { self.configuration.admission.closeAll() }
  }

  public func beginGracefulShutdown() {
    guard !self.shuttingDown.exchange(true, ordering: .acquiringAndReleasing) else { return }
    // Closes the listener and sends each connection the quiesce event (GatewayConnectionHandler
    // drains it); once every connection has closed, the listen loop ends. (Before `listen`
    // bound, the helper fails the promise at once: the loop ends as soon as it starts.)
    let drained = self.configuration.eventLoopGroup.any().makePromise(of: Void.self)
    drained.futureResult.whenComplete { [acceptor = self.acceptor] _ in acceptor.finish() }
    self.quiescing.initiateShutdown(promise: drained)
  }

  /// Streams handed to gRPC Swift (each given a task) since the transport started.
  var streamsAccepted: Int { self.acceptedCount.load(ordering: .relaxed) }

  private func accept(_ stream: AcceptedStream) -> Bool {
    guard case .enqueued = self.acceptor.yield(stream) else { return false }
    self.acceptedCount.add(1, ordering: .relaxed)
    return true
  }

  private func publish(_ address: NIOCore.SocketAddress?) {
    guard !self.published.exchange(true, ordering: .acquiringAndReleasing) else { return }
    self.address.succeed(address)
  }

  // MARK: Listening

  private func bind() async throws -> any Channel {
    let configuration = self.configuration
    let quiescing = self.quiescing
    let shared = GatewayStreamHandler.Shared(
      descriptorsByPath: self.descriptors.withLock { $0 },
      maxRequestMessageBytes: Limits.maxRequestMessageBytes,
      accept: { [self] stream in self.accept(stream) })
    return try await ServerBootstrap(group: configuration.eventLoopGroup)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .serverChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
        }
      }
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try Self.configureConnection(channel, configuration: configuration, shared: shared)
        }
      }
      .bind(host: configuration.host, port: configuration.port).get()
  }

  /// One accepted connection's pipeline: the peer registry and TLS as `GatewayListenerFactory`
  /// sets them up, admission (``ConnectionAdmission``), then HTTP/2 and, per stream,
  /// ``RequestStreamGuard``, ``UnaryFastPathHandler`` and ``GatewayStreamHandler``.
  static func configureConnection(
    _ channel: any Channel, configuration: Configuration, shared: GatewayStreamHandler.Shared
  ) throws {
    let sync = channel.pipeline.syncOperations
    let peer = try GatewayListenerFactory.addTLS(
      to: channel, sslContext: configuration.sslContext, verifier: configuration.verifier, peers: configuration.peers)

    var connection = NIOHTTP2Handler.ConnectionConfiguration()
    connection.targetWindowSize = Self.targetWindowSize
    connection.initialSettings = [
      HTTP2Setting(parameter: .initialWindowSize, value: Self.targetWindowSize),
      HTTP2Setting(parameter: .maxFrameSize, value: Self.maxFrameSize),
      HTTP2Setting(parameter: .maxHeaderListSize, value: HPACKDecoder.defaultMaxHeaderListSize),
      HTTP2Setting(parameter: .maxConcurrentStreams, value: Limits.maxConcurrentStreamsPerConnection),
    ]
    var stream = NIOHTTP2Handler.StreamConfiguration()
    stream.targetWindowSize = Self.targetWindowSize
    let limits = configuration.limits
    let fastPath = configuration.fastPath
    let registeredPeer = peer.registered ? peer : nil
    let connectionHandler = GatewayConnectionHandler(settings: configuration.connection)
    let manager = NIOLoopBound(connectionHandler, eventLoop: channel.eventLoop)
    // The connection's admission guard (its buffering budget), found once it is installed.
    let connectionGuard = NIOLoopBoundBox<ConnectionGuard?>(nil, eventLoop: channel.eventLoop)
    let delegate = GatewayConnectionHandler.StreamDelegate(handler: connectionHandler)
    _ = try sync.configureHTTP2Pipeline(
      mode: .server, connectionConfiguration: connection, streamConfiguration: stream, streamDelegate: delegate
    ) {
      streamChannel in
      streamChannel.eventLoop.makeCompletedFuture {
        let streamSync = streamChannel.pipeline.syncOperations
        try streamSync.addHandler(RequestStreamGuard(limits: limits, connection: connectionGuard.value, connectionManager: manager.value))
        if let fastPath { try streamSync.addHandler(UnaryFastPathHandler(fastPath: fastPath, peer: registeredPeer)) }
        try streamSync.addHandler(GatewayStreamHandler(shared: shared))
      }
    }
    try sync.addHandler(connectionHandler)
    // Admission last: it places its guard in front of the HTTP/2 handler, or closes the channel.
    try configuration.admission.installSynchronously(on: channel)
    connectionGuard.value = try? sync.handler(type: ConnectionGuard.self)
  }

  // MARK: Streams

  /// Runs one call gRPC Swift serves. The task ends when gRPC Swift's handler returns; it does
  /// not wait for the stream to close (``GatewayStreamHandler/callEnded()`` ends the stream on its
  /// event loop). Waiting there kept every finished call's task, its frames and its stream alive
  /// until the cooperative pool came back to it — under load, two to three times as many tasks as
  /// calls in flight, and most of the heap that load grew (docs/BENCHMARKS.md).
  private static func serve(
    _ stream: AcceptedStream, handler: @Sendable (_ stream: RPCStream<Inbound, Outbound>, _ context: ServerContext) async -> Void
  ) async {
    let channel = stream.channel
    let streamHandler = stream.handler
    await withServerContextRPCCancellationHandle { handle in
      channel.eventLoop.execute { streamHandler.value.setCancellationHandle(handle) }
      let rpc = RPCStream(
        descriptor: stream.descriptor,
        inbound: RPCAsyncSequence(wrapping: stream.requests),
        outbound: RPCWriter.Closable(
          wrapping: ResponseWriter(channel: channel, streamsResponses: stream.descriptor.type?.streamsResponses ?? true)))
      let context = ServerContext(
        descriptor: stream.descriptor, remotePeer: stream.remotePeer, localPeer: stream.localPeer, cancellation: handle)
      if let deadline = stream.deadline {
        await RequestDeadline.$current.withValue(deadline) { await handler(rpc, context) }
      } else {
        await handler(rpc, context)
      }
    }
    channel.eventLoop.execute { streamHandler.value.callEnded() }
  }

  /// The response side of a call: parts are written into the stream's pipeline without waiting.
  /// A streaming response waits, once the stream is found not writable (the client reads
  /// slowly), until each part has gone out, so a call buffers at most what it wrote before the
  /// event loop marked the stream unwritable, plus one part. A single response (unary,
  /// client-streaming) never waits: it is one message and its status, and its writes are only
  /// flushed with the status (``GatewayStreamHandler``), so waiting for one before the status
  /// would never end. Finishing with an error fails the call (the stream is reset).
  struct ResponseWriter: ClosableRPCWriterProtocol {
    typealias Element = RPCResponsePart<GatewayBytes>
    let channel: any Channel
    let streamsResponses: Bool

    func write(_ element: Element) async throws {
      guard self.channel.isActive else { throw GatewayStreamHandler.closedEarly }
      if !self.streamsResponses || self.channel.isWritable {
        self.channel.writeAndFlush(element, promise: nil)
      } else {
        try await self.channel.writeAndFlush(element).get()
      }
    }

    func write(contentsOf elements: some Sequence<Element>) async throws {
      for element in elements { try await self.write(element) }
    }

    func finish() {
      // Nothing to do: the stream ends when the call's task does (`callEnded`).
    }

    func finish(throwing error: any Error) {
      self.channel.pipeline.fireErrorCaught(error)
    }
  }
}

extension MethodDescriptor.RPCType {
  /// Whether the server answers with a stream of messages.
  var streamsResponses: Bool {
    switch self {
    case .serverStreaming, .bidirectionalStreaming: true
    case .unary, .clientStreaming: false
    }
  }
}
