import BankLinkClient
import BankLinkCore
import BankLinkPKI
import BankLinkProto
import BankLinkServer
import BankLinkTestSupport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import SwiftProtobuf
import Testing

/// End-to-end over real mutual TLS on an ephemeral port, certificates minted in the test.
@Suite("Mutual TLS and authorization, end to end")
struct MutualTLSTests {
  static let principals = [
    Principal(identity: "admin", roles: [.admin]),
    Principal(identity: "viewer", roles: [.viewer]),
    Principal(identity: "erp", roles: [.payer]),
    Principal(identity: "nobody-roles", roles: []),
    Principal(identity: "spiffe://corp.example/treasury", roles: [.auditor]),
  ]

  /// Calls WhoAmI; every failure surfaces as the RPCError the client sees.
  static func whoAmI(_ configuration: ClientConfiguration) async throws -> Banklink_V1_WhoAmIResponse {
    try await withBankLinkClient(configuration) { client in
      try await Banklink_V1_AdminService.Client(wrapping: client).whoAmI(
        .init(),
        options: Self.failFast
      )
    }
  }

  /// A refused handshake must fail the call promptly, not wait for the connection to become
  /// ready.
  static var failFast: CallOptions {
    var options = CallOptions.defaults
    options.timeout = .seconds(10)
    options.waitForReady = false
    return options
  }

  @Test("a known identity reaches WhoAmI and sees its roles")
  func knownIdentity() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let admin = try server.pki.client(commonName: "admin")
      let response = try await Self.whoAmI(server.client(admin))
      #expect(response.identity == "admin")
      #expect(response.identitySource == "common_name")
      #expect(response.roles == [.admin])
      #expect(!response.certificateSerial.isEmpty)
    }
  }

  @Test("on IPv6 too, each connection's calls carry that connection's certificate, never another's")
  func identityPerConnection() async throws {
    try await withTestServer(principals: Self.principals, configure: { $0.listen = ListenAddress("[::1]:0")! }) { server in
      #expect(server.address.hasPrefix("[::1]:"))
      let identities = ["admin", "viewer", "erp"]
      let files = try identities.map { try server.pki.client(commonName: $0) }
      // Three connections at once, several calls each, interleaved.
      let seen = try await withThrowingTaskGroup(of: (String, [String]).self) { group in
        for (identity, file) in zip(identities, files) {
          group.addTask {
            let answers = try await withBankLinkClient(server.client(file)) { client in
              var answers: [String] = []
              for _ in 0..<5 {
                answers.append(try await Banklink_V1_AdminService.Client(wrapping: client).whoAmI(.init(), options: Self.failFast).identity)
              }
              return answers
            }
            return (identity, answers)
          }
        }
        return try await group.reduce(into: [String: [String]]()) { $0[$1.0] = $1.1 }
      }
      for identity in identities { #expect(seen[identity] == Array(repeating: identity, count: 5), "\(seen)") }
    }
  }

  @Test("the URI SAN is the identity when the certificate has one")
  func uriSANWins() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let files = try server.pki.client(commonName: "admin", uri: "spiffe://corp.example/treasury", file: "treasury")
      let response = try await Self.whoAmI(server.client(files))
      #expect(response.identity == "spiffe://corp.example/treasury")
      #expect(response.identitySource == "uri_san")
      #expect(response.roles == [.auditor])
    }
  }

  @Test("a client without a certificate is refused during the handshake")
  func noClientCertificate() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let transport = try HTTP2ClientTransport.Posix(
        target: .ipv4(address: "127.0.0.1", port: server.port),
        transportSecurity: .tls { tls in
          tls.trustRoots = .certificates([.file(path: server.pki.caPath, format: .pem)])
        }
      )
      let error = await #expect(throws: RPCError.self) {
        try await withGRPCClient(transport: transport) { client in
          try await Banklink_V1_AdminService.Client(wrapping: client).whoAmI(.init(), options: Self.failFast)
        }
      }
      #expect(error?.code == .unavailable)
    }
  }

  @Test("a certificate from another CA is refused during the handshake")
  func otherCertificateAuthority() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let rogue = try CertificateAuthority.generate(commonName: "Rogue CA")
      // Same common name as a real principal: only the chain differs.
      let files = try server.pki.client(commonName: "admin", file: "rogue-admin", authority: rogue)
      let error = await #expect(throws: RPCError.self) { try await Self.whoAmI(server.client(files)) }
      #expect(error?.code == .unavailable)
    }
  }

  @Test("an expired certificate is refused during the handshake")
  func expiredCertificate() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let files = try server.pki.client(
        commonName: "admin",
        notValidBefore: Date().addingTimeInterval(-10 * 86400),
        notValidAfter: Date().addingTimeInterval(-86400),
        file: "expired-admin"
      )
      let error = await #expect(throws: RPCError.self) { try await Self.whoAmI(server.client(files)) }
      #expect(error?.code == .unavailable)
    }
  }

  @Test("an unknown identity with a valid certificate gets PERMISSION_DENIED")
  func unknownIdentity() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let files = try server.pki.client(commonName: "mallory")
      let error = await #expect(throws: RPCError.self) { try await Self.whoAmI(server.client(files)) }
      #expect(error?.code == .permissionDenied)
      #expect(error?.message.contains("'mallory' is not a known principal") == true)
    }
  }

  @Test("a known identity with the wrong role gets PERMISSION_DENIED naming the role")
  func wrongRole() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let viewer = try server.pki.client(commonName: "viewer")
      let error = await #expect(throws: RPCError.self) {
        try await withBankLinkClient(server.client(viewer)) { client in
          try await Banklink_V1_AdminService.Client(wrapping: client).putRuleSet(.init(), options: Self.failFast)
        }
      }
      #expect(error?.code == .permissionDenied)
      #expect(error?.message.contains("requires role admin") == true)
      #expect(error?.message.contains("'viewer' holds roles viewer") == true)
    }
  }

  @Test("a principal with no roles is refused a role-gated method")
  func principalWithoutRoles() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let files = try server.pki.client(commonName: "nobody-roles")
      let error = await #expect(throws: RPCError.self) {
        try await withBankLinkClient(server.client(files)) { client in
          try await Banklink_V1_AccountService.Client(wrapping: client).listAccounts(.init(), options: Self.failFast)
        }
      }
      #expect(error?.code == .permissionDenied)
      #expect(error?.message.contains("holds no roles") == true)
    }
  }

  @Test("the right role passes authorization and reaches the handler, which names the bad field")
  func rightRoleReachesHandler() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let admin = try server.pki.client(commonName: "admin")
      let error = await #expect(throws: RPCError.self) {
        try await withBankLinkClient(server.client(admin)) { client in
          try await Banklink_V1_AdminService.Client(wrapping: client).revokeCertificate(.init(), options: Self.failFast)
        }
      }
      #expect(error?.code == .invalidArgument)
      #expect(error?.message.contains("target") == true, "\(String(describing: error))")
    }
  }

  @Test("grpc.health.v1 Check answers SERVING and Watch ends with NOT_SERVING on shutdown")
  func health() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let viewer = try server.pki.client(commonName: "viewer")
      try await withBankLinkClient(server.client(viewer)) { client in
        let health = Grpc_Health_V1_Health.Client(wrapping: client)
        let overall = try await health.check(.init(), options: Self.failFast)
        #expect(overall.status == .serving)
        let service = try await health.check(.with { $0.service = "banklink.v1.AccountService" }, options: Self.failFast)
        #expect(service.status == .serving)
        let unknown = await #expect(throws: RPCError.self) {
          try await health.check(.with { $0.service = "no.such.Service" }, options: Self.failFast)
        }
        #expect(unknown?.code == .notFound)

        // Bounded: a clean-clone CI run once waited here for minutes (the stream's end never
        // reached the client after the shutdown began); with a deadline that is a failure that
        // names this test, not a CI run that times out.
        var watchOptions = CallOptions.defaults
        watchOptions.timeout = .seconds(30)
        let statuses = try await health.watch(.init(), options: watchOptions) { response in
          var seen: [Grpc_Health_V1_HealthCheckResponse.ServingStatus] = []
          for try await message in response.messages {
            seen.append(message.status)
            if seen.count == 1 { server.server.beginGracefulShutdown() }
          }
          return seen
        }
        #expect(statuses == [.serving, .notServing])
      }
    }
  }

  @Test("a request over the message-size limit is refused; one just under it reaches the handler")
  func oversizedRequest() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let admin = try server.pki.client(commonName: "admin")
      func importStatement(bytes: Int) async throws {
        try await withBankLinkClient(server.client(admin)) { client in
          _ = try await Banklink_V1_ReconciliationService.Client(wrapping: client).importStatement(
            options: Self.failFast,
            requestProducer: { writer in try await writer.write(.with { $0.content = Data(count: bytes) }) }
          )
        }
      }
      // Under the transport's limit: authorized and handled (the handler refuses a chunk over
      // its own, smaller limit, naming the field).
      let under = await #expect(throws: RPCError.self) {
        try await importStatement(bytes: Limits.maxRequestMessageBytes - 64)
      }
      #expect(under?.code == .invalidArgument && under?.message.hasPrefix("content:") == true, "\(String(describing: under))")

      // Over the limit: the transport refuses the message before any handler. grpc-swift-nio-
      // transport 2.9 resets the stream (UNAVAILABLE on the client) rather than answering
      // RESOURCE_EXHAUSTED; either way the handler is never reached.
      let over = await #expect(throws: RPCError.self) {
        try await importStatement(bytes: Limits.maxRequestMessageBytes + 1)
      }
      #expect([.resourceExhausted, .unavailable].contains(over?.code), "\(String(describing: over))")
    }
  }
}
