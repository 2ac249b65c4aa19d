import BankLinkBanks
import BankLinkClient
import BankLinkCore
import BankLinkServer
import BankLinkStore
import Crypto
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging

/// A real ``GatewayServer`` on 127.0.0.1 (or `[::1]`), port 0, over mutual TLS with a minted PKI, a store in
/// a temporary directory and the embedded bank simulator (with its own store beside it).
public struct TestServer: Sendable {
  public let pki: TestPKI
  public let server: GatewayServer
  public let port: Int
  /// `127.0.0.1`, or `[::1]` for a server configured to listen on IPv6.
  public var host = "127.0.0.1"
  public let simulator: BankSimulator
  public let cache: AccountCache
  /// Not running in the background: tests call `syncOnce()` when they want the cache to move.
  public let sync: AccountSyncService
  public let payments: PaymentLedger
  /// Not running in the background: tests call `submitPending()` / `pollStatusReports()`.
  public let submitter: PaymentSubmitter

  public var address: String { "\(self.host):\(self.port)" }

  /// A client configuration for `identity` against this server.
  public func client(_ identity: ClientIdentityFiles) -> ClientConfiguration {
    self.pki.clientConfiguration(address: self.address, identity: identity)
  }
}

/// Starts a server with `principals`, syncs the cache once from the simulator (unless
/// `initialSync` is false), runs `body`, then shuts the server down gracefully.
public func withTestServer<Result: Sendable>(
  principals: [Principal],
  historyDays: Int = 3,
  initialSync: Bool = true,
  approvalThresholdMajorUnits: Int64 = 1_000_000,
  mapSizeMiB: Int = 64,
  configure: @Sendable (inout GatewayServer.Configuration) -> Void = { _ in },
  _ body: @Sendable (TestServer) async throws -> Result
) async throws -> Result {
  try await withTemporaryDirectory { directory in
    let pki = try TestPKI(directory: directory)
    let store = try Store(configuration: .init(directory: directory.appending("data"), mapSizeMiB: mapSizeMiB))
    var logger = Logger(label: "banklink-test")
    logger.logLevel = .error
    let simulator = try BankSimulator(
      configuration: .init(directory: directory.appending("simulator"), historyDays: historyDays, mapSizeMiB: 64),
      clock: WallClock.now
    )
    let cache = AccountCache(store: store)
    let sync = AccountSyncService(
      connector: simulator, cache: cache, configuration: .init(), logger: logger, now: WallClock.now)
    if initialSync {
      try await sync.syncOnce()
    }
    let payments = PaymentLedger(
      writer: GroupCommitWriter(store: store),
      configuration: .init(approvalThresholdMajorUnits: approvalThresholdMajorUnits),
      now: WallClock.now)
    var configuration = GatewayServer.Configuration(
      listen: ListenAddress("127.0.0.1:0")!,
      caPath: pki.caPath,
      certificatePath: pki.serverCertificatePath,
      keyPath: pki.serverKeyPath
    )
    configure(&configuration)
    let server = try GatewayServer(
      configuration: configuration,
      principals: PrincipalDirectory(PrincipalTable(principals)),
      accountCache: cache,
      connector: simulator,
      payments: payments,
      otpVault: OTPVault(key: SymmetricKey(size: .bits256)),
      logger: logger
    )
    return try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await server.run() }
      defer { server.beginGracefulShutdown() }
      let address = try await server.listeningAddress
      guard let port = address.ipv4?.port ?? address.ipv6?.port else {
        throw RPCError(code: .internalError, message: "test server bound to \(address), not IPv4 or IPv6")
      }
      var testServer = TestServer(
        pki: pki, server: server, port: port, simulator: simulator, cache: cache, sync: sync, payments: payments,
        submitter: PaymentSubmitter(ledger: payments, connector: simulator, intervalMilliseconds: 100, logger: logger))
      if address.ipv6 != nil { testServer.host = "[::1]" }
      let result = try await body(testServer)
      server.beginGracefulShutdown()
      try await group.waitForAll()
      return result
    }
  }
}
