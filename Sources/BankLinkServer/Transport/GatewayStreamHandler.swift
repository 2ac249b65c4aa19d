import BankLinkCore
import Foundation
import GRPCCore
import NIOCore
import NIOHPACK
import NIOHTTP2

/// The bytes of one gRPC message as ``GatewayTransport`` hands them to gRPC Swift and takes them
/// back: a `ByteBuffer` slice of the DATA frames they came in, never copied on the way.
public struct GatewayBytes: GRPCContiguousBytes, Hashable, Sendable {
  var buffer: ByteBuffer

  init(_ buffer: ByteBuffer) {
    self.buffer = buffer
  }

  public init(repeating: UInt8, count: Int) {
    self.buffer = ByteBuffer(repeating: repeating, count: count)
  }

  public init(_ sequence: some Sequence<UInt8>) {
    self.buffer = ByteBuffer(bytes: sequence)
  }

  public var count: Int { self.buffer.readableBytes }

  public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
    try self.buffer.withUnsafeReadableBytes(body)
  }

  public mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
    try self.buffer.withUnsafeMutableReadableBytes(body)
  }
}

/// A stream ``GatewayStreamHandler`` accepted for gRPC Swift: what the transport's listen loop
/// runs a task for.
struct AcceptedStream: Sendable {
  /// The request's parts, as the stream's handler reads them (with back-pressure on reading).
  typealias Requests = NIOThrowingAsyncSequenceProducer<
    RPCRequestPart<GatewayBytes>, any Error, NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark,
    GatewayStreamHandler.RequestDemand
  >
  let requests: Requests
  /// The HTTP/2 stream: the call's responses are written to it.
  let channel: any Channel
  let handler: NIOLoopBound<GatewayStreamHandler>
  /// The call's deadline, from its `grpc-timeout` (the handler enforces it; the listen loop's
  /// task binds it as ``RequestDeadline/current`` for handlers that answer before it).
  let deadline: ContinuousClock.Instant?
  let descriptor: MethodDescriptor
  let remotePeer: String
  let localPeer: String
}

/// gRPC's wire protocol for one HTTP/2 stream of ``GatewayTransport``: the request's HEADERS
/// checked as grpc-swift-nio-transport checks them (same statuses and messages), then, for a call
/// gRPC Swift serves, messages cut out of the DATA frames and handed on as `RPCRequestPart`s,
/// and `RPCResponsePart`s written back as HEADERS, length-prefixed DATA and trailers.
///
/// It sits behind ``RequestStreamGuard`` (size limits, buffering budget, malformed
/// `grpc-timeout`) and ``UnaryFastPathHandler`` (which answers the hot unary methods itself and
/// hands this handler only the calls it does not answer). The stream is given to gRPC Swift —
/// passed to the transport's listen loop, which runs a task for it — only when HEADERS name a
/// method it serves: a stream answered by the fast path or refused here never costs a task.
///
/// The call's task reads the request parts from an async sequence this handler feeds (reading
/// from the stream pauses while it holds ``requestPartsHighWatermark`` parts), writes its
/// responses straight into the stream's pipeline, and tells the handler when it has ended
/// (``callEnded()``). The task does not wait for the stream to close: the handler ends the stream
/// itself once the status is out, so a task lives exactly as long as its call's handler.
final class GatewayStreamHandler: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = HTTP2Frame.FramePayload
  typealias InboundOut = Never
  typealias OutboundIn = RPCResponsePart<GatewayBytes>
  typealias OutboundOut = HTTP2Frame.FramePayload

  /// What every stream of a transport shares.
  struct Shared: Sendable {
    /// The methods gRPC Swift serves, by `:path`.
    let descriptorsByPath: [String: MethodDescriptor]
    /// The bound on one request message (``RequestStreamGuard`` applies each method's own,
    /// smaller one in front of this).
    let maxRequestMessageBytes: Int
    /// Hands an accepted stream to the listen loop; false when the transport no longer listens.
    let accept: @Sendable (AcceptedStream) -> Bool
  }

  // MARK: Wire constants (as grpc-swift-nio-transport sends them)

  static let unsupportedContentTypeStatus = "415"
  static let missingPathMessage = "No :path header has been set."
  static let badSchemeMessage = ":scheme header must be present and one of \"http\" or \"https\"."
  static let badMethodMessage = ":method header is expected to be present and have a value of \"POST\"."
  static let severalEncodingsMessage = "grpc-encoding must contain no more than one value."
  static let unknownPathMessage = "Requested RPC isn't implemented by this server."
  static let notListeningMessage = "the server is shutting down"
  static let decodeFailure = RPCError(code: .internalError, message: "Failed to decode message")
  static let closedEarly = RPCError(code: .unavailable, message: "the stream closed before the call ended")
  static let writeAfterStatus = RPCError(code: .internalError, message: "Can't write status, stream has already closed")
  static let deadlineExceeded = RPCError(code: .deadlineExceeded, message: UnaryFastPath.deadlineExceededMessage)
  static func unsupportedEncodingMessage(_ encoding: String) -> String {
    "\(encoding) compression is not supported; supported algorithms are listed in grpc-accept-encoding"
  }
  /// The only `grpc-encoding` banklinkd reads or writes (no compression is enabled).
  static let identityEncoding = "identity"
  /// Request parts buffered for the call's task: reading from the stream pauses at the high
  /// watermark and resumes once the task has taken the buffer down to the low one (the bounds
  /// NIO's async channels use by default).
  static let requestPartsHighWatermark = 10
  static let requestPartsLowWatermark = 2
  /// `:status` and `content-type` of every gRPC response.
  static let responseHeaders: HPACKHeaders = [":status": RequestStreamGuard.httpStatusOK, "content-type": RequestStreamGuard.grpcContentType]

  // MARK: State

  private enum Phase {
    /// No HEADERS yet.
    case idle
    /// gRPC Swift serves the call: messages are read and responses written.
    case open
    /// Refused here (or the call ended): later frames are dropped.
    case done
  }

  private let shared: Shared
  private var phase = Phase.idle
  private var descriptor: MethodDescriptor?
  /// DATA bytes of a message not yet complete.
  private var partial: ByteBuffer?
  private var clientClosed = false
  private var headersSent = false
  private var statusSent = false
  /// Whether the method answers one message (its flushes wait for the status).
  private var unaryResponse = false
  private var isReading = false
  private var flushPending = false
  private var cancellation: ServerContext.RPCCancellationHandle?
  private var cancelled = false
  /// Feeds the request parts to the call's task (nil before the call is accepted and after its
  /// request ended).
  private var requests: AcceptedStream.Requests.Source?
  /// The task holds as many request parts as it may: `read` is held back.
  private var readPaused = false
  private var readHeld = false
  private var context: ChannelHandlerContext?
  /// Cancels the call when its `grpc-timeout` passes.
  private var deadlineTimer: Scheduled<Void>?
  /// Completes when the status written while the client was still sending has gone out.
  private var statusWritten: EventLoopFuture<Void>?

  init(shared: Shared) {
    self.shared = shared
  }

  /// The handle gRPC Swift cancels the call's handler with (set by the listen loop's task, on
  /// this stream's event loop).
  func setCancellationHandle(_ handle: ServerContext.RPCCancellationHandle) {
    if self.cancelled {
      handle.cancel()
    } else {
      self.cancellation = handle
    }
  }

  private func cancelCall() {
    self.cancelled = true
    self.cancellation?.cancel()
    self.cancellation = nil
  }

  /// The call's task has ended (gRPC Swift's handler returned); everything it wrote is already
  /// in the pipeline, ahead of this. The stream is ended here, not by the task: after the
  /// status, a client still sending is asked to stop (`RST_STREAM(NO_ERROR)`, as a refused
  /// request is); without a status (the call was cancelled or failed) the stream is reset.
  /// A call whose client had finished closes on its own once the trailers are out.
  func callEnded() {
    self.finishRequests(nil)
    self.stopDeadlineTimer()
    self.cancellation = nil
    guard let context = self.context else { return }
    let wasOpen = self.phase == .open
    self.phase = .done
    if !self.statusSent {
      // Also after the call's writer finished with an error (`errorCaught` ended the phase but
      // left the stream open); closing a stream already closed does nothing.
      context.close(promise: nil)
    } else if wasOpen && !self.clientClosed {
      self.resetAfterStatus(context: context)
    }
  }

  /// `RST_STREAM(NO_ERROR)` once the status has gone out: a reset drops whatever of the stream
  /// swift-nio-http2 still queues (trailers wait behind DATA that waits for flow control), so
  /// sent earlier it could cost the client its status.
  private func resetAfterStatus(context: ChannelHandlerContext) {
    guard let written = self.statusWritten else { return }
    self.statusWritten = nil
    written.assumeIsolated().whenSuccess {
      guard let context = self.context, context.channel.isActive else { return }
      context.writeAndFlush(self.wrapOutboundOut(.rstStream(.noError)), promise: nil)
    }
  }

  // MARK: Request parts

  /// Tells the stream's handler when the call's task wants more request parts, on its event loop.
  struct RequestDemand: NIOAsyncSequenceProducerDelegate {
    let handler: NIOLoopBound<GatewayStreamHandler>
    let eventLoop: any EventLoop

    func produceMore() {
      self.eventLoop.execute { [handler] in handler.value.resumeReading() }
    }

    func didTerminate() {
      // The task stopped reading (its call ended, or it has all it wants): what is still sent
      // is read and dropped rather than left to stall the stream.
      self.eventLoop.execute { [handler] in
        handler.value.requests = nil
        handler.value.resumeReading()
      }
    }
  }

  private func yieldRequest(_ part: RPCRequestPart<GatewayBytes>) {
    guard let requests = self.requests else { return }
    switch requests.yield(part) {
    case .produceMore: break
    case .stopProducing: self.readPaused = true
    case .dropped: self.requests = nil
    }
  }

  private func finishRequests(_ error: (any Error)?) {
    guard let requests = self.requests else { return }
    self.requests = nil
    if let error { requests.finish(error) } else { requests.finish() }
  }

  private func resumeReading() {
    self.readPaused = false
    if self.readHeld, let context = self.context {
      self.readHeld = false
      context.read()
    }
  }

  func read(context: ChannelHandlerContext) {
    if self.readPaused {
      self.readHeld = true
    } else {
      context.read()
    }
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.finishRequests(nil)
    self.stopDeadlineTimer()
    self.context = nil
  }

  // MARK: Deadline

  /// Runs the call's deadline on the stream's event loop, from its HEADERS. When it passes the
  /// call is cancelled through its cancellation handle — what gRPC Swift's executor does with a
  /// `grpc-timeout` it reads, but without the timer task and task group it runs beside every such
  /// call (which kept each call's task alive until the pool had also run the cancelled timer).
  /// gRPC Swift therefore gets the request's metadata without `grpc-timeout` (``metadata(_:)``);
  /// handlers still learn the deadline, as ``RequestDeadline/current`` (``AcceptedStream/deadline``).
  private func startDeadlineTimer(_ timeout: TimeAmount, context: ChannelHandlerContext) {
    self.deadlineTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
      self.deadlineTimer = nil
      self.cancelCall()
      // A handler still reading the request (a client that never finishes it) is not left
      // waiting: the rest of the request fails, and gRPC Swift answers with that status.
      self.finishRequests(Self.deadlineExceeded)
    }
  }

  private func stopDeadlineTimer() {
    self.deadlineTimer?.cancel()
    self.deadlineTimer = nil
  }

  // MARK: Inbound

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    self.isReading = true
    let frame = self.unwrapInboundIn(data)
    switch (self.phase, frame) {
    case (.idle, .headers(let headers)):
      self.receiveHeaders(headers, context: context)
    case (.idle, .data):
      self.phase = .done
      context.writeAndFlush(self.wrapOutboundOut(.rstStream(.protocolError)), promise: nil)
      context.close(promise: nil)
    case (.open, .data(let payload)):
      guard case .byteBuffer(let buffer) = payload.data else { return }
      // The call has ended (its status is sent): the rest of the request is not read.
      if self.statusSent { return }
      if self.clientClosed {
        return self.fail(Self.decodeFailure, context: context)
      }
      self.receive(buffer, endStream: payload.endStream, context: context)
    case (.open, .headers):
      // Trailers or a second HEADERS from the client: a protocol violation for gRPC.
      self.phase = .done
      self.cancelCall()
      self.finishRequests(Self.closedEarly)
      context.writeAndFlush(self.wrapOutboundOut(.rstStream(.protocolError)), promise: nil)
      context.close(promise: nil)
    case (.open, .rstStream):
      self.unexpectedClose(context: context)
    default:
      break
    }
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    self.isReading = false
    if self.flushPending {
      self.flushPending = false
      context.flush()
    }
    context.fireChannelReadComplete()
  }

  func channelInactive(context: ChannelHandlerContext) {
    self.unexpectedClose(context: context)
    self.finishRequests(nil)
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    // The call's writer finished with an error (`finish(throwing:)`), or the stream failed (a
    // reset while reads were paused): the call is cancelled and its request ends with an
    // `RPCError`, not the raw error; closing the channel then resets the stream. After the
    // status, or for a stream gRPC Swift never saw, there is nothing to tell.
    guard self.phase == .open, !self.statusSent else { return }
    self.unexpectedClose(context: context)
    // (A stream that failed is closed by the pipeline; one whose writer failed, when its task ends.)
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    // The server drains: handlers are asked to finish (streams that never end, such as alert
    // watches, end here), as gRPC Swift's transport asks them.
    if event is ChannelShouldQuiesceEvent { self.cancelCall() }
    context.fireUserInboundEventTriggered(event)
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    // Writes held for the status would otherwise never drain: flush them.
    if !context.channel.isWritable { context.flush() }
    context.fireChannelWritabilityChanged()
  }

  private func unexpectedClose(context: ChannelHandlerContext) {
    guard self.phase == .open else { return }
    self.phase = .done
    self.stopDeadlineTimer()
    if !self.statusSent {
      self.cancelCall()
      self.finishRequests(Self.closedEarly)
    } else {
      self.finishRequests(nil)
    }
  }

  private func receiveHeaders(_ frame: HTTP2Frame.FramePayload.Headers, context: ChannelHandlerContext) {
    let headers = frame.headers
    self.clientClosed = frame.endStream
    // The checks and answers of grpc-swift-nio-transport's server state machine, in its order.
    guard let contentType = headers.first(name: "content-type"), UnaryFastPath.plainContentTypes.contains(contentType) else {
      return self.refuse([":status": Self.unsupportedContentTypeStatus], context: context)
    }
    guard let path = headers.first(name: ":path") else {
      return self.refuse(Self.trailersOnly(.invalidArgument, Self.missingPathMessage), context: context)
    }
    guard let scheme = headers.first(name: ":scheme"), UnaryFastPath.schemes.contains(scheme) else {
      return self.refuse(Self.trailersOnly(.invalidArgument, Self.badSchemeMessage), context: context)
    }
    guard headers.first(name: ":method") == "POST" else {
      return self.refuse(Self.trailersOnly(.invalidArgument, Self.badMethodMessage), context: context)
    }
    let encodings = headers[canonicalForm: "grpc-encoding"]
    if encodings.count > 1 {
      return self.refuse(Self.trailersOnly(.internalError, Self.severalEncodingsMessage), context: context)
    }
    if let encoding = encodings.first, encoding != Self.identityEncoding {
      var trailers = Self.trailersOnly(.unimplemented, Self.unsupportedEncodingMessage(String(encoding)))
      trailers.add(name: "grpc-accept-encoding", value: Self.identityEncoding)
      return self.refuse(trailers, context: context)
    }
    guard let descriptor = self.shared.descriptorsByPath[path] ?? Self.descriptor(path: path) else {
      return self.refuse(Self.trailersOnly(.unimplemented, Self.unknownPathMessage), context: context)
    }
    let channel = context.channel
    let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
    let produced = AcceptedStream.Requests.makeSequence(
      backPressureStrategy: .init(lowWatermark: Self.requestPartsLowWatermark, highWatermark: Self.requestPartsHighWatermark),
      finishOnDeinit: true,
      delegate: RequestDemand(handler: handler, eventLoop: context.eventLoop))
    let timeout = UnaryFastPath.timeout(in: headers)
    let connection = channel.parent
    let stream = AcceptedStream(
      requests: produced.sequence, channel: channel, handler: handler,
      deadline: timeout.map { ContinuousClock.now.advanced(by: .nanoseconds($0.nanoseconds)) }, descriptor: descriptor,
      remotePeer: ConnectionPeers.key(connection?.remoteAddress) ?? "unknown",
      localPeer: ConnectionPeers.key(connection?.localAddress) ?? "unknown")
    guard self.shared.accept(stream) else {
      return self.refuse(Self.trailersOnly(.unavailable, Self.notListeningMessage), context: context)
    }
    self.requests = produced.source
    self.phase = .open
    self.descriptor = descriptor
    self.unaryResponse = descriptor.type == .unary || descriptor.type == .clientStreaming
    if let timeout { self.startDeadlineTimer(timeout, context: context) }
    self.yieldRequest(.metadata(Self.metadata(headers)))
    if frame.endStream { self.finishRequests(nil) }
  }

  /// Cuts the messages out of a DATA frame's bytes.
  private func receive(_ buffer: ByteBuffer, endStream: Bool, context: ChannelHandlerContext) {
    var bytes: ByteBuffer
    if var partial = self.partial {
      self.partial = nil
      var more = buffer
      partial.writeBuffer(&more)
      bytes = partial
    } else {
      bytes = buffer
    }
    while bytes.readableBytes >= RequestStreamGuard.messagePrefixBytes {
      let start = bytes.readerIndex
      let flag = bytes.getInteger(at: start, as: UInt8.self)!
      let length = Int(bytes.getInteger(at: start + 1, as: UInt32.self)!)
      // A compressed message without an encoding (none is accepted), or one over the bound.
      guard flag == 0, length <= self.shared.maxRequestMessageBytes else {
        return self.fail(Self.decodeFailure, context: context)
      }
      guard bytes.readableBytes >= RequestStreamGuard.messagePrefixBytes + length else { break }
      bytes.moveReaderIndex(forwardBy: RequestStreamGuard.messagePrefixBytes)
      let message = bytes.readSlice(length: length)!
      self.yieldRequest(.message(GatewayBytes(message)))
    }
    if bytes.readableBytes > 0 { self.partial = bytes }
    if endStream {
      self.clientClosed = true
      self.finishRequests(nil)
    }
  }

  /// A request that cannot be read: the call is cancelled and the stream closed (reset).
  private func fail(_ error: RPCError, context: ChannelHandlerContext) {
    self.phase = .done
    self.partial = nil
    self.cancelCall()
    self.finishRequests(error)
    context.close(promise: nil)
  }

  /// Answers a refused request with `trailers` (trailers-only) and reads nothing more of it.
  /// A client still sending is then asked to stop (`RST_STREAM(NO_ERROR)`, RFC 9113 § 8.1), so
  /// the stream does not stay open, counted against the connection's streams and taking DATA,
  /// for as long as the client likes.
  private func refuse(_ trailers: HPACKHeaders, context: ChannelHandlerContext) {
    self.phase = .done
    self.statusSent = true
    context.write(self.wrapOutboundOut(.headers(.init(headers: trailers, endStream: true))), promise: nil)
    if !self.clientClosed { context.write(self.wrapOutboundOut(.rstStream(.noError)), promise: nil) }
    self.flushSoon(context: context)
  }

  // MARK: Outbound

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    guard !self.statusSent else {
      promise?.fail(Self.writeAfterStatus)
      return
    }
    switch self.unwrapOutboundIn(data) {
    case .metadata(let metadata):
      var headers = Self.responseHeaders
      Self.add(metadata, to: &headers)
      self.headersSent = true
      context.write(self.wrapOutboundOut(.headers(.init(headers: headers))), promise: promise)
    case .message(let message):
      var framed = context.channel.allocator.buffer(capacity: RequestStreamGuard.messagePrefixBytes + message.count)
      framed.writeInteger(UInt8(0))
      framed.writeInteger(UInt32(message.count))
      var bytes = message.buffer
      framed.writeBuffer(&bytes)
      context.write(self.wrapOutboundOut(.data(.init(data: .byteBuffer(framed)))), promise: promise)
    case .status(let status, let metadata):
      var trailers = RequestStreamGuard.trailers(for: status.message, status: status.code.rawValue, trailersOnly: !self.headersSent)
      Self.add(metadata, to: &trailers)
      self.statusSent = true
      self.unaryResponse = false
      if self.clientClosed {
        context.write(self.wrapOutboundOut(.headers(.init(headers: trailers, endStream: true))), promise: promise)
      } else {
        // The client is still sending: it is asked to stop once this has gone out (`callEnded`).
        let written = promise ?? context.eventLoop.makePromise()
        self.statusWritten = written.futureResult
        context.write(self.wrapOutboundOut(.headers(.init(headers: trailers, endStream: true))), promise: written)
      }
    }
  }

  func flush(context: ChannelHandlerContext) {
    // A unary response goes out in one flush, with its status.
    if self.unaryResponse { return }
    self.flushSoon(context: context)
  }

  /// Flushes now, or at the end of the read in progress (one flush for what it brought about).
  private func flushSoon(context: ChannelHandlerContext) {
    if self.isReading {
      self.flushPending = true
    } else {
      context.flush()
    }
  }

  // MARK: Helpers

  static func trailersOnly(_ code: RPCError.Code, _ message: String) -> HPACKHeaders {
    RequestStreamGuard.trailers(for: message, status: code.rawValue)
  }

  /// The method a `:path` of the form `/service/method` names (gRPC Swift answers
  /// `UNIMPLEMENTED` itself for one it does not serve), nil for any other form.
  static func descriptor(path: String) -> MethodDescriptor? {
    guard path.utf8.first == UInt8(ascii: "/") else { return nil }
    let rest = path.utf8.dropFirst()
    guard let slash = rest.firstIndex(of: UInt8(ascii: "/")) else { return nil }
    let service = String(path[rest.startIndex..<slash])
    let method = String(path[path.utf8.index(after: slash)...])
    return MethodDescriptor(fullyQualifiedService: service, method: method)
  }

  /// The request's headers as gRPC Swift's metadata (every header, pseudo-headers included, as
  /// grpc-swift-nio-transport hands them; `-bin` values base64-decoded when they decode), except
  /// `grpc-timeout`, which this handler enforces itself (``startDeadlineTimer(_:context:)``).
  static func metadata(_ headers: HPACKHeaders) -> Metadata {
    var metadata = Metadata()
    metadata.reserveCapacity(headers.count)
    for header in headers {
      if header.name == RequestStreamGuard.timeoutHeader { continue }
      if header.name.hasSuffix("-bin"), let decoded = Self.base64Decoded(header.value) {
        metadata.addBinary(decoded, forKey: header.name)
      } else {
        metadata.addString(header.value, forKey: header.name)
      }
    }
    return metadata
  }

  /// Base64 with or without padding (gRPC allows both).
  static func base64Decoded(_ text: String) -> [UInt8]? {
    var padded = text
    let remainder = padded.utf8.count % 4
    if remainder == 1 { return nil }
    if remainder > 0 { padded += String(repeating: "=", count: 4 - remainder) }
    return Data(base64Encoded: padded).map(Array.init)
  }

  static func add(_ metadata: Metadata, to headers: inout HPACKHeaders) {
    for (key, value) in metadata {
      headers.add(name: key.lowercased(), value: value.encoded())
    }
  }
}

@available(*, unavailable)
extension GatewayStreamHandler: Sendable {}
