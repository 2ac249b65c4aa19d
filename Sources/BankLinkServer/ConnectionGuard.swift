import BankLinkCore
import Logging
import NIOCore
import NIOHTTP2
import NIOSSL
import NIOTLS
import Synchronization

/// The oldest TLS version a client may negotiate (`tls.minimum_version`).
///
/// TLS 1.2 is the default (SPEC: 1.2 minimum, 1.3 preferred). With 1.2 allowed, the suites the
/// server offers are swift-nio-ssl's defaults, which include CBC suites: grpc-swift-nio-transport's
/// server TLS configuration has no cipher-suite setting. `1.3` admits only TLS 1.3, whose suites
/// are all AEAD; a client that negotiated 1.2 is disconnected right after the handshake.
public enum MinimumTLSVersion: String, Sendable, Equatable, CaseIterable {
  case tls12 = "1.2"
  case tls13 = "1.3"

  func admits(_ version: TLSVersion?) -> Bool {
    switch self {
    case .tls12: return true
    case .tls13: return version == .tlsv13
    }
  }
}

/// Limits on connections, before and after authentication. Defaults from ``Limits``;
/// configurable (docs/configuration.md, `connections`).
public struct ConnectionLimits: Sendable, Equatable {
  /// Open connections in all, authenticated or not.
  public var maxConnections = Limits.maxConnections
  /// Open connections from one source IP address.
  public var maxConnectionsPerAddress = Limits.maxConnectionsPerAddress
  /// Time from accepting a connection to the first HTTP/2 bytes after the TLS handshake.
  public var handshakeTimeoutMilliseconds = Limits.handshakeTimeoutMilliseconds
  /// A connection without open streams for this long is closed (gracefully, with GOAWAY).
  public var idleTimeoutMilliseconds = Limits.connectionIdleTimeoutMilliseconds
  /// Bytes of unfinished request messages one connection may have buffered, over all its streams.
  public var maxBufferedBytesPerConnection = Limits.maxBufferedRequestBytesPerConnection
  /// Time from the first byte of a request message to its last.
  public var messageReceiveTimeoutMilliseconds = Limits.messageReceiveTimeoutMilliseconds
  /// On shutdown, connections still open this long after draining began are closed.
  public var drainTimeoutMilliseconds = Limits.connectionDrainTimeoutMilliseconds
  /// The oldest TLS version admitted.
  public var minimumTLSVersion = MinimumTLSVersion.tls12

  public init() {}

  public static let standard = ConnectionLimits()

  /// A copy with `change` applied.
  public func with(_ change: (inout ConnectionLimits) -> Void) -> ConnectionLimits {
    var copy = self
    change(&copy)
    return copy
  }
}

/// Admits or refuses each accepted TCP connection (total and per source address), and keeps the
/// open ones so that shutdown can close those still open when the drain time is up.
///
/// One per server, shared by every event loop: the state is behind a lock held for a few
/// dictionary operations per connection, never per call.
public final class ConnectionAdmission: Sendable {
  private struct State {
    var perAddress: [String: Int] = [:]
    var open: [ObjectIdentifier: any Channel] = [:]
    var refused = 0
    var refusing = false
  }

  public let limits: ConnectionLimits
  private let state = Mutex(State())
  private let logger: Logger

  public init(limits: ConnectionLimits, logger: Logger) {
    self.limits = limits
    self.logger = logger
  }

  /// Connections open now.
  public var openConnections: Int { self.state.withLock { $0.open.count } }

  /// Connections refused since start.
  public var refusedConnections: Int { self.state.withLock { $0.refused } }

  /// Records `channel` as open, or says why it must be closed.
  func admit(_ channel: any Channel, address: String) -> String? {
    let (refusal, firstRefusal) = self.state.withLock { state -> (String?, Bool) in
      let fromAddress = state.perAddress[address, default: 0]
      var refusal: String?
      if state.open.count >= self.limits.maxConnections {
        refusal = "\(state.open.count) connections open, the limit"
      } else if fromAddress >= self.limits.maxConnectionsPerAddress {
        refusal = "\(fromAddress) connections open from this address, the limit"
      }
      guard let refusal else {
        state.perAddress[address] = fromAddress + 1
        state.open[ObjectIdentifier(channel)] = channel
        state.refusing = false
        return (nil, false)
      }
      state.refused += 1
      defer { state.refusing = true }
      return (refusal, !state.refusing)
    }
    if let refusal {
      // A flood would otherwise write one line per connection: warn when refusing starts, and
      // at debug level after that.
      if firstRefusal {
        self.logger.warning("refusing connections", metadata: ["peer_address": "\(address)", "reason": "\(refusal)"])
      } else {
        self.logger.debug("connection refused", metadata: ["peer_address": "\(address)", "reason": "\(refusal)"])
      }
    }
    return refusal
  }

  /// Logs a connection closed because it negotiated an older TLS version than the minimum.
  func refusedOldTLS(_ version: TLSVersion?, address: String) {
    self.state.withLock { $0.refused += 1 }
    self.logger.warning(
      "connection closed: TLS version below tls.minimum_version",
      metadata: [
        "peer_address": "\(address)", "tls_version": "\(version.map { "\($0)" } ?? "-")",
        "minimum": "\(self.limits.minimumTLSVersion.rawValue)",
      ])
  }

  func release(_ channel: any Channel, address: String) {
    self.state.withLock { state in
      guard state.open.removeValue(forKey: ObjectIdentifier(channel)) != nil else { return }
      let remaining = state.perAddress[address, default: 1] - 1
      state.perAddress[address] = remaining > 0 ? remaining : nil
    }
  }

  /// Closes every connection still open (the end of a drain).
  public func closeAll() {
    let channels = self.state.withLock { Array($0.open.values) }
    for channel in channels {
      channel.close(promise: nil)
    }
  }

  /// Installs a ``ConnectionGuard`` on an accepted connection, or closes it when it is over a
  /// limit. Suited to `ChannelDebuggingCallbacks.onAcceptTCPConnection`, which the transport
  /// calls on the channel's event loop after building its pipeline (TLS, then HTTP/2).
  public func install(on channel: any Channel) -> EventLoopFuture<Void> {
    channel.eventLoop.makeCompletedFuture { try self.installSynchronously(on: channel) }
  }

  /// ``install(on:)`` from the channel's event loop.
  func installSynchronously(on channel: any Channel) throws {
    let address = channel.remoteAddress?.ipAddress ?? "unknown"
    if self.admit(channel, address: address) != nil {
      channel.close(promise: nil)
      return
    }
    let guardHandler = ConnectionGuard(admission: self, address: address)
    let http2 = try channel.pipeline.syncOperations.handler(type: NIOHTTP2Handler.self)
    try channel.pipeline.syncOperations.addHandler(guardHandler, position: .before(http2))
  }
}

/// Sits between TLS and HTTP/2 on one connection: closes it when no HTTP/2 byte arrived within
/// the handshake deadline (a client that never starts or never finishes TLS), releases its
/// admission when it closes, and keeps the budget of request bytes buffered on its streams.
///
/// Not `Sendable`: it lives on its channel's event loop; streams of the connection (same event
/// loop) reach it through the parent channel's pipeline.
public final class ConnectionGuard: ChannelInboundHandler, RemovableChannelHandler {
  public typealias InboundIn = ByteBuffer

  private let admission: ConnectionAdmission
  private let address: String
  private var handshakeTimer: Scheduled<Void>?
  private var released = false
  /// Bytes of unfinished request messages over all streams of this connection.
  private(set) var bufferedBytes = 0

  init(admission: ConnectionAdmission, address: String) {
    self.admission = admission
    self.address = address
  }

  /// Takes `count` bytes of the connection's buffer budget; false when that would exceed it.
  func reserve(_ count: Int) -> Bool {
    guard self.bufferedBytes + count <= self.admission.limits.maxBufferedBytesPerConnection else { return false }
    self.bufferedBytes += count
    return true
  }

  func release(_ count: Int) {
    self.bufferedBytes = max(0, self.bufferedBytes - count)
  }

  public func handlerAdded(context: ChannelHandlerContext) {
    let channel = context.channel
    let timeout = TimeAmount.milliseconds(Int64(self.admission.limits.handshakeTimeoutMilliseconds))
    self.handshakeTimer = context.eventLoop.scheduleTask(in: timeout) {
      channel.close(promise: nil)
    }
  }

  public func handlerRemoved(context: ChannelHandlerContext) {
    self.finish(context.channel)
  }

  public func channelInactive(context: ChannelHandlerContext) {
    self.finish(context.channel)
    context.fireChannelInactive()
  }

  public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if case TLSUserEvent.handshakeCompleted = event {
      let version = try? context.pipeline.syncOperations.nioSSL_tlsVersion()
      if !self.admission.limits.minimumTLSVersion.admits(version) {
        self.admission.refusedOldTLS(version, address: self.address)
        context.close(promise: nil)
        return
      }
    }
    context.fireUserInboundEventTriggered(event)
  }

  public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    // Decrypted bytes: the handshake is done and the client speaks. From here on, idleness is
    // gRPC's `maxIdleTime`.
    if let timer = self.handshakeTimer {
      timer.cancel()
      self.handshakeTimer = nil
    }
    context.fireChannelRead(data)
  }

  private func finish(_ channel: any Channel) {
    self.handshakeTimer?.cancel()
    self.handshakeTimer = nil
    guard !self.released else { return }
    self.released = true
    self.admission.release(channel, address: self.address)
  }
}

@available(*, unavailable)
extension ConnectionGuard: Sendable {}
