import BankLinkCore
import GRPCCore
import GRPCNIOTransportHTTP2

/// How a client reaches banklinkd: address and the mutual-TLS files.
///
/// Defaults are the development PKI and `127.0.0.1:7443`; environment variables
/// (``EnvironmentKey``) override the defaults and flags override both.
public struct ClientConfiguration: Sendable, Hashable {
  /// `HOST:PORT`; HOST is an IPv4 literal, `[IPv6]` literal or a DNS name.
  public var address: String
  /// PEM bundle of the CA that signed the daemon's certificate. Nothing else is trusted.
  public var caPath: String
  /// The client certificate (PEM) that identifies the caller, and its private key.
  public var certificatePath: String
  public var keyPath: String

  public init(address: String, caPath: String, certificatePath: String, keyPath: String) {
    self.address = address
    self.caPath = caPath
    self.certificatePath = certificatePath
    self.keyPath = keyPath
  }

  public enum EnvironmentKey {
    public static let address = "BANKLINK_ADDRESS"
    public static let ca = "BANKLINK_CA"
    public static let certificate = "BANKLINK_CERT"
    public static let key = "BANKLINK_KEY"
  }

  public static let defaultAddress = "127.0.0.1:7443"

  /// The development defaults (as principal `admin`), overridden by the environment.
  public static func defaults(environment: [String: String]) -> ClientConfiguration {
    ClientConfiguration(
      address: environment[EnvironmentKey.address] ?? defaultAddress,
      caPath: environment[EnvironmentKey.ca] ?? "certs/dev/ca.pem",
      certificatePath: environment[EnvironmentKey.certificate] ?? "certs/dev/admin.pem",
      keyPath: environment[EnvironmentKey.key] ?? "certs/dev/admin.key"
    )
  }

  /// Parses the address into a resolvable target.
  public func target() throws -> any ResolvableTarget {
    guard let parsed = HostPort(self.address), parsed.port > 0 else {
      throw RPCError(code: .invalidArgument, message: "address '\(self.address)' is not HOST:PORT")
    }
    if parsed.bracketed { return .ipv6(address: parsed.host, port: parsed.port) }
    if parsed.isIPv4Literal { return .ipv4(address: parsed.host, port: parsed.port) }
    return .dns(host: parsed.host, port: parsed.port)
  }
}

extension ClientConfiguration {
  /// A mutual-TLS HTTP/2 transport to the daemon: presents the client certificate and trusts
  /// exactly the configured CA (not the system roots), verifying the daemon's name or address.
  public func makeTransport() throws -> HTTP2ClientTransport.Posix {
    try HTTP2ClientTransport.Posix(
      target: try self.target(),
      transportSecurity: .mTLS(
        certificateChain: [.file(path: self.certificatePath, format: .pem)],
        privateKey: .file(path: self.keyPath, format: .pem)
      ) { tls in
        tls.trustRoots = .certificates([.file(path: self.caPath, format: .pem)])
        tls.serverCertificateVerification = .fullVerification
      }
    )
  }
}


/// Opens a mutual-TLS gRPC client to banklinkd for the duration of `body`.
///
/// ```swift
/// let me = try await withBankLinkClient(.defaults(environment: env)) { client in
///   try await Banklink_V1_AdminService.Client(wrapping: client).whoAmI(.init())
/// }
/// ```
public func withBankLinkClient<Result: Sendable>(
  _ configuration: ClientConfiguration,
  _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Result
) async throws -> Result {
  return try await withGRPCClient(transport: try configuration.makeTransport()) { client in
    try await body(client)
  }
}

/// Opens `count` independent connections (one gRPC client each) for the duration of `body`:
/// load generation spreads calls over several HTTP/2 connections as real callers would.
public func withBankLinkClients<Result: Sendable>(
  _ configuration: ClientConfiguration,
  count: Int,
  _ body: @Sendable ([GRPCClient<HTTP2ClientTransport.Posix>]) async throws -> Result
) async throws -> Result {
  var clients: [GRPCClient<HTTP2ClientTransport.Posix>] = []
  for _ in 0..<max(1, count) {
    clients.append(GRPCClient(transport: try configuration.makeTransport()))
  }
  let all = clients
  return try await withThrowingTaskGroup(of: Void.self) { group in
    for client in all {
      group.addTask {
        do {
          try await client.runConnections()
        } catch let error as RuntimeError where error.code == .clientIsStopped {
          // `body` finished before this task ran: the client was shut down unused.
        }
      }
    }
    defer { for client in all { client.beginGracefulShutdown() } }
    let result = try await body(all)
    for client in all { client.beginGracefulShutdown() }
    try await group.waitForAll()
    return result
  }
}
