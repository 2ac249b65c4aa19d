import BankLinkCore
import BankLinkPKI
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import Synchronization
import X509

/// The principals table currently in force: the configured table with the principals stored at
/// run time (``PrincipalRegistry``) over it. Every call reads the table at the time it arrives,
/// so a change applies to the next call, also on connections that are already open.
public final class PrincipalDirectory: Sendable {
  private struct State {
    var configured: PrincipalTable
    var overrides: [Principal] = []
    /// Journal sequence of the change `overrides` reflects: older tables are not applied.
    var version: UInt64 = 0
    var current: PrincipalTable
  }

  private let state: Mutex<State>

  public init(_ table: PrincipalTable) {
    self.state = Mutex(State(configured: table, current: table))
  }

  public var current: PrincipalTable {
    self.state.withLock { $0.current }
  }

  /// The table from the configuration, without the run-time changes.
  public var configured: PrincipalTable {
    self.state.withLock { $0.configured }
  }

  /// Replaces the configured table (a reload); the run-time changes stay over it.
  public func replace(with table: PrincipalTable) {
    self.state.withLock {
      $0.configured = table
      $0.current = table.overlaid(with: $0.overrides)
    }
  }

  /// Puts the stored run-time principals in force, unless a newer set already is.
  func apply(overrides: [Principal], version: UInt64) {
    self.state.withLock {
      guard version >= $0.version else { return }
      $0.overrides = overrides
      $0.version = version
      $0.current = $0.configured.overlaid(with: overrides)
    }
  }
}

/// Authorizes every RPC against the ``AuthorizationTable`` before any handler runs, and makes
/// the ``Caller`` available to the handler (also inside response streams).
public struct AuthorizationInterceptor: ServerInterceptor {
  let table: AuthorizationTable
  let principals: PrincipalDirectory
  let identityPolicy: PeerIdentity.Policy
  let logger: Logger
  /// Alerts on client certificates close to expiry, seen on calls.
  let expiry: CertificateExpiryWatch?
  /// Revoked certificates and identities, and the validity period, checked on every call.
  let revocations: CertificateRevocations?
  /// Each connection's verified client certificate (``GatewayServer``'s listener). Calls on a
  /// transport that does not fill it take the certificate from the transport's context.
  let peers: ConnectionPeers?

  public init(
    table: AuthorizationTable,
    principals: PrincipalDirectory,
    identityPolicy: PeerIdentity.Policy = .standard,
    logger: Logger,
    expiry: CertificateExpiryWatch? = nil,
    revocations: CertificateRevocations? = nil,
    peers: ConnectionPeers? = nil
  ) {
    self.table = table
    self.principals = principals
    self.identityPolicy = identityPolicy
    self.logger = logger
    self.expiry = expiry
    self.revocations = revocations
    self.peers = peers
  }

  public func intercept<Input: Sendable, Output: Sendable>(
    request: StreamingServerRequest<Input>,
    context: ServerContext,
    next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
  ) async throws -> StreamingServerResponse<Output> {
    let caller = try self.caller(of: context)
    // From the request's `grpc-timeout`, or, on banklinkd's own transport (which enforces the
    // deadline itself and keeps the header from gRPC Swift), as the transport bound it.
    let deadline = RequestDeadline.from(request.metadata) ?? RequestDeadline.current
    var response = try await Caller.$current.withValue(caller) {
      try await RequestDeadline.$current.withValue(deadline) {
        try await next(request, context)
      }
    }
    // Streaming handlers write their messages after `next` returns: carry the caller there too.
    if case .success(var contents) = response.accepted {
      let producer = contents.producer
      contents.producer = { writer in
        try await Caller.$current.withValue(caller) {
          try await RequestDeadline.$current.withValue(deadline) { try await producer(writer) }
        }
      }
      response.accepted = .success(contents)
    }
    return response
  }

  /// The authorized caller of the call `context` describes, or the refusal (logged).
  ///
  /// Not inlined into `intercept`: the authorization's locals (certificates, identities, log
  /// metadata) would then be part of that async function's frame, which lives in the call's task
  /// for the whole call — 46 KB a call, measured (docs/BENCHMARKS.md), and with it the RSS at
  /// 128 payments in flight. Here they live on the thread's stack for the check only.
  @inline(never)
  func caller(of context: ServerContext) throws(RPCError) -> Caller {
    if let peer = self.peers?.peer(remotePeer: context.remotePeer, localPeer: context.localPeer) {
      return try self.authorize(peer, method: context.descriptor, remotePeer: context.remotePeer)
    }
    let certificate = (context.transportSpecific as? HTTP2ServerTransport.Posix.Context)?.peerCertificate
    return try self.authorize(
      certificate.map { ($0, PeerIdentity.derive(from: $0, policy: self.identityPolicy)) }, method: context.descriptor,
      remotePeer: context.remotePeer)
  }

  /// The caller of `method` on the connection of `peer` (its verified client certificate and the
  /// identity derived from it once), or the refusal (logged). Shared by the interceptor and the
  /// unary fast path (``UnaryFastPath``), so both decide alike.
  func authorize(_ peer: ConnectionPeers.Peer, method: MethodDescriptor, remotePeer: @autoclosure () -> String) throws(RPCError) -> Caller {
    let identity = peer.identity(policy: self.identityPolicy)
    let revocations = self.revocations
    return try self.authorize(
      peer.leaf.flatMap { leaf in identity.map { (leaf, $0) } }, method: method, remotePeer: remotePeer(),
      refusal: { certificate, identity in revocations.flatMap { peer.refusal(certificate, identity: identity, revocations: $0) } })
  }

  /// The caller of `method` presenting `presented` (the connection's verified client
  /// certificate and the identity derived from it), or the refusal (logged): an identity the
  /// certificate does not name, a revoked or expired certificate, a method outside the table, an
  /// unknown principal, a missing role.
  /// `refusal`: why the certificate, as the identity, is refused now (revoked, expired); by
  /// default asked of `revocations` afresh.
  func authorize(
    _ presented: (certificate: Certificate, identity: Result<PeerIdentity, PeerIdentity.Refusal>)?, method: MethodDescriptor,
    remotePeer: @autoclosure () -> String, refusal: ((Certificate, String) -> String?)? = nil
  ) throws(RPCError) -> Caller {
    var peer: PeerIdentity?
    if let (certificate, identity) = presented {
      switch identity {
      case .success(let identity):
        peer = identity
      case .failure(let refusal):
        // Nothing from the certificate is quoted but its serial number (hex): a subject may hold
        // control characters that would forge log lines.
        self.logger.warning(
          "call refused: the client certificate names no acceptable identity",
          metadata: [
            "method": "\(method)",
            "serial": "\(certificate.serialNumber.hex)",
            "peer": "\(remotePeer())",
            "reason": "\(refusal)",
          ]
        )
        throw RPCError(code: .unauthenticated, message: "the client certificate is refused: \(refusal)")
      }
    }
    // The handshake checked the certificate when the connection opened; a connection outlives
    // a revocation or the certificate's expiry, so every call checks again.
    let check = refusal ?? { certificate, identity in self.revocations?.refusal(for: certificate, identity: identity) }
    if let peer, let refusal = check(peer.certificate, peer.identity) {
      self.logger.warning(
        "call refused: the client certificate is no longer accepted",
        metadata: [
          "method": "\(method)", "identity": "\(peer.identity)", "serial": "\(peer.serialNumberHex)",
          "peer": "\(remotePeer())", "reason": "\(LogText.prefix(refusal, maxBytes: Limits.maxLoggedReasonBytes))",
        ])
      throw RPCError(code: .unauthenticated, message: "the client certificate is refused: \(refusal)")
    }
    switch self.table.decide(method: method, peer: peer, principals: self.principals.current) {
    case .denied(let error):
      self.logger.warning(
        "call refused",
        metadata: [
          "method": "\(method)",
          "identity": "\(peer?.identity ?? "-")",
          "peer": "\(remotePeer())",
          "code": "\(error.code)",
          "reason": "\(error.message)",
        ]
      )
      throw error
    case .allowed(let caller):
      self.expiry?.observe(whose: "principal '\(caller.peer.identity)'", serial: caller.peer.serialNumberHex, notAfter: caller.peer.notValidAfter)
      return caller
    }
  }
}
