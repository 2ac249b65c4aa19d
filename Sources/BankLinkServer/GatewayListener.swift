import BankLinkPKI
import Crypto
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Metrics
import NIOCertificateReloading
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SwiftASN1
import Synchronization
import X509

/// The client certificate of each open connection, parsed once at its handshake, found by a
/// call from the remote address its `ServerContext` names.
///
/// Why: grpc-swift-nio-transport's `HTTP2ServerTransport.Posix` builds every stream's
/// transport-specific context by fetching the connection's validated chain from its event loop
/// (a hop) and parsing each certificate of it from DER again: a fifth of banklinkd's CPU per
/// unary call (docs/BENCHMARKS.md, `make bench-grpc`). The chain is the same for every stream of a
/// connection, and our verifier (``ClientCertificateVerifier``) has parsed it already.
public final class ConnectionPeers: Sendable {
  public final class Peer: Sendable {
    /// Whether the connection is in the registry (it has a TCP remote address): the fast path
    /// serves only those, as the interceptor finds only those.
    let registered: Bool
    let certificate: Mutex<Certificate?> = Mutex(nil)
    /// The identity derived from the leaf, with the policy it was derived under: the same for
    /// every call of the connection, so derived (the SAN extension parsed) once.
    private let derived: Mutex<(PeerIdentity.Policy, Result<PeerIdentity, PeerIdentity.Refusal>)?> = Mutex(nil)
    /// The verified leaf, once the handshake verified it.
    public var leaf: Certificate? { self.certificate.withLock { $0 } }

    /// The identity the leaf names under `policy` (nil before the handshake verified a leaf).
    func identity(policy: PeerIdentity.Policy) -> Result<PeerIdentity, PeerIdentity.Refusal>? {
      if let (cachedPolicy, identity) = self.derived.withLock({ $0 }), cachedPolicy == policy { return identity }
      guard let leaf = self.leaf else { return nil }
      let identity = PeerIdentity.derive(from: leaf, policy: policy)
      self.derived.withLock { $0 = (policy, identity) }
      return identity
    }

    /// The connection's last revocation decision (for the identity it was taken for) and the
    /// revocation state's version it holds for.
    private let revocation: Mutex<(version: UInt64, identity: String?, refusal: String?)?> = Mutex(nil)

    /// Why the connection's certificate must be refused now: its validity period is checked on
    /// every call; whether it is revoked is decided again only when what is revoked changed (a
    /// revocation, a store load, a CRL), not re-derived from the serial on every call.
    func refusal(_ certificate: Certificate, identity: String?, revocations: CertificateRevocations) -> String? {
      if let expired = revocations.validityRefusal(certificate) { return expired }
      let version = revocations.version
      if let cached = self.revocation.withLock({ $0 }), cached.version == version, cached.identity == identity {
        return cached.refusal
      }
      let decided = revocations.revocationRefusal(for: certificate, identity: identity)
      self.revocation.withLock { $0 = (decided.version, identity, decided.refusal) }
      return decided.refusal
    }

    init(registered: Bool) {
      self.registered = registered
    }
  }

  private let peers: Mutex<[String: Peer]> = Mutex([:])
  /// SHA-256 of the leaves this process verified at a full handshake (at most
  /// ``maxVerifiedLeaves``; emptied when the CA bundle is replaced): a resumed TLS session
  /// skips the verification callback, so its connection's certificate is taken from the session
  /// only when it is one of these.
  private let verifiedLeaves: Mutex<Set<[UInt8]>> = Mutex([])
  static let maxVerifiedLeaves = 10_000

  public init() {}

  func rememberVerified(_ leaf: Certificate) {
    guard let der = try? Self.der(leaf) else { return }
    self.verifiedLeaves.withLock { leaves in
      if leaves.count >= Self.maxVerifiedLeaves { leaves.removeAll(keepingCapacity: true) }
      leaves.insert(Array(SHA256.hash(data: der)))
    }
  }

  func wasVerified(der: [UInt8]) -> Bool {
    let digest = Array(SHA256.hash(data: der))
    return self.verifiedLeaves.withLock { $0.contains(digest) }
  }

  /// After the CA bundle changed: sessions established under the old one are not resumed with
  /// their certificate (their connections' calls are refused; clients do a full handshake).
  public func forgetVerifiedLeaves() {
    self.verifiedLeaves.withLock { $0.removeAll() }
  }

  static func der(_ certificate: Certificate) throws -> [UInt8] {
    var serializer = DER.Serializer()
    try serializer.serialize(certificate)
    return serializer.serializedBytes
  }

  /// The peer of the connection between `remotePeer` and `localPeer` (as `ServerContext`
  /// writes them). Both ends: the remote address alone is not unique among open connections
  /// (one client address and port reaching the daemon at two of its addresses, through a NAT or
  /// on a wildcard listener), and one connection must never find another's certificate.
  public func peer(remotePeer: String, localPeer: String) -> Peer? {
    self.peers.withLock { $0[remotePeer + " " + localPeer] }
  }

  /// Registers a new connection's peer, until the channel closes. A connection without TCP
  /// addresses is not registered (its streams would share the key `<unknown>` with every other
  /// such connection): its calls find no certificate and are refused. Nor is one whose two ends
  /// are already registered (cannot happen for two open TCP connections; if it ever did, both
  /// are left without a certificate rather than one given the other's).
  func open(_ channel: any Channel) -> Peer {
    guard let remote = Self.key(channel.remoteAddress), let local = Self.key(channel.localAddress) else {
      return Peer(registered: false)
    }
    let key = remote + " " + local
    let peer = Peer(registered: true)
    let registered = self.peers.withLock { peers -> Bool in
      if let existing = peers[key] {
        existing.certificate.withLock { $0 = nil }
        return false
      }
      peers[key] = peer
      return true
    }
    guard registered else { return Peer(registered: false) }
    channel.closeFuture.whenComplete { _ in
      self.peers.withLock { peers in
        if peers[key] === peer { peers[key] = nil }
      }
    }
    return peer
  }

  /// What grpc-swift-nio-transport writes as `ServerContext.remotePeer` and `localPeer` for a
  /// TCP connection (`Channel.remoteAddressInfo`/`localAddressInfo` in GRPCNIOTransportCore):
  /// `ipv4:HOST:PORT`, `ipv6:[HOST]:PORT`.
  static func key(_ address: NIOCore.SocketAddress?) -> String? {
    switch address {
    case .v4(let v4)?: address?.port.map { "ipv4:\(v4.host):\($0)" }
    case .v6(let v6)?: address?.port.map { "ipv6:[\(v6.host)]:\($0)" }
    default: nil
    }
  }
}

/// The daemon's listener for `HTTP2ServerTransport.Custom`: what
/// `HTTP2ServerTransport.Posix` sets up (a TCP listener with `SO_REUSEADDR`, TLS with our own
/// client certificate verification, then the transport's HTTP/2 and gRPC pipeline), except that
/// each connection's verified client certificate is kept in ``ConnectionPeers`` instead of being
/// re-parsed for every stream.
struct GatewayListenerFactory: HTTP2ServerTransport.ListenerFactory {
  let host: String
  let port: Int
  let sslContext: NIOSSLContext
  let verifier: ClientCertificateVerifier
  let peers: ConnectionPeers
  var eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton

  /// The TLS configuration `HTTP2ServerTransport.Posix` builds for mutual TLS: TLS 1.2 or
  /// later (``ConnectionGuard`` enforces `tls.minimum_version` on top), ALPN `grpc-exp` and `h2`,
  /// a client certificate required (verified by ``ClientCertificateVerifier``, not BoringSSL),
  /// the server certificate from `reloader`, so a reload rotates it.
  static func sslContext(certificate reloader: ServerCertificate, caPath: String) throws -> NIOSSLContext {
    let primed = reloader.sslContextConfigurationOverride
    guard let chain = primed.certificateChain, let key = primed.privateKey else {
      throw RPCError(code: .failedPrecondition, message: "the server certificate is not loaded")
    }
    var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: key)
    configuration.minimumTLSVersion = .tlsv12
    configuration.certificateVerification = .noHostnameVerification
    configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caPath))
    configuration.applicationProtocols = ["grpc-exp", "h2"]
    configuration.setCertificateReloader(reloader)
    return try NIOSSLContext(configuration: configuration)
  }

  func makeListeningChannel(
    listenerConfigurator: HTTP2ServerTransport.ListenerConfigurator,
    connectionConfigurator: HTTP2ServerTransport.ConnectionConfigurator
  ) async throws -> NIOAsyncChannel<HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel, Never> {
    let (sslContext, verifier, peers) = (self.sslContext, self.verifier, self.peers)
    return try await ServerBootstrap(group: self.eventLoopGroup)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .serverChannelInitializer { channel in listenerConfigurator.configure(channel: channel) }
      .bind(host: self.host, port: self.port) { channel in
        channel.eventLoop.makeCompletedFuture {
          let peer = try Self.addTLS(to: channel, sslContext: sslContext, verifier: verifier, peers: peers)
          // The fast path finds the certificate here; an unregistered connection's calls are
          // gRPC Swift's, whose interceptor refuses them.
          if peer.registered { try channel.pipeline.syncOperations.addHandler(ConnectionPeerHandler(peer: peer), position: .first) }
        }.flatMap {
          connectionConfigurator.configure(channel: channel, tls: .configured(requireALPN: false))
        }
      }
  }
}

extension GatewayListenerFactory {
  /// Mutual TLS on an accepted connection, from its event loop: the connection registered in
  /// `peers` (its verified client certificate kept there), the TLS handler verifying with
  /// `verifier`, and the handler that takes a resumed session's certificate. Returns the
  /// connection's peer.
  static func addTLS(
    to channel: any Channel, sslContext: NIOSSLContext, verifier: ClientCertificateVerifier, peers: ConnectionPeers
  ) throws -> ConnectionPeers.Peer {
    let peer = peers.open(channel)
    let callback = verifier.callback { leaf in
      peer.certificate.withLock { $0 = leaf }
      peers.rememberVerified(leaf)
    }
    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext, customVerificationCallbackWithMetadata: callback))
    if peer.registered { try channel.pipeline.syncOperations.addHandler(ResumedSessionHandler(peer: peer, peers: peers)) }
    return peer
  }
}

/// A resumed TLS session (a client reconnecting with a session ticket, as Java and many other
/// clients do by default) completes its handshake without the verification callback, so the
/// connection would have no certificate and every call would be refused. At the end of the
/// handshake this takes the session's client certificate — only if this process verified that
/// very certificate at a full handshake (``ConnectionPeers/wasVerified(der:)``) — then leaves the
/// pipeline. Revocation and validity are checked on every call as for any connection.
final class ResumedSessionHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = NIOAny
  let peer: ConnectionPeers.Peer
  let peers: ConnectionPeers

  static let metric = "banklink_tls_sessions_resumed_total"

  init(peer: ConnectionPeers.Peer, peers: ConnectionPeers) {
    self.peer = peer
    self.peers = peers
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if case TLSUserEvent.handshakeCompleted = event {
      if self.peer.leaf == nil, let tls = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
        let presented = tls.peerCertificate, let der = try? presented.toDERBytes(), self.peers.wasVerified(der: der),
        let leaf = try? Certificate(derEncoded: der)
      {
        self.peer.certificate.withLock { $0 = leaf }
        Counter(label: Self.metric).increment()
      }
      context.fireUserInboundEventTriggered(event)
      context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
      return
    }
    context.fireUserInboundEventTriggered(event)
  }
}
