import BankLinkBanks
import BankLinkCore
import BankLinkJournal
import BankLinkPKI
import BankLinkProto
import BankLinkStore
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import NIOCore
import ServiceLifecycle
import SwiftASN1
import Synchronization
import X509

/// The gRPC server of banklinkd: every banklink.v1 service and grpc.health.v1 behind the
/// authorization interceptor, on HTTP/2 with mutual TLS only.
///
/// It is a ``ServiceLifecycle/Service``: `run()` serves until graceful shutdown is triggered,
/// then stops accepting connections, lets in-flight calls finish and returns.
public final class GatewayServer: Service {
  /// Which gRPC server transport serves the calls.
  public enum Transport: String, Sendable, CaseIterable {
    /// ``GatewayTransport``: a stream gets a task only when gRPC Swift serves its call.
    case gateway
    /// grpc-swift-nio-transport's `HTTP2ServerTransport` with ``GatewayListenerFactory``.
    case grpcNIO = "grpc-nio"
  }

  /// The transport and the gRPC Swift server on it.
  private enum Serving: Sendable {
    case gateway(GatewayTransport, GRPCServer<GatewayTransport>)
    case grpcNIO(HTTP2ServerTransport.Custom<GatewayListenerFactory>, GRPCServer<HTTP2ServerTransport.Custom<GatewayListenerFactory>>)
  }
  public struct Configuration: Sendable {
    public var listen: ListenAddress
    /// PEM bundle of the CA(s) whose client certificates are accepted. Nothing else is trusted:
    /// not the system roots.
    public var caPath: String
    /// PEM certificate chain and private key of the server.
    public var certificatePath: String
    public var keyPath: String
    /// What client certificate identities must look like (e.g. a SPIFFE trust domain).
    public var identityPolicy: PeerIdentity.Policy
    /// Connection, buffering and drain limits.
    public var connections: ConnectionLimits
    /// How statement entries are matched to payments.
    public var reconciliation = ReconciliationSettings()
    /// An X.509 CRL (PEM or DER) from a CA in `caPath`: its serials are refused. Read at start
    /// and on reload (`reloadRevocationList`).
    public var crlPath: String?
    /// Whether the hot unary methods are answered on the event loop (``UnaryFastPath``). Off:
    /// every call goes through gRPC Swift (for comparison: `BANKLINK_UNARY_FAST_PATH=off`).
    public var unaryFastPath = true
    /// The gRPC transport: banklinkd's own (``GatewayTransport``), or grpc-swift-nio-transport's
    /// (for comparison: `BANKLINK_TRANSPORT=grpc-nio`).
    public var transport = Transport.gateway

    public init(
      listen: ListenAddress,
      caPath: String,
      certificatePath: String,
      keyPath: String,
      identityPolicy: PeerIdentity.Policy = .standard,
      connections: ConnectionLimits = .standard
    ) {
      self.listen = listen
      self.caPath = caPath
      self.certificatePath = certificatePath
      self.keyPath = keyPath
      self.identityPolicy = identityPolicy
      self.connections = connections
    }
  }

  public let configuration: Configuration
  public let health: HealthStatus
  public let principals: PrincipalDirectory
  /// Revoked client certificates (stored, and the CRL file's), checked on every call.
  public let revocations: CertificateRevocations
  /// The trusted CAs (`tls.ca`): client chains are verified against them at each handshake, and
  /// a CRL's signature. Replaced on reload.
  public let trust: TrustedAuthorities
  /// The daemon's own certificate and key (`tls.certificate`, `tls.key`), presented at each new
  /// handshake and signing checkpoints. Replaced on reload.
  public let certificate: ServerCertificate
  /// The daemon installs its configuration reload here (`ReloadConfiguration`).
  public let reloadHook: ConfigurationReloadHook
  /// Watches certificate expiry (the daemon's own, and clients' on their calls).
  public let expiry: CertificateExpiryWatch
  /// Wakes alert subscribers after commits; ended on shutdown.
  public let alerts: AlertHub
  /// The daemon's store (the CRL freshness record is kept in its `meta`).
  let store: Store
  let reconciliation: ReconciliationServiceHandler
  /// The open connections and the limits on them.
  public let admission: ConnectionAdmission
  private let shutdownBegun = Mutex(false)
  /// The unary fast path, nil when `unaryFastPath` is off.
  private let fastPath: UnaryFastPath?
  /// Streams banklinkd's transport handed to gRPC Swift, each with a task (nil on
  /// grpc-swift-nio-transport, which gives every stream one).
  public var streamsGivenToGRPCSwift: Int? {
    if case .gateway(let transport, _) = self.serving { return transport.streamsAccepted }
    return nil
  }
  /// Calls gRPC Swift's interceptors saw since start.
  private let grpcSwiftCalls: RequestIDInterceptor.CallCount
  /// Calls started since start, by either path (the daemon trims its heap when they stop coming).
  public var callsStarted: Int { self.fastPathAnswered + self.grpcSwiftCalls.value.load(ordering: .relaxed) }
  /// Calls the unary fast path answered since start (tests, diagnostics).
  public var fastPathAnswered: Int { self.fastPath?.answered.load(ordering: .relaxed) ?? 0 }
  private let serving: Serving
  /// Each open connection's verified client certificate, for the calls on it.
  public let peers = ConnectionPeers()
  /// `listen` as configured, for messages.
  private let listenAddress: String
  private let logger: Logger

  public init(
    configuration: Configuration,
    principals: PrincipalDirectory,
    accountCache: AccountCache,
    connector: any AccountInformationConnector,
    payments: PaymentLedger,
    otpVault: OTPVault? = nil,
    logger: Logger,
    now: @escaping @Sendable () -> Instant = WallClock.now
  ) throws {
    self.configuration = configuration
    self.principals = principals
    self.logger = logger

    // Certificate validity is judged on the wall clock, as the TLS handshake judges it.
    let revocations = CertificateRevocations()
    try revocations.load(from: payments.store)
    self.revocations = revocations
    // Principals changed at run time are in force before the first call is served.
    let registry = PrincipalRegistry(writer: payments.writer, directory: principals, now: payments.now)
    try registry.loadStored()
    let alerts = try AlertHub(store: payments.store)
    self.alerts = alerts
    self.store = payments.store
    // Certificate validity is judged on the wall clock, as the TLS handshake judges it.
    let certificate = ServerCertificate(try .load(certificatePath: configuration.certificatePath, keyPath: configuration.keyPath, now: Date()))
    self.certificate = certificate
    // An import cut short (a crash, a kill) left its entries unfinished: removed before serving.
    let statements = StatementStore(store: payments.store, cache: accountCache, now: now)
    let removed = try statements.removeUnfinishedImports()
    if removed > 0 { logger.warning("removed an unfinished statement import", metadata: ["records": "\(removed)"]) }
    try? FileManager.default.removeItem(atPath: payments.store.configuration.directory + "/spool")
    let reconciliation = ReconciliationServiceHandler(
      statements: statements, reconciler: Reconciler(store: payments.store, settings: configuration.reconciliation, now: now))
    self.reconciliation = reconciliation
    let reloadHook = ConfigurationReloadHook()
    self.reloadHook = reloadHook
    let accounts = AccountServiceHandler(cache: accountCache, connector: connector, logger: logger, now: now)
    let paymentService = PaymentServiceHandler(ledger: payments, vault: otpVault)
    let services: [any RegistrableRPCService] = [
      accounts,
      paymentService,
      MonitoringServiceHandler(store: payments.store, writer: payments.writer, hub: alerts, now: now),
      reconciliation,
      AdminServiceHandler(
        store: payments.store,
        payments: payments,
        vault: otpVault,
        principals: principals,
        registry: registry,
        identityPolicy: configuration.identityPolicy,
        certificate: certificate,
        revocations: revocations,
        reload: reloadHook
      ),
    ]
    let serviceNames = [
      Banklink_V1_AccountService.descriptor, Banklink_V1_PaymentService.descriptor,
      Banklink_V1_MonitoringService.descriptor, Banklink_V1_ReconciliationService.descriptor,
      Banklink_V1_AdminService.descriptor,
    ].map(\.fullyQualifiedService)
    self.health = HealthStatus(services: Set(serviceNames))
    let reflection = ReflectionServiceV1(
      index: try ReflectionIndex.standard(
        services: serviceNames + [
          Grpc_Health_V1_Health.descriptor.fullyQualifiedService,
          Grpc_Reflection_V1_ServerReflection.descriptor.fullyQualifiedService,
          Grpc_Reflection_V1alpha_ServerReflection.descriptor.fullyQualifiedService,
        ]))

    let verifier = try ClientCertificateVerifier(caBundlePath: configuration.caPath, logger: logger, revocations: revocations)
    self.trust = verifier.trust
    if let crlPath = configuration.crlPath {
      try Self.loadRevocationList(crlPath, authorities: verifier.authorities, into: revocations, store: payments.store)
    }
    let limits = configuration.connections
    let admission = ConnectionAdmission(limits: limits, logger: logger)
    self.admission = admission

    // The daemon's own certificate is checked now; clients' on their calls.
    let expiry = CertificateExpiryWatch(store: payments.store, logger: logger, now: now)
    self.expiry = expiry
    let interceptor = AuthorizationInterceptor(
      table: .standard,
      principals: principals,
      identityPolicy: configuration.identityPolicy,
      logger: logger,
      expiry: expiry,
      revocations: revocations,
      peers: self.peers
    )
    let health = self.health
    let fastPath = configuration.unaryFastPath ? UnaryFastPath(
      methods: [
        .init(Grpc_Health_V1_Health.Method.Check.descriptor) { (request: Grpc_Health_V1_HealthCheckRequest, _) in
          try HealthServiceHandler.check(request, status: health)
        },
        .init(Banklink_V1_AdminService.Method.WhoAmI.descriptor) { (_: Banklink_V1_WhoAmIRequest, caller) in
          AdminServiceHandler.whoAmI(caller)
        },
        .init(Banklink_V1_AccountService.Method.GetBalance.descriptor) { (request: Banklink_V1_GetBalanceRequest, _) in
          // A refresh asks the bank (async): gRPC Swift serves it.
          request.refresh ? nil : try accounts.cachedBalance(request)
        },
        .init(Banklink_V1_PaymentService.Method.GetPayment.descriptor) { (request: Banklink_V1_GetPaymentRequest, _) in
          try paymentService.payment(request)
        },
      ],
      authorization: interceptor) : nil
    self.fastPath = fastPath
    // grpc-swift-nio-transport's Posix transport with our own listener (GatewayListener.swift):
    // each connection's client certificate is parsed once, at its handshake.
    // - Each handshake asks `certificate` for the pair in force, so a reload rotates it.
    // - Trust exactly the configured CA bundle (the names sent in the certificate request).
    //   BoringSSL's own store is not what decides: `verifier` checks every chain against `trust`
    //   with swift-certificates' RFC 5280 policy (path length constraints included), and a
    //   reload replaces `trust`.
    self.listenAddress = configuration.listen.description
    let grpcSwiftCalls = RequestIDInterceptor.CallCount()
    self.grpcSwiftCalls = grpcSwiftCalls
    let sslContext = try GatewayListenerFactory.sslContext(certificate: certificate, caPath: configuration.caPath)
    let allServices = services + [HealthServiceHandler(status: self.health), reflection, ReflectionServiceV1Alpha(v1: reflection)]
    let interceptors: [any ServerInterceptor] = [RequestIDInterceptor(counting: grpcSwiftCalls), MetricsInterceptor(), interceptor]
    switch configuration.transport {
    case .gateway:
      let transport = GatewayTransport(
        configuration: .init(
          host: configuration.listen.host, port: configuration.listen.port, sslContext: sslContext, verifier: verifier,
          peers: self.peers, admission: admission, limits: limits, fastPath: fastPath,
          connection: .init(maxIdleTime: .milliseconds(Int64(limits.idleTimeoutMilliseconds)))))
      self.serving = .gateway(transport, GRPCServer(transport: transport, services: allServices, interceptors: interceptors))
    case .grpcNIO:
      let listener = GatewayListenerFactory(
        host: configuration.listen.host, port: configuration.listen.port, sslContext: sslContext, verifier: verifier,
        peers: self.peers)
      let transport = HTTP2ServerTransport.Custom(
        listenerFactory: listener,
        config: {
          var config = HTTP2ServerTransport.Custom<GatewayListenerFactory>.Config.defaults
          config.http2.maxConcurrentStreams = Limits.maxConcurrentStreamsPerConnection
          // The transport's bound; RequestStreamGuard applies each method's own, smaller one.
          config.rpc.maxRequestPayloadSize = Limits.maxRequestMessageBytes
          config.connection.maxIdleTime = .milliseconds(Int64(limits.idleTimeoutMilliseconds))
          // Admit connections within the limits, close those that do not start HTTP/2 in time.
          config.channelDebuggingCallbacks.onAcceptTCPConnection = { channel in
            admission.install(on: channel)
          }
          // Refuse requests whose headers would trap inside grpc-swift (grpc-timeout: -1S) before
          // grpc-swift parses them, and bound the request bytes each stream buffers.
          // Then the unary fast path (UnaryFastPath.swift) answers the hot unary methods.
          config.channelDebuggingCallbacks.onAcceptHTTP2Stream = { channel in
            RequestStreamGuard.install(on: channel, limits: limits, fastPath: fastPath)
          }
          return config
        }()
      )
      self.serving = .grpcNIO(transport, GRPCServer(transport: transport, services: allServices, interceptors: interceptors))
    }
    self.observeOwnCertificate()
  }

  /// Raises a `certificate_expiring` alert when the daemon's own certificate is near its end.
  public func observeOwnCertificate() {
    let own = self.certificate.current.leaf
    self.expiry.observe(whose: "banklinkd (tls.certificate)", serial: own.serialNumber.hex, notAfter: own.notValidAfter)
  }

  /// Reads the CRL file, checks it was signed by a trusted CA and is not older than the list of
  /// that CA put in force before, and puts its serials in force. Throws (and changes nothing)
  /// for a file that cannot be read, parsed or verified, or is older.
  static func loadRevocationList(
    _ path: String, authorities: [Certificate], into revocations: CertificateRevocations, store: Store
  ) throws {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw CertificateRevocationList.Problem("cannot read the CRL file \(path)")
    }
    let list = try CertificateRevocationList(bytes: Array(data))
    try list.verify(issuedByOneOf: authorities)
    try CertificateRevocations.checkNotOlder(list, in: store)
    revocations.replaceListed(list.revokedSerials)
    try store.withWriteTransaction { try CertificateRevocations.recordInForce(list, txn: &$0) }
  }

  /// Reads and verifies a CRL file for a reload, without applying it (the caller applies it
  /// with everything else once all of the new configuration has validated). `authorities`: the
  /// CA bundle the reload puts in force (default: the one in force).
  public func readRevocationList(at path: String, authorities: [Certificate]? = nil) throws -> CertificateRevocationList {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw CertificateRevocationList.Problem("cannot read the CRL file \(path)")
    }
    let list = try CertificateRevocationList(bytes: Array(data))
    try list.verify(issuedByOneOf: authorities ?? self.trust.certificates)
    try CertificateRevocations.checkNotOlder(list, in: self.store)
    return list
  }

  /// The bound address, once listening (resolves port 0 to the real port).
  public var listeningAddress: GRPCNIOTransportCore.SocketAddress {
    get async throws {
      let bound: GRPCNIOTransportCore.SocketAddress?
      switch self.serving {
      case .gateway(let transport, _):
        let address = await transport.listeningAddress
        if case .v4(let v4)? = address, let port = address?.port {
          bound = .ipv4(host: v4.host, port: port)
        } else if case .v6(let v6)? = address, let port = address?.port {
          bound = .ipv6(host: v6.host, port: port)
        } else {
          bound = nil
        }
      case .grpcNIO(let transport, _):
        bound = await transport.listeningAddress
      }
      guard let address = bound else {
        throw RuntimeError(
          code: .serverIsStopped,
          message: "not listening on \(self.listenAddress): the address may be in use or not this host's, or the server stopped")
      }
      return address
    }
  }

  public func run() async throws {
    try await withGracefulShutdownHandler {
      switch self.serving {
      case .gateway(_, let server): try await server.serve()
      case .grpcNIO(_, let server): try await server.serve()
      }
    } onGracefulShutdown: {
      self.beginGracefulShutdown()
    }
  }

  /// Stops the server: refuses new connections, lets in-flight calls finish, and closes the
  /// connections still open when ``ConnectionLimits/drainTimeoutMilliseconds`` is up (a stream a
  /// client never ends must not hold the daemon past its documented stop time). Also for tests
  /// and embedders without a ServiceGroup.
  public func beginGracefulShutdown() {
    guard self.shutdownBegun.withLock({ begun in defer { begun = true }; return !begun }) else { return }
    self.logger.info("draining: refusing new connections, finishing in-flight calls")
    self.health.beginShutdown()
    // Alert streams end cleanly (their clients resume after the restart).
    self.alerts.shutDown()
    switch self.serving {
    case .gateway(_, let server): server.beginGracefulShutdown()
    case .grpcNIO(_, let server): server.beginGracefulShutdown()
    }
    let admission = self.admission
    let logger = self.logger
    let drain = Duration.milliseconds(self.configuration.connections.drainTimeoutMilliseconds)
    Task.detached {
      try? await Task.sleep(for: drain)
      let open = admission.openConnections
      if open > 0 {
        logger.warning("drain time is up: closing connections still open", metadata: ["connections": "\(open)"])
        admission.closeAll()
      }
    }
  }
}

/// A host and port to listen on: an IPv4 or IPv6 literal (DNS names are refused so that the
/// daemon never listens on an address it did not mean to).
public struct ListenAddress: Sendable, Hashable, CustomStringConvertible {
  public enum Family: Sendable, Hashable { case ipv4, ipv6 }

  public var host: String
  public var port: Int
  public var family: Family

  /// Parses `127.0.0.1:7443`, `[::1]:7443` or `localhost:7443` (= 127.0.0.1).
  public init?(_ text: String) {
    guard var parsed = HostPort(text) else { return nil }
    if parsed.host == "localhost" && !parsed.bracketed { parsed.host = "127.0.0.1" }
    if parsed.isIPv4Literal && !parsed.bracketed {
      self.family = .ipv4
    } else if parsed.isIPv6Literal {
      self.family = .ipv6
    } else {
      return nil
    }
    self.host = parsed.host
    self.port = parsed.port
  }

  public var description: String {
    self.family == .ipv6 ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)"
  }
}

extension GatewayServer {
  /// Stores a statement file that arrived through the connector's inbox, as `ImportStatement`
  /// does (deduplicated by the file's SHA-256), and reconciles what it brought.
  public func importBankStatement(path: String, sha256: String, bytes: Int64, fileName: String) async throws -> StatementImportOutcome {
    let outcome = try await self.reconciliation.statements.importFile(
      at: path, sha256: sha256, bytes: bytes, fileName: fileName, declared: nil, importedBy: "connector:files")
    // A file already stored is one whose import was cut short by a crash before the inbox
    // service recorded it, so its reconciliation may never have run: it runs again (a run over
    // entries already matched changes nothing).
    _ = await self.reconciliation.reconcileAfterImport(outcome, evenIfDuplicate: true)
    return outcome
  }

  /// The ids of the accounts in the cache (account sync stores them from the connector).
  public func cachedAccountIDs() throws -> Set<String> {
    Set(try self.reconciliation.statements.cache.accounts().map(\.id))
  }
}

extension GatewayServer {
  /// An account in the cache and when its balance was last heard from the bank.
  public struct AccountFreshness: Sendable {
    public var accountID: String
    public var bankBIC: String
    /// Nil until the first balance arrived.
    public var syncedAt: Instant?
  }

  /// Every cached account with the time of its last balance sync (the sync lag gauge).
  public func accountFreshness() throws -> [AccountFreshness] {
    let cache = self.reconciliation.statements.cache
    return try cache.accounts().map { account in
      AccountFreshness(accountID: account.id, bankBIC: account.bankBIC, syncedAt: try cache.balance(account.id)?.syncedAt)
    }
  }
}
