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
  typealias Channel = NIOAsyncChannel<RPCRequestPart<GatewayBytes>, RPCResponsePart<GatewayBytes>>
  let channel: Channel
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
/// wrapped in an async channel and passed to the transport's listen loop, which runs a task for
/// it — only when HEADERS name a method it serves: a stream answered by the fast path or refused
/// here never costs a task.
final class GatewayStreamHandler: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = HTTP2Frame.FramePayload
  typealias InboundOut = RPCRequestPart<GatewayBytes>
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
  static func unsupportedEncodingMessage(_ encoding: String) -> String {
    "\(encoding) compression is not supported; supported algorithms are listed in grpc-accept-encoding"
  }
  /// The only `grpc-encoding` banklinkd reads or writes (no compression is enabled).
  static let identityEncoding = "identity"
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
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    // The call's writer finished with an error (`finish(throwing:)`), or the stream failed (a
    // reset while reads were paused): the call is cancelled and its request ends with an
    // `RPCError`, not the raw error; closing the channel then resets the stream. After the
    // status, or for a stream gRPC Swift never saw, there is nothing to tell.
    guard self.phase == .open, !self.statusSent else { return }
    self.unexpectedClose(context: context)
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
    if !self.statusSent {
      self.cancelCall()
      context.fireErrorCaught(Self.closedEarly)
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
    let accepted: AcceptedStream.Channel
    do {
      accepted = try AcceptedStream.Channel(wrappingChannelSynchronously: channel)
    } catch {
      return self.refuse(Self.trailersOnly(.unavailable, Self.notListeningMessage), context: context)
    }
    let connection = channel.parent
    let stream = AcceptedStream(
      channel: accepted, descriptor: descriptor,
      remotePeer: ConnectionPeers.key(connection?.remoteAddress) ?? "unknown",
      localPeer: ConnectionPeers.key(connection?.localAddress) ?? "unknown")
    guard self.shared.accept(stream) else {
      return self.refuse(Self.trailersOnly(.unavailable, Self.notListeningMessage), context: context)
    }
    self.phase = .open
    self.descriptor = descriptor
    self.unaryResponse = descriptor.type == .unary || descriptor.type == .clientStreaming
    context.fireChannelRead(self.wrapInboundOut(.metadata(Self.metadata(headers))))
    if frame.endStream { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
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
      context.fireChannelRead(self.wrapInboundOut(.message(GatewayBytes(message))))
      guard self.phase == .open else { return }
    }
    if bytes.readableBytes > 0 { self.partial = bytes }
    if endStream {
      self.clientClosed = true
      context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
    }
  }

  /// A request that cannot be read: the call is cancelled and the stream closed (reset).
  private func fail(_ error: RPCError, context: ChannelHandlerContext) {
    self.phase = .done
    self.partial = nil
    self.cancelCall()
    context.fireErrorCaught(error)
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
    self.flushPending = true
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
      context.write(self.wrapOutboundOut(.headers(.init(headers: trailers, endStream: true))), promise: promise)
    }
  }

  func flush(context: ChannelHandlerContext) {
    // A unary response goes out in one flush, with its status.
    if self.unaryResponse { return }
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
  /// grpc-swift-nio-transport hands them; `-bin` values base64-decoded when they decode).
  static func metadata(_ headers: HPACKHeaders) -> Metadata {
    var metadata = Metadata()
    metadata.reserveCapacity(headers.count)
    for header in headers {
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
