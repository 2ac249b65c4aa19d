import BankLinkClient
import BankLinkCore
import BankLinkServer
import BankLinkStore
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging

/// A real ``GatewayServer`` on 127.0.0.1, port 0, over mutual TLS with a minted PKI and a
/// store in a temporary directory.
public struct TestServer: Sendable {
  public let pki: TestPKI
  public let server: GatewayServer
  public let port: Int

  public var address: String { "127.0.0.1:\(self.port)" }

  /// A client configuration for `identity` against this server.
  public func client(_ identity: ClientIdentityFiles) -> ClientConfiguration {
    self.pki.clientConfiguration(address: self.address, identity: identity)
  }
}

/// Starts a server with `principals`, runs `body`, then shuts the server down gracefully.
public func withTestServer<Result: Sendable>(
  principals: [Principal],
  _ body: @Sendable (TestServer) async throws -> Result
) async throws -> Result {
  try await withTemporaryDirectory { directory in
    let pki = try TestPKI(directory: directory)
    let store = try Store(configuration: .init(directory: directory.appending("data"), mapSizeMiB: 16))
    var logger = Logger(label: "banklink-test")
    logger.logLevel = .error
    let server = GatewayServer(
      configuration: .init(
        listen: ListenAddress("127.0.0.1:0")!,
        caPath: pki.caPath,
        certificatePath: pki.serverCertificatePath,
        keyPath: pki.serverKeyPath
      ),
      principals: PrincipalDirectory(PrincipalTable(principals)),
      store: store,
      logger: logger
    )
    return try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await server.run() }
      defer { server.beginGracefulShutdown() }
      let address = try await server.listeningAddress
      guard let port = address.ipv4?.port else {
        throw RPCError(code: .internalError, message: "test server bound to \(address), not IPv4")
      }
      let result = try await body(TestServer(pki: pki, server: server, port: port))
      server.beginGracefulShutdown()
      try await group.waitForAll()
      return result
    }
  }
}
