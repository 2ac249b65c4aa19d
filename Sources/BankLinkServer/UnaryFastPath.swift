import BankLinkCore
import GRPCCore
import NIOCore
import NIOHPACK
import NIOHTTP2
import SwiftProtobuf
import Synchronization

/// The hot unary methods answered on the stream's event loop, without gRPC Swift's per-call
/// machinery: `grpc.health.v1.Health/Check`, `banklink.v1.AdminService/WhoAmI`,
/// `banklink.v1.AccountService/GetBalance` without `refresh` and
/// `banklink.v1.PaymentService/GetPayment` (an ERP polling its payments) — each answered
/// synchronously from memory or LMDB read transactions.
///
/// Why: under a standard gRPC client, a bare grpc-swift-2 server costs 6–8× the CPU per call of a
/// C++ gRPC server (docs/BENCHMARKS.md, `make bench-grpc`); the profile is the framework's per-call
/// work (tasks, async sequences, interceptor and router closures, generic metadata look-ups),
/// not ours. See docs/architecture.md, "The unary fast path".
///
/// How: a ``UnaryFastPathHandler`` sits in every HTTP/2 stream's pipeline behind
/// ``RequestStreamGuard`` and ahead of the transport's gRPC stream handler
/// (``GatewayStreamHandler``, or grpc-swift-nio-transport's). For a fast method it holds the
/// request's frames until the request is complete, then answers it itself — or, when the request
/// is anything but plain, hands the held frames to gRPC Swift as if it had never been there, so
/// every unusual case keeps gRPC Swift's own behaviour:
/// - compression (`grpc-encoding` other than `identity`, a compressed message): gRPC Swift's
///   refusal (`UNIMPLEMENTED` with `grpc-accept-encoding`, or `INTERNAL`);
/// - a `content-type` other than `application/grpc` or `application/grpc+proto`, a method other
///   than POST, a `:scheme` other than http or https, no message or more than one, client
///   trailers, a message that does not parse: gRPC Swift's answer;
/// - a request over ``maxHeldRequestBytes`` or ``maxHeldFrames``;
/// - a request the method itself leaves to gRPC Swift (GetBalance with `refresh`: it asks the
///   bank, which is async);
/// - every call of a connection the listener did not register (no TCP address): the
///   interceptor refuses those.
/// What the fast path answers, it answers as gRPC Swift with banklinkd's interceptors would:
/// - the same authorization (``AuthorizationInterceptor/authorize(_:method:remotePeer:)``:
///   identity, revocation, expiry, the table), at the call's HEADERS as the interceptors run
///   there, refusals logged alike;
/// - the same request id (`x-request-id` in the response headers or the error's trailers), on the
///   log lines written meanwhile, with the method and the caller;
/// - the same metrics (``MetricsInterceptor/record(_:_:since:)``);
/// - the same status, message and metadata of an error (`grpc-status-details-bin` included),
///   trailers-only;
/// - the deadline (`grpc-timeout`), more strictly than gRPC Swift (which only cancels the
///   handler, and answers a complete request whose deadline has passed): a request not complete
///   by then, or complete only after it, is answered `DEADLINE_EXCEEDED` (the stream reset if the
///   client is still sending);
/// - message size limits, buffering and the malformed `grpc-timeout` stay with
///   ``RequestStreamGuard`` in front; flow control, `GOAWAY` on drain and stream limits with
///   swift-nio-http2 and the transport's connection handler, which the fast path does not touch.
///
/// On banklinkd's own transport (``GatewayTransport``) a stream answered here never gets an async
/// channel or a task. On grpc-swift-nio-transport (`BANKLINK_TRANSPORT=grpc-nio`) it still does:
/// that transport gives every stream both before its HEADERS are read.
public final class UnaryFastPath: Sendable {
  /// One method the fast path serves.
  struct Method: Sendable {
    let descriptor: MethodDescriptor
    /// `descriptor.fullyQualifiedMethod`, kept for log lines.
    let name: String
    /// The serialized response to a request's bytes, or nil when gRPC Swift should serve the call
    /// (the bytes do not parse, or the method needs what only the async handler does). Runs with
    /// the caller, request id and method in their task-locals. Throws the call's error.
    let answer: @Sendable (_ request: [UInt8], _ caller: Caller) throws -> [UInt8]?

    init<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
      _ descriptor: MethodDescriptor,
      answer: @escaping @Sendable (Request, Caller) throws -> Response?
    ) {
      self.descriptor = descriptor
      self.name = descriptor.fullyQualifiedMethod
      self.answer = { bytes, caller in
        // A message that does not parse is gRPC Swift's to refuse, with its own status.
        guard let request = try? Request(serializedBytes: bytes) else { return nil }
        return try answer(request, caller).map { try $0.serializedBytes() }
      }
    }
  }

  /// The methods served, by their `:path` (`/package.Service/Method`).
  let methods: [String: Method]
  let authorization: AuthorizationInterceptor
  /// Calls answered here (successes and errors; not those handed to gRPC Swift).
  let answered = Atomic<Int>(0)

  init(methods: [Method], authorization: AuthorizationInterceptor) {
    self.methods = Dictionary(uniqueKeysWithValues: methods.map { ("/" + $0.descriptor.fullyQualifiedMethod, $0) })
    self.authorization = authorization
  }

  // MARK: Wire constants

  /// `content-type` values gRPC Swift serves as protobuf gRPC (`ContentType` in
  /// grpc-swift-nio-transport); any other goes to gRPC Swift.
  static let plainContentTypes: Set<String> = ["application/grpc", "application/grpc+proto"]

  /// `:scheme` values gRPC Swift accepts (it refuses others, which the fast path leaves to it).
  static let schemes: Set<String> = ["http", "https"]

  /// The only `grpc-encoding` the fast path reads: none (an absent header is the same).
  static let identityEncoding = "identity"

  /// Most DATA bytes of one request the fast path holds: the fast methods' requests are an
  /// account id or a service name (tens of bytes); a bigger one goes to gRPC Swift, whose limits
  /// (``Limits/maxRequestMessageBytes(forPath:)``, the connection's buffer budget) apply.
  public static let maxHeldRequestBytes = 4096

  /// Most frames of one request the fast path holds (HEADERS, DATA, WINDOW_UPDATE...): a unary
  /// request is usually two. A client that sends more without ending its side (empty DATA
  /// frames, say) is handed to gRPC Swift, so holding never grows without bound.
  public static let maxHeldFrames = 16

  /// The message of the fast path's `DEADLINE_EXCEEDED` (gRPC Swift itself sends none: it
  /// cancels the handler and lets it answer, or not).
  static let deadlineExceededMessage = "the request's deadline (grpc-timeout) passed before it was complete"

  /// The `grpc-timeout` of `headers` (parsed as ``RequestDeadline`` parses it for handlers), nil
  /// when absent or malformed (``RequestStreamGuard`` has refused a malformed one before this runs).
  static func timeout(in headers: HPACKHeaders) -> TimeAmount? {
    headers.first(name: RequestStreamGuard.timeoutHeader).flatMap(RequestDeadline.parse).map(TimeAmount.init)
  }

  /// Whether the fast path may read a request with `headers` itself: a POST of plain protobuf
  /// gRPC without compression. Anything else is gRPC Swift's.
  static func isPlain(_ headers: HPACKHeaders) -> Bool {
    guard headers.first(name: ":method") == "POST", let scheme = headers.first(name: ":scheme"), Self.schemes.contains(scheme),
      let contentType = headers.first(name: "content-type"), Self.plainContentTypes.contains(contentType)
    else { return false }
    let encodings = headers[canonicalForm: "grpc-encoding"]
    return encodings.isEmpty || (encodings.count == 1 && encodings[0] == Self.identityEncoding)
  }

  /// The single uncompressed message of a unary request whose DATA frames carried `buffers`, or
  /// nil for anything else (no message, several, a compressed one, a truncated one): gRPC Swift
  /// answers those.
  static func singleMessage(_ buffers: [ByteBuffer]) -> [UInt8]? {
    var whole: ByteBuffer
    if buffers.count == 1 {
      whole = buffers[0]
    } else {
      whole = ByteBuffer()
      for var buffer in buffers { whole.writeBuffer(&buffer) }
    }
    guard let flag = whole.readInteger(as: UInt8.self), flag == 0, let length = whole.readInteger(as: UInt32.self),
      Int(length) == whole.readableBytes
    else { return nil }
    return whole.readBytes(length: Int(length))
  }

  /// The request id of a call: the client's `x-request-id` when acceptable, else a new one (as
  /// ``RequestIDInterceptor``).
  static func requestID(in headers: HPACKHeaders) -> String {
    RequestIDInterceptor.requestID(offered: headers.first(name: RequestIDInterceptor.metadataKey))
  }

  /// `error` as gRPC Swift's server would send it (`RPCError`, or converted as it converts).
  static func rpcError(_ error: any Error) -> RPCError {
    if let error = error as? RPCError { return error }
    if let convertible = error as? any RPCErrorConvertible { return RPCError(convertible) }
    // What gRPC Swift's interceptor chain makes of any other error (ServerRPCExecutor).
    return RPCError(code: .unknown, message: "", cause: error)
  }
}

/// The connection's verified client certificate, in its channel's pipeline where the streams'
/// ``UnaryFastPathHandler``s find it. Passes every event on untouched (NIO needs a handler to be
/// inbound or outbound; it sits in front of TLS, so it costs one call per socket read).
final class ConnectionPeerHandler: ChannelInboundHandler, Sendable {
  typealias InboundIn = ByteBuffer
  let peer: ConnectionPeers.Peer

  init(peer: ConnectionPeers.Peer) {
    self.peer = peer
  }
}

/// One stream's part of the ``UnaryFastPath``. Lives on the stream channel's event loop.
final class UnaryFastPathHandler: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = HTTP2Frame.FramePayload
  typealias InboundOut = HTTP2Frame.FramePayload
  typealias OutboundIn = HTTP2Frame.FramePayload
  typealias OutboundOut = HTTP2Frame.FramePayload

  /// A fast method's call, authorized at its HEADERS, whose request is being read. A class: the
  /// state holding it is switched over on every frame, and a struct of this many references
  /// would be copied (retained field by field) each time.
  private final class Call {
    let method: UnaryFastPath.Method
    let caller: Caller
    let requestID: String

    init(method: UnaryFastPath.Method, caller: Caller, requestID: String) {
      self.method = method
      self.caller = caller
      self.requestID = requestID
    }
  }

  private enum State {
    /// No HEADERS frame yet.
    case awaitingHeaders
    /// A fast method's request is being read: its frames are held.
    case collecting(Call)
    /// gRPC Swift serves the stream: every frame passes.
    case passing
    /// Answered here (or given up by the client): later frames of the stream are dropped.
    case answered
  }

  private let fastPath: UnaryFastPath
  /// The connection's client certificate holder (nil: a connection banklinkd's listener did not
  /// register, whose calls gRPC Swift's interceptor refuses; none is answered here).
  private let peer: ConnectionPeers.Peer?
  private var state = State.awaitingHeaders
  /// The frames of the request read so far, in order (handed to gRPC Swift when it serves it).
  private var held: [HTTP2Frame.FramePayload] = []
  /// DATA bytes among `held` (at most ``UnaryFastPath/maxHeldRequestBytes``).
  private var heldBytes = 0
  private var headers = HPACKHeaders()
  private var started = ContinuousClock.now
  private var deadline: NIODeadline?
  private var deadlineTimer: Scheduled<Void>?
  private var deadlineCheckPending = false

  init(fastPath: UnaryFastPath, peer: ConnectionPeers.Peer?) {
    self.fastPath = fastPath
    self.peer = peer
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch self.state {
    case .passing:
      context.fireChannelRead(data)
    case .answered:
      return
    case .awaitingHeaders:
      let frame = self.unwrapInboundIn(data)
      guard let peer = self.peer, case .headers(let headers) = frame, let path = headers.headers.first(name: ":path"),
        let method = self.fastPath.methods[path], UnaryFastPath.isPlain(headers.headers)
      else {
        self.state = .passing
        context.fireChannelRead(data)
        return
      }
      self.started = .now
      self.headers = headers.headers
      let requestID = UnaryFastPath.requestID(in: headers.headers)
      // Authorized when its HEADERS arrive, as gRPC Swift's interceptors do: a caller that may not
      // call the method is refused at once and never gets to hold a request here.
      let caller: Caller
      do {
        caller = try RequestContext.$requestID.withValue(requestID) {
          try RequestContext.$method.withValue(method.name) {
            try self.fastPath.authorization.authorize(
              peer, method: method.descriptor, remotePeer: ConnectionPeers.key(context.channel.parent?.remoteAddress) ?? "unknown")
          }
        }
      } catch {
        self.answer(method.descriptor, error: UnaryFastPath.rpcError(error), requestID: requestID, context: context)
        if !headers.endStream { context.writeAndFlush(self.wrapOutboundOut(.rstStream(.noError)), promise: nil) }
        return
      }
      let call = Call(method: method, caller: caller, requestID: requestID)
      self.state = .collecting(call)
      self.held = [frame]
      self.heldBytes = 0
      if let timeout = UnaryFastPath.timeout(in: headers.headers) { self.deadline = .now() + timeout }
      if headers.endStream { self.complete(call, context: context) }
    case .collecting(let call):
      let frame = self.unwrapInboundIn(data)
      if case .rstStream = frame {
        // The client gave up: nothing to answer.
        return self.abandon()
      }
      self.held.append(frame)
      guard self.held.count <= UnaryFastPath.maxHeldFrames else { return self.pass(context: context) }
      switch frame {
      case .data(let payload):
        self.heldBytes += payload.data.readableBytes
        if self.heldBytes > UnaryFastPath.maxHeldRequestBytes { return self.pass(context: context) }
        if payload.endStream { self.complete(call, context: context) }
      case .headers:
        // Trailers or a second HEADERS: gRPC Swift's to answer (it refuses either).
        self.pass(context: context)
      default:
        break
      }
    }
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    // A request not complete in the read that brought its headers waits for its deadline. The
    // timer is set only if the request is still incomplete once the connection's read is done
    // (HEADERS and DATA usually come in one read, each stream read completing after each frame):
    // setting and cancelling a timer for every call cost more than the rest of the check.
    if case .collecting = self.state, self.deadline != nil, self.deadlineTimer == nil, !self.deadlineCheckPending {
      self.deadlineCheckPending = true
      context.eventLoop.assumeIsolated().execute {
        self.deadlineCheckPending = false
        self.startDeadlineTimer(context: context)
      }
    }
    context.fireChannelReadComplete()
  }

  private func startDeadlineTimer(context: ChannelHandlerContext) {
    guard case .collecting = self.state, let deadline = self.deadline, self.deadlineTimer == nil else { return }
    self.deadlineTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
      guard case .collecting(let call) = self.state else { return }
      self.answer(call.method.descriptor, error: Self.deadlineExceeded, requestID: call.requestID, context: context)
      // The client is still sending: ask it to stop (RFC 9113 § 8.1).
      context.writeAndFlush(self.wrapOutboundOut(.rstStream(.noError)), promise: nil)
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    // Closed while the request was being read (the guard refused it, the connection went).
    self.abandon()
    context.fireChannelInactive()
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.abandon()
  }

  private static let deadlineExceeded = RPCError(code: .deadlineExceeded, message: UnaryFastPath.deadlineExceededMessage)

  /// The request is complete: answer it, or hand it to gRPC Swift.
  private func complete(_ call: Call, context: ChannelHandlerContext) {
    self.deadlineTimer?.cancel()
    self.deadlineTimer = nil
    let buffers = self.held.compactMap { frame -> ByteBuffer? in
      if case .data(let payload) = frame, case .byteBuffer(let buffer) = payload.data, buffer.readableBytes > 0 { return buffer }
      return nil
    }
    guard let request = UnaryFastPath.singleMessage(buffers) else { return self.pass(context: context) }
    if let deadline = self.deadline, deadline <= .now() {
      return self.answer(call.method.descriptor, error: Self.deadlineExceeded, requestID: call.requestID, context: context)
    }
    let response: [UInt8]?
    do {
      // Log lines written meanwhile (a store error) carry the request id, method and caller, as
      // on gRPC Swift's path.
      response = try RequestContext.$requestID.withValue(call.requestID) {
        try RequestContext.$method.withValue(call.method.name) {
          try Caller.$current.withValue(call.caller) { try call.method.answer(request, call.caller) }
        }
      }
    } catch {
      return self.answer(call.method.descriptor, error: UnaryFastPath.rpcError(error), requestID: call.requestID, context: context)
    }
    guard let response else { return self.pass(context: context) }
    self.state = .answered
    self.held = []
    var headers = GatewayStreamHandler.responseHeaders
    headers.add(name: RequestIDInterceptor.metadataKey, value: call.requestID)
    var message = context.channel.allocator.buffer(capacity: RequestStreamGuard.messagePrefixBytes + response.count)
    message.writeInteger(UInt8(0))
    message.writeInteger(UInt32(response.count))
    message.writeBytes(response)
    context.write(self.wrapOutboundOut(.headers(.init(headers: headers))), promise: nil)
    context.write(self.wrapOutboundOut(.data(.init(data: .byteBuffer(message)))), promise: nil)
    context.writeAndFlush(self.wrapOutboundOut(.headers(.init(headers: ["grpc-status": "0"], endStream: true))), promise: nil)
    MetricsInterceptor.record(call.method.descriptor, nil, since: self.started)
    self.fastPath.answered.add(1, ordering: .relaxed)
  }

  /// Answers the call with `error`, trailers-only, as gRPC Swift answers a unary call whose
  /// interceptor or handler threw before responding.
  private func answer(_ method: MethodDescriptor, error: RPCError, requestID: String, context: ChannelHandlerContext) {
    self.state = .answered
    self.held = []
    self.deadlineTimer?.cancel()
    self.deadlineTimer = nil
    var trailers = RequestStreamGuard.trailers(for: error.message, status: error.code.rawValue)
    GatewayStreamHandler.add(error.metadata, to: &trailers)
    trailers.add(name: RequestIDInterceptor.metadataKey, value: requestID)
    context.writeAndFlush(self.wrapOutboundOut(.headers(.init(headers: trailers, endStream: true))), promise: nil)
    MetricsInterceptor.record(method, error.code, since: self.started)
    self.fastPath.answered.add(1, ordering: .relaxed)
  }

  /// gRPC Swift serves the stream: the held frames go to it in the order they came. (Its
  /// interceptor authorizes the call again: the fast path's check only decided whether it could
  /// hold the request.)
  private func pass(context: ChannelHandlerContext) {
    self.state = .passing
    self.deadlineTimer?.cancel()
    self.deadlineTimer = nil
    let held = self.held
    self.held = []
    for frame in held { context.fireChannelRead(self.wrapInboundOut(frame)) }
  }

  /// The stream ended before the request was complete (a reset, a refusal by the guard, the
  /// connection closing): counted as cancelled, as gRPC Swift's path counts its handler's end.
  private func abandon() {
    if case .collecting(let call) = self.state {
      self.state = .answered
      MetricsInterceptor.record(call.method.descriptor, .cancelled, since: self.started)
    }
    self.held = []
    self.deadlineTimer?.cancel()
    self.deadlineTimer = nil
  }
}

@available(*, unavailable)
extension UnaryFastPathHandler: Sendable {}
