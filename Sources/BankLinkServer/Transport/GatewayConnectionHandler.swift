import NIOCore
import NIOExtras
import NIOHTTP2

/// One HTTP/2 connection's life for ``GatewayTransport``, as grpc-swift-nio-transport's server
/// connection handler manages it (and with its defaults):
/// - **drain**: on the server's quiesce event, `GOAWAY` with the highest stream id and a PING;
///   when the PING is acknowledged (the client has seen the first `GOAWAY` and opens no more
///   streams), `GOAWAY` with the last stream id opened; the connection closes when its streams
///   have. (The daemon's drain timeout closes connections whose streams never end.)
/// - **idle**: a connection with no stream open for `maxIdleTime` is sent `GOAWAY` and closed.
/// - **keepalive**: after `keepaliveTime` without a frame from the client, a PING; no frame
///   within `keepaliveTimeout` after it, and the connection drains.
/// - **client pings**: at most one per `minPingIntervalWithoutCalls` while streams are open, one
///   per two hours while none are (gRFC A8), counted afresh whenever the server writes HEADERS or
///   DATA (``RequestStreamGuard`` tells it); past ``maxPingStrikes`` too early, `GOAWAY`
///   `ENHANCE_YOUR_CALM` ("too_many_pings") and the connection closes. swift-nio-http2 answers
///   the PINGs themselves.
///
/// It sits behind `NIOHTTP2Handler`, which passes it the connection's own frames (PING, GOAWAY,
/// SETTINGS) and its stream created/closed events.
final class GatewayConnectionHandler: ChannelDuplexHandler {
  typealias InboundIn = HTTP2Frame
  typealias InboundOut = HTTP2Frame
  typealias OutboundIn = HTTP2Frame
  typealias OutboundOut = HTTP2Frame

  struct Settings: Sendable {
    var maxIdleTime: TimeAmount?
    var keepaliveTime = Self.keepaliveTime
    var keepaliveTimeout = Self.keepaliveTimeout
    var minPingIntervalWithoutCalls = Self.minPingIntervalWithoutCalls
    var allowPingsWithoutCalls = false

    /// grpc-swift-nio-transport's defaults (`HTTP2ServerTransport.Config.Keepalive.defaults`).
    static let keepaliveTime = TimeAmount.hours(2)
    static let keepaliveTimeout = TimeAmount.seconds(20)
    static let minPingIntervalWithoutCalls = TimeAmount.minutes(5)
    /// The interval between client PINGs allowed while no call is open (gRFC A8).
    static let pingIntervalWithoutCalls = TimeAmount.hours(2)
  }

  /// Client PINGs tolerated too early before the connection is closed (gRPC's value).
  static let maxPingStrikes = 2
  static let tooManyPings = "too_many_pings"
  /// How long a closing connection may take to send what is still pending (a last GOAWAY)
  /// before it is closed regardless.
  static let closeGraceTime = TimeAmount.seconds(5)

  private let settings: Settings
  private var context: ChannelHandlerContext?
  private var openStreams = 0
  private var lastStreamID = HTTP2StreamID.rootStream
  private let keepalivePing: HTTP2PingData
  private let drainPing: HTTP2PingData
  private enum Drain { case none, firstGoAwaySent, secondGoAwaySent }
  private var drain = Drain.none
  private var closed = false
  private var idleTimer: Scheduled<Void>?
  private var keepaliveTimer: Scheduled<Void>?
  private var keepaliveTimeoutTimer: Scheduled<Void>?
  private var lastValidPing: NIODeadline?
  private var lastRead = NIODeadline.now()
  private var pingStrikes = 0
  private var inReadLoop = false
  private var flushPending = false

  init(settings: Settings) {
    self.settings = settings
    let data = UInt64.random(in: .min ... .max)
    self.keepalivePing = HTTP2PingData(withInteger: data)
    self.drainPing = HTTP2PingData(withInteger: ~data)
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    if context.channel.isActive { self.started() }
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.cancelTimers()
    self.context = nil
  }

  func channelActive(context: ChannelHandlerContext) {
    self.started()
    context.fireChannelActive()
  }

  private func started() {
    self.lastRead = .now()
    self.startIdleTimer()
    self.scheduleKeepalive(at: self.lastRead + self.settings.keepaliveTime)
  }

  func channelInactive(context: ChannelHandlerContext) {
    self.closed = true
    self.cancelTimers()
    context.fireChannelInactive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    self.inReadLoop = true
    // Any frame shows the client is there (the keepalive timer checks the time of the last read
    // when it fires, rather than being moved on every read).
    if let timeout = self.keepaliveTimeoutTimer {
      timeout.cancel()
      self.keepaliveTimeoutTimer = nil
    }
    if case .ping(let data, let ack) = self.unwrapInboundIn(data).payload {
      if ack {
        self.pingAcknowledged(data, context: context)
      } else {
        self.pingReceived(context: context)
      }
    }
    context.fireChannelRead(data)
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    self.inReadLoop = false
    if self.flushPending {
      self.flushPending = false
      context.flush()
    }
    self.lastRead = .now()
    context.fireChannelReadComplete()
  }

  /// swift-nio-http2 answers a connection error (a bad preface, HPACK, a reset or CONTINUATION
  /// flood, a client that reads nothing while control frames pile up) with `GOAWAY` and passes the
  /// error on, leaving the close to the handler behind it: this one, as grpc-swift-nio-transport's.
  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    switch error {
    case is NIOHTTP2Errors.StreamError:
      // A stream's error, passed down the connection's pipeline too: not the connection's.
      break
    case is NIOHTTP2Errors.NoSuchStream where self.drain != .none:
      // A client opening a stream while the GOAWAY is on its way (swift-nio-http2 reports it so).
      break
    default:
      self.closed = true
      self.cancelTimers()
      context.close(promise: nil)
    }
    context.fireErrorCaught(error)
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    switch event {
    case is ChannelShouldQuiesceEvent:
      self.beginDrain()
    default:
      break
    }
    context.fireUserInboundEventTriggered(event)
  }

  // MARK: Streams

  /// swift-nio-http2's stream multiplexer tells of streams through a delegate (its events do not
  /// reach the handlers behind it). Called on the connection's event loop.
  ///
  /// One reference, not a `NIOLoopBound` (which adds the event loop): swift-nio-http2 copies its
  /// multiplexer state, delegate included, several times per frame, a retain each.
  /// `@unchecked Sendable`: swift-nio-http2 calls it on the connection's event loop only, where
  /// the handler lives (checked in debug builds).
  struct StreamDelegate: NIOHTTP2StreamDelegate, @unchecked Sendable {
    let handler: GatewayConnectionHandler

    func streamCreated(_ id: HTTP2StreamID, channel: any Channel) {
      channel.eventLoop.assertInEventLoop()
      self.handler.streamCreated(id)
    }

    func streamClosed(_ id: HTTP2StreamID, channel: any Channel) {
      channel.eventLoop.assertInEventLoop()
      self.handler.streamClosed()
    }
  }

  private func streamCreated(_ id: HTTP2StreamID) {
    self.openStreams += 1
    if id > self.lastStreamID { self.lastStreamID = id }
    self.idleTimer?.cancel()
    self.idleTimer = nil
  }

  private func streamClosed() {
    self.openStreams = max(0, self.openStreams - 1)
    guard self.openStreams == 0, let context = self.context else { return }
    if self.drain == .secondGoAwaySent {
      // After the flush carrying the stream's last frame.
      context.eventLoop.assumeIsolated().execute { self.closeGracefully() }
    } else if self.drain == .none {
      self.startIdleTimer()
    }
  }

  /// The server wrote HEADERS or DATA on a stream: the client may PING again at once (gRPC's
  /// servers reset the PING policy then; C++ clients PING to probe the bandwidth after data).
  func serverWroteHeadersOrData() {
    self.pingStrikes = 0
    self.lastValidPing = nil
  }

  // MARK: Drain, idle, keepalive

  private func beginDrain() {
    guard let context = self.context, self.drain == .none, !self.closed else { return }
    self.cancelTimers()
    self.drain = .firstGoAwaySent
    context.write(self.wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: .maxID, errorCode: .noError, opaqueData: nil))), promise: nil)
    context.write(self.wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .ping(self.drainPing, ack: false))), promise: nil)
    self.flush(context)
  }

  private func pingAcknowledged(_ data: HTTP2PingData, context: ChannelHandlerContext) {
    guard self.drain == .firstGoAwaySent, data == self.drainPing else { return }
    self.drain = .secondGoAwaySent
    context.write(
      self.wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: self.lastStreamID, errorCode: .noError, opaqueData: nil))),
      promise: nil)
    self.flush(context)
    if self.openStreams == 0 { self.closeGracefully() }
  }

  private func pingReceived(context: ChannelHandlerContext) {
    let now = NIODeadline.now()
    let interval =
      self.openStreams > 0 || self.settings.allowPingsWithoutCalls
      ? self.settings.minPingIntervalWithoutCalls : Settings.pingIntervalWithoutCalls
    if let last = self.lastValidPing, last + interval > now {
      self.pingStrikes += 1
      guard self.pingStrikes > Self.maxPingStrikes else { return }
      let goAway = HTTP2Frame(
        streamID: .rootStream,
        payload: .goAway(
          lastStreamID: self.lastStreamID, errorCode: .enhanceYourCalm,
          opaqueData: context.channel.allocator.buffer(string: Self.tooManyPings)))
      // Flushed now, not at the end of the read, so that the close after it waits for it: a
      // plain close fails the writes still pending in the channel, and closing a tick later lost
      // the GOAWAY whenever the socket was briefly full.
      context.write(self.wrapOutboundOut(goAway), promise: nil)
      context.flush()
      self.closeGracefully()
    } else {
      self.lastValidPing = now
    }
  }

  /// Timers capture the handler strongly (a weak reference would put every retain of it on the
  /// slow path); ``cancelTimers()`` on close breaks the cycle.
  private func scheduleKeepalive(at deadline: NIODeadline) {
    guard let context = self.context, !self.closed, self.drain == .none else { return }
    self.keepaliveTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
      self.keepaliveTimerFired()
    }
  }

  /// `keepaliveTime` after the last read: a PING, and `keepaliveTimeout` for any frame back.
  private func keepaliveTimerFired() {
    self.keepaliveTimer = nil
    guard let context = self.context, !self.closed, self.drain == .none else { return }
    let due = self.lastRead + self.settings.keepaliveTime
    if due > .now() { return self.scheduleKeepalive(at: due) }
    context.write(self.wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .ping(self.keepalivePing, ack: false))), promise: nil)
    self.flush(context)
    self.keepaliveTimeoutTimer = context.eventLoop.assumeIsolated().scheduleTask(in: self.settings.keepaliveTimeout) {
      self.keepaliveTimeoutTimer = nil
      self.beginDrain()
    }
    self.scheduleKeepalive(at: .now() + self.settings.keepaliveTime)
  }

  private func startIdleTimer() {
    guard let context = self.context, let maxIdle = self.settings.maxIdleTime, self.idleTimer == nil, self.openStreams == 0,
      self.drain == .none, !self.closed
    else { return }
    self.idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: maxIdle) {
      self.idleTimedOut()
    }
  }

  /// No stream for `maxIdleTime`: `GOAWAY` naming the last stream (a stream the client opens
  /// meanwhile is refused, and a gRPC client retries it elsewhere), then close.
  private func idleTimedOut() {
    guard let context = self.context, self.openStreams == 0, !self.closed else { return }
    self.idleTimer = nil
    self.drain = .secondGoAwaySent
    context.write(
      self.wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: self.lastStreamID, errorCode: .noError, opaqueData: nil))),
      promise: nil)
    self.flush(context)
    self.closeGracefully()
  }

  /// Closes after what is written has gone out: output first, then the whole channel. A client
  /// that reads nothing would hold the output open for ever, so the channel is closed outright
  /// after ``closeGraceTime`` whatever is still pending.
  private func closeGracefully() {
    guard let context = self.context, !self.closed else { return }
    self.closed = true
    self.cancelTimers()
    let promise = context.eventLoop.makePromise(of: Void.self)
    context.close(mode: .output, promise: promise)
    let outright = context.eventLoop.assumeIsolated().scheduleTask(in: Self.closeGraceTime) { context.close(promise: nil) }
    promise.futureResult.assumeIsolated().whenComplete { _ in
      outright.cancel()
      context.close(promise: nil)
    }
  }

  private func cancelTimers() {
    self.idleTimer?.cancel()
    self.idleTimer = nil
    self.keepaliveTimer?.cancel()
    self.keepaliveTimer = nil
    self.keepaliveTimeoutTimer?.cancel()
    self.keepaliveTimeoutTimer = nil
  }

  private func flush(_ context: ChannelHandlerContext) {
    if self.inReadLoop {
      self.flushPending = true
    } else {
      context.flush()
    }
  }
}

@available(*, unavailable)
extension GatewayConnectionHandler: Sendable {}
