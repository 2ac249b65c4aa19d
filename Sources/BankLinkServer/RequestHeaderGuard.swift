import NIOCore
import NIOHPACK
import NIOHTTP2

/// Refuses, on each HTTP/2 stream, a request whose headers would crash gRPC Swift's parsing, and
/// answers it with a trailers-only `INVALID_ARGUMENT` response instead.
///
/// Why: GRPCCore's `Timeout.init(decoding:)` (grpc-swift-2 2.4.3, `Sources/GRPCCore/Timeout.swift`)
/// parses the amount of `grpc-timeout` with `Int64(_:)`, which accepts a sign, then passes it to
/// `Timeout.init(amount:unit:)`, whose `precondition((0 ... Timeout.maxAmount).contains(amount))`
/// traps on a negative amount: one `grpc-timeout: -1S` from any client stops the daemon. That
/// parse happens in the server RPC executor, long after the transport accepted the stream, so the
/// check must sit in front of it: this handler is put first in every stream channel's pipeline
/// (``install(on:)``, the transport's `onAcceptHTTP2Stream` callback) and sees the request's
/// HEADERS frame before gRPC's `GRPCServerStreamHandler` does.
///
/// The other request headers gRPC Swift parses (`content-type`, `:path`, `:scheme`, `:method`,
/// `grpc-encoding`, `grpc-accept-encoding`, `te`, `-bin` metadata) are either validated by
/// swift-nio-http2 or refused/tolerated by grpc-swift without trapping, so only `grpc-timeout`
/// is checked here.
///
/// Cost: after the first HEADERS frame of an accepted request the handler removes itself, so DATA
/// frames never pass through it.
///
/// Not `Sendable`: like every channel handler it lives on its channel's event loop; it is created
/// and added there (see ``install(on:)``).
public final class RequestHeaderGuard: ChannelInboundHandler, RemovableChannelHandler {
  public typealias InboundIn = HTTP2Frame.FramePayload
  public typealias InboundOut = HTTP2Frame.FramePayload
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
    /// The request was refused: every later inbound frame of the stream is dropped.
    case rejected
    /// The headers were accepted; the handler is leaving the pipeline.
    case accepted
  }

  private var state: State = .awaitingHeaders

  public init() {}

  // MARK: Installation

  /// Puts a new guard first in `channel`'s pipeline, ahead of gRPC's stream handler.
  ///
  /// Suited to be `HTTP2ServerTransport.Config.ChannelDebuggingCallbacks.onAcceptHTTP2Stream`:
  /// the transport calls it on the stream channel's event loop after adding its own handlers and
  /// before the stream channel is activated; swift-nio-http2 holds the stream's HEADERS frame
  /// until activation, so the guard always sees it first.
  public static func install(on channel: any Channel) -> EventLoopFuture<Void> {
    if channel.eventLoop.inEventLoop {
      return channel.eventLoop.makeCompletedFuture(withResultOf: {
        try RequestHeaderGuard.addGuard(to: channel)
      })
    }
    return channel.eventLoop.submit {
      try RequestHeaderGuard.addGuard(to: channel)
    }
  }

  /// Must run on `channel`'s event loop: the handler is created here and never leaves it.
  private static func addGuard(to channel: any Channel) throws {
    try channel.pipeline.syncOperations.addHandler(RequestHeaderGuard(), position: .first)
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
  /// `content-type: application/grpc`, `grpc-status: 3`, `grpc-message` percent-encoded.
  public static func trailers(for reason: String) -> HPACKHeaders {
    [
      ":status": Self.httpStatusOK,
      "content-type": Self.grpcContentType,
      "grpc-status": String(Self.invalidArgumentStatus),
      "grpc-message": Self.percentEncoded(reason),
    ]
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
      // The stream was answered already; gRPC's handler never learns of it.
      return
    case .accepted:
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

    if let reason = Self.problem(in: headers.headers) {
      self.state = .rejected
      self.refuse(context: context, reason: reason, clientFinished: headers.endStream)
    } else {
      self.state = .accepted
      context.fireChannelRead(data)
      context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
  }

  /// Answers the stream with trailers-only `INVALID_ARGUMENT` and ends it.
  ///
  /// If the client has not finished sending, the stream is then reset with `NO_ERROR` (RFC 9113
  /// § 8.1: a server that answered before the request was complete asks the client to stop
  /// sending that way). The stream channel closes once both sides are done; the final `close`
  /// only covers the case where it is still open.
  private func refuse(context: ChannelHandlerContext, reason: String, clientFinished: Bool) {
    let response = HTTP2Frame.FramePayload.Headers(
      headers: Self.trailers(for: reason),
      endStream: true
    )
    context.writeAndFlush(self.wrapOutboundOut(.headers(response)), promise: nil)
    if !clientFinished && context.channel.isActive {
      context.writeAndFlush(self.wrapOutboundOut(.rstStream(.noError)), promise: nil)
    }
    if context.channel.isActive {
      context.close(promise: nil)
    }
  }
}

@available(*, unavailable)
extension RequestHeaderGuard: Sendable {}
