import BankLinkCore
import NIOCore
import NIOHPACK
import NIOHTTP2

/// Guards each HTTP/2 request stream in front of gRPC Swift: refuses headers that would crash its
/// parsing, and bounds the request messages it would buffer.
///
/// **Headers.** GRPCCore's `Timeout.init(decoding:)` (grpc-swift-2 2.4.3,
/// `Sources/GRPCCore/Timeout.swift`) parses the amount of `grpc-timeout` with `Int64(_:)`, which
/// accepts a sign, then passes it to `Timeout.init(amount:unit:)`, whose
/// `precondition((0 ... Timeout.maxAmount).contains(amount))` traps on a negative amount: one
/// `grpc-timeout: -1S` from any client stops the daemon. That parse happens in the server RPC
/// executor, long after the transport accepted the stream, so the check sits in front of it: this
/// handler is put first in every stream channel's pipeline (by ``GatewayTransport``, or on
/// grpc-swift-nio-transport by ``install(on:)`` from its `onAcceptHTTP2Stream` callback) and sees
/// the request's HEADERS frame before the transport's gRPC stream handler does. Such a request is answered trailers-only `INVALID_ARGUMENT`
/// and gRPC Swift never learns of it. The other request headers gRPC Swift parses
/// (`content-type`, `:path`, `:scheme`, `:method`, `grpc-encoding`, `grpc-accept-encoding`, `te`,
/// `-bin` metadata) are validated by swift-nio-http2 or refused by grpc-swift without trapping.
///
/// **Messages.** gRPC Swift buffers a request message until its last byte arrives and grants the
/// client more flow-control window meanwhile, so a client could park most of a large message on
/// every stream and stop. The guard reads the 5-byte gRPC message prefix in each DATA frame and
/// refuses the stream when:
/// - the flag byte is not 0 or 1 (the other bits are reserved): `INTERNAL`;
/// - the length exceeds the method's limit (``Limits/maxRequestMessageBytes(forPath:)``):
///   `RESOURCE_EXHAUSTED`, before any of the message is buffered;
/// - the unfinished messages of all streams of the connection would exceed
///   ``ConnectionLimits/maxBufferedBytesPerConnection``: `RESOURCE_EXHAUSTED`;
/// - a message is still incomplete ``ConnectionLimits/messageReceiveTimeoutMilliseconds`` after
///   its first byte: `RESOURCE_EXHAUSTED`.
/// A refused stream gets a trailers-only response (or trailers, when gRPC Swift already sent
/// response headers), then `RST_STREAM(NO_ERROR)` if the client was still sending, and is closed;
/// the handler behind it sees the stream end as a cancellation.
///
/// Cost: a few integer operations per DATA frame, a switch per outbound frame; a timer only
/// for a message that does not arrive in the frame it starts in.
///
/// Not `Sendable`: like every channel handler it lives on its channel's event loop; it is created
/// and added there (see ``install(on:)``).
public final class RequestStreamGuard: ChannelDuplexHandler, RemovableChannelHandler {
  public typealias InboundIn = HTTP2Frame.FramePayload
  public typealias InboundOut = HTTP2Frame.FramePayload
  public typealias OutboundIn = HTTP2Frame.FramePayload
  public typealias OutboundOut = HTTP2Frame.FramePayload

  // MARK: Limits and wire constants

  /// Fewest digits in a `grpc-timeout` amount. The gRPC HTTP/2 protocol defines
  /// `TimeoutValue` as "positive integer as ASCII string of at most 8 digits": at least one digit.
  public static let minTimeoutDigits = 1

  /// Most digits in a `grpc-timeout` amount, from the same rule of the gRPC HTTP/2 protocol.
  /// grpc-swift itself only honours values of at most 8 characters in all (7 digits and the
  /// unit) and ignores longer ones without trapping, so 8 digits are safe to let through.
  public static let maxTimeoutDigits = 8

  /// The `grpc-timeout` units of the gRPC HTTP/2 protocol: hours, minutes, seconds,
  /// milliseconds, microseconds, nanoseconds (one ASCII byte each).
  public static let timeoutUnits: Set<UInt8> = Set("HMSmun".utf8)

  /// Name of the request header checked. HTTP/2 header names are lowercase (swift-nio-http2
  /// refuses others); `HPACKHeaders` lookups are case-insensitive anyway, like GRPCCore's
  /// `Metadata` lookups.
  public static let timeoutHeader = "grpc-timeout"

  /// gRPC status code `INVALID_ARGUMENT` (3): the client sent a request it must not repeat as is.
  public static let invalidArgumentStatus = 3

  /// gRPC status code `RESOURCE_EXHAUSTED` (8): a message over a size, buffer or time limit.
  public static let resourceExhaustedStatus = 8

  /// gRPC status code `INTERNAL` (13): a framing error (a reserved flag bit set).
  public static let internalStatus = 13

  /// Length of the prefix of every gRPC message: a flag byte, then a 4-byte big-endian length.
  public static let messagePrefixBytes = 5

  /// Flag byte values the gRPC HTTP/2 protocol defines: 0 uncompressed, 1 compressed.
  public static let validMessageFlags: ClosedRange<UInt8> = 0...1

  /// `:status` of a trailers-only gRPC response: gRPC errors travel over HTTP 200.
  static let httpStatusOK = "200"

  /// `content-type` of the trailers-only response, the value grpc-swift itself answers with.
  static let grpcContentType = "application/grpc"

  /// Bytes that `grpc-message` may carry unencoded: the gRPC HTTP/2 protocol percent-encodes
  /// every byte outside printable ASCII (0x20...0x7E), and `%` itself.
  static let unreservedMessageBytes: ClosedRange<UInt8> = 0x20...0x7E

  /// Reason text for a malformed `grpc-timeout` (sent as `grpc-message`). It names the header but
  /// never echoes the client's value back.
  public static let malformedTimeoutReason =
    "malformed grpc-timeout header: expected 1 to 8 ASCII digits followed by one of H M S m u n"

  // MARK: State

  private enum State {
    /// No HEADERS frame seen yet.
    case awaitingHeaders
    /// Headers passed to gRPC; DATA frames are being framed and counted.
    case accepted
    /// The request was refused: every later inbound frame of the stream is dropped.
    case rejected
  }

  private var state: State = .awaitingHeaders
  private let limits: ConnectionLimits
  /// The connection's budget of buffered request bytes (nil if the guard runs without one).
  private let connection: ConnectionGuard?
  /// Largest message accepted on this stream, set from `:path`.
  private var maxMessageBytes = Limits.maxRequestMessageBytes
  /// Bytes of the current message prefix read so far (0...5) and the prefix itself.
  private var prefixRead = 0
  private var prefix: (UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0)
  /// Payload bytes of the current message still to come.
  private var payloadRemaining = 0
  /// Bytes of the current, unfinished message reserved from the connection's budget.
  private var reserved = 0
  private var messageTimer: Scheduled<Void>?
  /// Whether gRPC Swift has written response headers on this stream.
  private var responseHeadersSent = false
  /// Whether the client has ended its side of the stream.
  private var clientFinished = false

  /// The connection's manager under banklinkd's transport, told of every HEADERS and DATA frame
  /// the server writes (a client may PING again after them, as gRPC's servers allow).
  private let connectionManager: GatewayConnectionHandler?

  init(limits: ConnectionLimits, connection: ConnectionGuard?, connectionManager: GatewayConnectionHandler? = nil) {
    self.limits = limits
    self.connection = connection
    self.connectionManager = connectionManager
  }

  public convenience init() {
    self.init(limits: .standard, connection: nil)
  }

  // MARK: Installation

  /// Puts a new guard first in `channel`'s pipeline, ahead of gRPC's stream handler.
  ///
  /// Suited to be `HTTP2ServerTransport.Config.ChannelDebuggingCallbacks.onAcceptHTTP2Stream`:
  /// the transport calls it on the stream channel's event loop after adding its own handlers and
  /// before the stream channel is activated; swift-nio-http2 holds the stream's HEADERS frame
  /// until activation, so the guard always sees it first. The connection's ``ConnectionGuard``
  /// (same event loop) holds the buffer budget the streams share.
  /// With `fastPath`, the stream's ``UnaryFastPathHandler`` goes behind the guard (so the guard's
  /// limits apply to the calls it answers too), ahead of gRPC's stream handler.
  public static func install(
    on channel: any Channel, limits: ConnectionLimits = .standard, fastPath: UnaryFastPath? = nil
  ) -> EventLoopFuture<Void> {
    if channel.eventLoop.inEventLoop {
      return channel.eventLoop.makeCompletedFuture(withResultOf: {
        try RequestStreamGuard.addGuard(to: channel, limits: limits, fastPath: fastPath)
      })
    }
    return channel.eventLoop.submit {
      try RequestStreamGuard.addGuard(to: channel, limits: limits, fastPath: fastPath)
    }
  }

  /// Must run on `channel`'s event loop: the handlers are created here and never leave it.
  private static func addGuard(to channel: any Channel, limits: ConnectionLimits, fastPath: UnaryFastPath?) throws {
    let connection = channel.parent?.pipeline.syncOperations
    let guardHandler = RequestStreamGuard(limits: limits, connection: try? connection?.handler(type: ConnectionGuard.self))
    if let fastPath {
      let peer = try? connection?.handler(type: ConnectionPeerHandler.self).peer
      try channel.pipeline.syncOperations.addHandler(UnaryFastPathHandler(fastPath: fastPath, peer: peer), position: .first)
    }
    try channel.pipeline.syncOperations.addHandler(guardHandler, position: .first)
  }

  // MARK: Validation

  /// Why `headers` must be refused, as text for `grpc-message`; `nil` when they are safe to hand
  /// to gRPC Swift.
  ///
  /// Every `grpc-timeout` field is checked, not only the first one GRPCCore reads, and each
  /// field's raw value is checked as a whole (no splitting on commas, as GRPCCore does not split
  /// either).
  public static func problem(in headers: HPACKHeaders) -> String? {
    for value in headers[Self.timeoutHeader] where !Self.isValidTimeout(value) {
      return Self.malformedTimeoutReason
    }
    return nil
  }

  /// Whether `value` is a `grpc-timeout` of the gRPC HTTP/2 protocol: `minTimeoutDigits` to
  /// `maxTimeoutDigits` ASCII digits, then one unit of `timeoutUnits`; nothing else (no sign, no
  /// spaces, no non-ASCII digits). Checked on UTF-8 bytes so that no Unicode rule widens it.
  static func isValidTimeout(_ value: String) -> Bool {
    let bytes = value.utf8
    guard let unit = bytes.last, Self.timeoutUnits.contains(unit) else { return false }
    let digits = bytes.dropLast()
    guard (Self.minTimeoutDigits...Self.maxTimeoutDigits).contains(digits.count) else { return false }
    return digits.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
  }

  // MARK: Response

  /// The trailers-only response refusing a request for `reason`: `:status: 200`,
  /// `content-type: application/grpc`, `grpc-status` (`INVALID_ARGUMENT` unless told),
  /// `grpc-message` percent-encoded (none when `reason` is empty). With `trailersOnly` false, only the two `grpc-` fields: the
  /// trailers after response headers gRPC Swift already sent.
  public static func trailers(
    for reason: String,
    status: Int = RequestStreamGuard.invalidArgumentStatus,
    trailersOnly: Bool = true
  ) -> HPACKHeaders {
    var headers: HPACKHeaders =
      trailersOnly ? [":status": Self.httpStatusOK, "content-type": Self.grpcContentType] : [:]
    headers.add(name: "grpc-status", value: String(status))
    // No `grpc-message` for an empty reason, as gRPC Swift writes none.
    if !reason.isEmpty { headers.add(name: "grpc-message", value: Self.percentEncoded(reason)) }
    return headers
  }

  /// `text` encoded for `grpc-message` as the gRPC HTTP/2 protocol asks: UTF-8 bytes outside
  /// `unreservedMessageBytes`, and `%`, become `%XX` (uppercase hex).
  static func percentEncoded(_ text: String) -> String {
    let hex = Array("0123456789ABCDEF".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(text.utf8.count)
    for byte in text.utf8 {
      if Self.unreservedMessageBytes.contains(byte) && byte != UInt8(ascii: "%") {
        out.append(byte)
      } else {
        out.append(UInt8(ascii: "%"))
        out.append(hex[Int(byte >> 4)])
        out.append(hex[Int(byte & 0x0F)])
      }
    }
    return String(decoding: out, as: UTF8.self)
  }

  // MARK: ChannelInboundHandler

  public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch self.state {
    case .rejected:
      // The stream was answered already; gRPC's handler never learns more of it.
      return
    case .accepted:
      let frame = self.unwrapInboundIn(data)
      if case .data(let payload) = frame {
        if payload.endStream { self.clientFinished = true }
        if case .byteBuffer(let buffer) = payload.data, let refusal = self.account(buffer, context: context) {
          self.refuse(context: context, reason: refusal.reason, status: refusal.status)
          return
        }
      } else if case .headers(let headers) = frame, headers.endStream {
        self.clientFinished = true
      }
      context.fireChannelRead(data)
      return
    case .awaitingHeaders:
      break
    }

    // A stream opened by the client always starts with HEADERS; anything else is left to the
    // handlers behind.
    guard case .headers(let headers) = self.unwrapInboundIn(data) else {
      context.fireChannelRead(data)
      return
    }
    self.clientFinished = headers.endStream
    if let reason = Self.problem(in: headers.headers) {
      self.refuse(context: context, reason: reason, status: Self.invalidArgumentStatus)
    } else {
      self.state = .accepted
      if let path = headers.headers.first(name: ":path") {
        self.maxMessageBytes = Limits.maxRequestMessageBytes(forPath: path)
      }
      context.fireChannelRead(data)
    }
  }

  public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    switch self.unwrapOutboundIn(data) {
    case .headers:
      self.responseHeadersSent = true
      self.connectionManager?.serverWroteHeadersOrData()
    case .data:
      self.connectionManager?.serverWroteHeadersOrData()
    default:
      break
    }
    context.write(data, promise: promise)
  }

  public func channelInactive(context: ChannelHandlerContext) {
    self.endMessage()
    context.fireChannelInactive()
  }

  public func handlerRemoved(context: ChannelHandlerContext) {
    self.endMessage()
  }

  // MARK: Message framing

  private struct Refusal {
    var reason: String
    var status: Int
  }

  /// Walks the gRPC message framing through `buffer`, checks each prefix, and keeps the bytes of
  /// an unfinished message reserved from the connection's budget.
  private func account(_ buffer: ByteBuffer, context: ChannelHandlerContext) -> Refusal? {
    var index = buffer.readerIndex
    let end = buffer.writerIndex
    while index < end {
      if self.payloadRemaining > 0 {
        let taken = min(self.payloadRemaining, end - index)
        self.payloadRemaining -= taken
        index += taken
        if let refusal = self.reserve(taken) { return refusal }
        if self.payloadRemaining == 0 { self.endMessage() }
        continue
      }
      // Reading a prefix.
      let byte = buffer.getInteger(at: index, as: UInt8.self) ?? 0
      index += 1
      switch self.prefixRead {
      case 0: self.prefix.0 = byte
      case 1: self.prefix.1 = byte
      case 2: self.prefix.2 = byte
      case 3: self.prefix.3 = byte
      default: self.prefix.4 = byte
      }
      self.prefixRead += 1
      if let refusal = self.reserve(1) { return refusal }
      guard self.prefixRead == Self.messagePrefixBytes else { continue }
      self.prefixRead = 0
      guard Self.validMessageFlags.contains(self.prefix.0) else {
        return Refusal(
          reason: "a request message has reserved flag bits set (flag byte \(self.prefix.0))",
          status: Self.internalStatus)
      }
      let length =
        Int(self.prefix.1) << 24 | Int(self.prefix.2) << 16 | Int(self.prefix.3) << 8 | Int(self.prefix.4)
      guard length <= self.maxMessageBytes else {
        return Refusal(
          reason: "request message of \(length) bytes exceeds this method's limit of \(self.maxMessageBytes) bytes",
          status: Self.resourceExhaustedStatus)
      }
      self.payloadRemaining = length
      if length == 0 { self.endMessage() }
    }
    if self.reserved > 0 && self.messageTimer == nil {
      // The message did not arrive whole in the frame it started in: give it a deadline.
      let timeout = TimeAmount.milliseconds(Int64(self.limits.messageReceiveTimeoutMilliseconds))
      let seconds = self.limits.messageReceiveTimeoutMilliseconds / 1000
      self.messageTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
        guard let self, self.state == .accepted else { return }
        self.refuse(
          context: context,
          reason: "a request message was not received within \(seconds) s of its first byte",
          status: Self.resourceExhaustedStatus)
      }
    }
    return nil
  }

  private func reserve(_ count: Int) -> Refusal? {
    if let connection = self.connection, !connection.reserve(count) {
      return Refusal(
        reason: "this connection has more unfinished request bytes buffered than its limit of \(self.limits.maxBufferedBytesPerConnection)",
        status: Self.resourceExhaustedStatus)
    }
    self.reserved += count
    return nil
  }

  /// The current message is complete (or the stream is gone): give its bytes back.
  private func endMessage() {
    self.connection?.release(self.reserved)
    self.reserved = 0
    self.messageTimer?.cancel()
    self.messageTimer = nil
  }

  // MARK: Refusal

  /// Answers the stream with `status` and ends it.
  ///
  /// If gRPC Swift has not answered yet, the answer is trailers-only; otherwise trailers. If the
  /// client has not finished sending, the stream is then reset with `NO_ERROR` (RFC 9113 § 8.1:
  /// a server that answered before the request was complete asks the client to stop sending
  /// that way). The stream channel closes once both sides are done; the final `close` covers the
  /// case where it is still open.
  private func refuse(context: ChannelHandlerContext, reason: String, status: Int) {
    self.state = .rejected
    self.endMessage()
    let response = HTTP2Frame.FramePayload.Headers(
      headers: Self.trailers(for: reason, status: status, trailersOnly: !self.responseHeadersSent),
      endStream: true
    )
    context.writeAndFlush(self.wrapOutboundOut(.headers(response)), promise: nil)
    if !self.clientFinished && context.channel.isActive {
      context.writeAndFlush(self.wrapOutboundOut(.rstStream(.noError)), promise: nil)
    }
    if context.channel.isActive {
      context.close(promise: nil)
    }
  }
}

@available(*, unavailable)
extension RequestStreamGuard: Sendable {}
