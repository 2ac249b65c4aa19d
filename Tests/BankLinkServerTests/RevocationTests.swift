import BankLinkClient
import BankLinkCore
import BankLinkJournal
import BankLinkPKI
import BankLinkProto
@testable import BankLinkServer
import BankLinkStore
import BankLinkTestSupport
import Foundation
import GRPCCore
import SwiftASN1
import SwiftProtobuf
import Testing
import X509

/// Certificate revocation, from the attacker's side too: a certificate revoked (by serial,
/// fingerprint, identity or CRL) or expired is refused on its **next call on a connection that is
/// already open**, and at every handshake after.
@Suite("Certificate revocation")
struct RevocationTests {
  static let principals = [
    Principal(identity: "admin", roles: [.admin]),
    Principal(identity: "admin2", roles: [.admin]),
    Principal(identity: "erp", roles: [.viewer]),
  ]

  static var options: CallOptions {
    var options = CallOptions.defaults
    options.timeout = .seconds(10)
    options.waitForReady = false
    return options
  }

  static func whoAmI(_ client: GRPCClient<some ClientTransport>) async throws -> Banklink_V1_WhoAmIResponse {
    try await Banklink_V1_AdminService.Client(wrapping: client).whoAmI(.init(), options: Self.options)
  }

  static func revoke(_ server: TestServer, as who: String = "admin", _ request: Banklink_V1_RevokeCertificateRequest) async throws
    -> Banklink_V1_RevokeCertificateResponse
  {
    try await withBankLinkClient(server.client(try server.pki.client(commonName: who, file: "\(who)-revoker"))) { client in
      try await Banklink_V1_AdminService.Client(wrapping: client).revokeCertificate(request, options: Self.options)
    }
  }

  static func certificate(_ files: ClientIdentityFiles) throws -> Certificate {
    try Certificate(pemEncoded: String(contentsOfFile: files.certificatePath, encoding: .utf8))
  }

  /// Opens a connection as `files`, makes a call, runs `between`, and returns what the next call
  /// on the same connection gets.
  static func secondCall(
    _ server: TestServer, _ files: ClientIdentityFiles, between: @Sendable () async throws -> Void
  ) async throws -> RPCError? {
    try await withBankLinkClient(server.client(files)) { client in
      _ = try await Self.whoAmI(client)
      try await between()
      do {
        _ = try await Self.whoAmI(client)
        return nil
      } catch let error as RPCError {
        return error
      }
    }
  }

  @Test("by serial number: refused on the open connection's next call and at a new handshake; another certificate of the identity still works")
  func bySerial() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let erp = try server.pki.client(commonName: "erp", file: "erp-1")
      let serial = try Self.certificate(erp).serialNumber.hex
      let refused = try await Self.secondCall(server, erp) {
        // As `openssl x509 -text` prints it: upper case with colons.
        let colons = stride(from: 0, to: serial.count, by: 2).map { String(Array(serial)[$0..<$0 + 2]) }.joined(separator: ":").uppercased()
        let response = try await Self.revoke(server, .with {
          $0.serialNumber = colons
          $0.reason = "laptop stolen"
        })
        #expect(!response.alreadyRevoked && response.receipt.journalSequence > 0)
      }
      #expect(refused?.code == .unauthenticated, "\(String(describing: refused))")
      #expect(refused?.message.contains("revoked") == true)
      let handshake = await #expect(throws: RPCError.self) {
        try await withBankLinkClient(server.client(erp)) { try await Self.whoAmI($0) }
      }
      #expect(handshake?.code == .unavailable)
      // The identity itself is not revoked: a new certificate for it works.
      let renewed = try server.pki.client(commonName: "erp", file: "erp-2")
      #expect(try await withBankLinkClient(server.client(renewed)) { try await Self.whoAmI($0) }.identity == "erp")
      // Again: nothing new journaled.
      let again = try await Self.revoke(server, .with {
        $0.serialNumber = serial
        $0.reason = "again"
      })
      #expect(again.alreadyRevoked && !again.hasReceipt)
      // Kept: a restart loads it.
      let reloaded = CertificateRevocations()
      try reloaded.load(from: server.payments.writer.store)
      #expect(reloaded.refusal(for: try Self.certificate(erp), identity: "erp")?.contains("laptop stolen") == true)
    }
  }

  @Test("by SHA-256 fingerprint and by identity")
  func byFingerprintAndIdentity() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let erp = try server.pki.client(commonName: "erp", file: "erp-1")
      let fingerprint = try #require(CertificateRevocations.fingerprint(try Self.certificate(erp)))
      let refused = try await Self.secondCall(server, erp) {
        _ = try await Self.revoke(server, .with {
          $0.sha256Fingerprint = fingerprint.uppercased()
          $0.reason = "key leaked"
        })
      }
      #expect(refused?.code == .unauthenticated)

      let other = try server.pki.client(commonName: "erp", file: "erp-2")
      let byIdentity = try await Self.secondCall(server, other) {
        let response = try await Self.revoke(server, .with {
          $0.identity = "erp"
          $0.reason = "vendor contract ended"
        })
        #expect(response.principal.identity == "erp" && response.principal.revoked)
      }
      #expect(byIdentity?.code == .unauthenticated)
      #expect(byIdentity?.message.contains("identity 'erp'") == true)
      let third = try server.pki.client(commonName: "erp", file: "erp-3")
      let error = await #expect(throws: RPCError.self) { try await withBankLinkClient(server.client(third)) { try await Self.whoAmI($0) } }
      #expect(error?.code == .unauthenticated)
      let listed = try await withBankLinkClient(server.client(try server.pki.client(commonName: "admin"))) { client in
        try await Banklink_V1_AdminService.Client(wrapping: client).listPrincipals(.init(), options: Self.options)
      }
      #expect(listed.principals.first { $0.identity == "erp" }?.revoked == true)
      #expect(listed.principals.first { $0.identity == "admin" }?.revoked == false)
    }
  }

  @Test("refused requests: wrong role, no target, bad serial or fingerprint, no reason, one's own identity")
  func refusals() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let wrongRole = await #expect(throws: RPCError.self) {
        try await Self.revoke(server, as: "erp", .with {
          $0.identity = "admin"
          $0.reason = "takeover"
        })
      }
      #expect(wrongRole?.code == .permissionDenied)
      let cases: [(Banklink_V1_RevokeCertificateRequest, String)] = [
        (.with { $0.reason = "x" }, "target"),
        (.with { $0.serialNumber = "zz-not-hex"; $0.reason = "x" }, "serial_number"),
        (.with { $0.serialNumber = String(repeating: "a", count: 41); $0.reason = "x" }, "serial_number"),
        (.with { $0.sha256Fingerprint = "abcd"; $0.reason = "x" }, "sha256_fingerprint"),
        (.with { $0.serialNumber = "01" }, "reason"),
        (.with { $0.serialNumber = "01"; $0.reason = String(repeating: "r", count: Limits.maxRevocationReasonBytes + 1) }, "reason"),
        (.with { $0.identity = "admin"; $0.reason = "x" }, "identity"),
      ]
      for (request, field) in cases {
        let error = await #expect(throws: RPCError.self) { try await Self.revoke(server, request) }
        #expect(error?.code == .invalidArgument && error?.message.contains(field) == true, "\(field): \(String(describing: error))")
      }
      // Nothing was stored by the refusals.
      #expect(server.server.revocations.counts.stored == 0)
    }
  }

  @Test("a certificate that expires while its connection is open is refused on its next call")
  func expiryOnOpenConnection() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let shortLived = try server.pki.client(commonName: "erp", notValidAfter: Date().addingTimeInterval(2), file: "erp-short")
      let refused = try await Self.secondCall(server, shortLived) {
        try await Task.sleep(for: .milliseconds(2_500))
      }
      #expect(refused?.code == .unauthenticated)
      #expect(refused?.message.contains("expired") == true, "\(String(describing: refused))")
    }
  }

  @Test("a CRL from the trusted CA revokes its serials, also on open connections; one from another CA, or garbage, changes nothing")
  func revocationList() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let erp = try server.pki.client(commonName: "erp", file: "erp-1")
      let kept = try server.pki.client(commonName: "erp", file: "erp-2")
      let crlPath = server.pki.directory.appending("ca.crl")
      let stranger = try CertificateAuthority.generate(commonName: "Stranger CA")
      let forged = try stranger.revocationList(revoking: [try Self.certificate(kept).serialNumber])
      try Data(forged).write(to: URL(fileURLWithPath: crlPath))
      #expect(throws: CertificateRevocationList.Problem.self) { try server.server.readRevocationList(at: crlPath) }
      // The same name as the trusted CA, another key: the signature gives it away.
      let impostor = try CertificateAuthority.generate(commonName: "BankLink Test CA")
      try Data(try impostor.revocationList(revoking: [try Self.certificate(kept).serialNumber])).write(to: URL(fileURLWithPath: crlPath))
      let signature = #expect(throws: CertificateRevocationList.Problem.self) { try server.server.readRevocationList(at: crlPath) }
      #expect(signature?.description.contains("signature does not verify") == true, "\(String(describing: signature))")
      try Data("not a CRL".utf8).write(to: URL(fileURLWithPath: crlPath))
      #expect(throws: CertificateRevocationList.Problem.self) { try server.server.readRevocationList(at: crlPath) }

      let refused = try await Self.secondCall(server, erp) {
        let der = try server.pki.authority.revocationList(revoking: [try Self.certificate(erp).serialNumber])
        // As `openssl ca -gencrl` writes it: PEM.
        let pem = PEMDocument(type: "X509 CRL", derBytes: der).pemString
        try Data(pem.utf8).write(to: URL(fileURLWithPath: crlPath))
        let list = try server.server.readRevocationList(at: crlPath)
        #expect(list.revokedSerials == [try Self.certificate(erp).serialNumber.hex])
        server.server.revocations.replaceListed(list.revokedSerials)
      }
      #expect(refused?.code == .unauthenticated)
      #expect(refused?.message.contains("CRL") == true)
      #expect(try await withBankLinkClient(server.client(kept)) { try await Self.whoAmI($0) }.identity == "erp")
    }
  }

  @Test("a CRL older than the one of its CA put in force is refused, at a reload and at a start: a rollback would un-revoke")
  func olderRevocationListRefused() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let erp = try server.pki.client(commonName: "erp", file: "erp-old-crl")
      let serial = try Self.certificate(erp).serialNumber
      let crlPath = server.pki.directory.appending("ca.crl")
      let now = Date()
      let store = server.payments.writer.store
      // Issued now, revoking the certificate: put in force as a start puts it.
      try Data(try server.pki.authority.revocationList(revoking: [serial], at: now)).write(to: URL(fileURLWithPath: crlPath))
      try GatewayServer.loadRevocationList(
        crlPath, authorities: server.server.trust.certificates, into: server.server.revocations, store: store)
      #expect(server.server.revocations.counts.listed == 1)
      // The list of an hour before (a configuration rolled back), empty: refused by a reload's
      // read and by a start, and nothing changes.
      try Data(try server.pki.authority.revocationList(revoking: [], at: now.addingTimeInterval(-3_600))).write(to: URL(fileURLWithPath: crlPath))
      let reload = #expect(throws: CertificateRevocationList.Problem.self) { try server.server.readRevocationList(at: crlPath) }
      #expect(reload?.description.contains("un-revoke") == true, "\(String(describing: reload))")
      #expect(throws: CertificateRevocationList.Problem.self) {
        try GatewayServer.loadRevocationList(
          crlPath, authorities: server.server.trust.certificates, into: server.server.revocations, store: store)
      }
      #expect(server.server.revocations.counts.listed == 1)
      // A newer list (the certificate reinstated by the CA) is taken.
      try Data(try server.pki.authority.revocationList(revoking: [], at: now.addingTimeInterval(60))).write(to: URL(fileURLWithPath: crlPath))
      try GatewayServer.loadRevocationList(
        crlPath, authorities: server.server.trust.certificates, into: server.server.revocations, store: store)
      #expect(server.server.revocations.counts.listed == 0)
    }
  }

  @Test("a revoked admin is no admin: the last one not revoked cannot give up admin, and two admins cannot revoke each other")
  func revokedAdminsDoNotCount() async throws {
    try await withTestServer(principals: Self.principals) { server in
      _ = try await Self.revoke(server, .with { $0.identity = "admin2"; $0.reason = "left the company" })
      // admin is now the only admin whose certificates work: giving up admin is refused.
      let refused = await #expect(throws: RPCError.self) {
        try await withBankLinkClient(server.client(try server.pki.client(commonName: "admin", file: "admin-revoker"))) { client in
          _ = try await Banklink_V1_AdminService.Client(wrapping: client).setPrincipalRoles(
            .with { $0.identity = "admin"; $0.roles = [] }, options: Self.options)
        }
      }
      #expect(refused?.code == .failedPrecondition && refused?.message.contains("not revoked") == true, "\(String(describing: refused))")
      // The other order of a race of two admins revoking each other: the second is refused.
      let registry = PrincipalRegistry(writer: server.payments.writer, directory: server.server.principals, now: WallClock.now)
      await #expect(throws: CertificateRevocations.LastAdmin(identity: "admin")) {
        _ = try await server.server.revocations.revoke(
          .identity("admin"), reason: "retaliation", by: "admin2", writer: server.payments.writer, registry: registry, at: WallClock.now())
      }
      #expect(try server.payments.writer.store.withReadTransaction { try $0.get(Array("identity/admin".utf8), in: .revocations) } == nil)
    }
  }

  @Test("a revocation found stored is put in force before the call answers 'already revoked'")
  func alreadyRevokedIsInForce() async throws {
    try await withTemporaryDirectory { directory in
      let store = try Store(configuration: .init(directory: directory.appending("data"), mapSizeMiB: 16))
      let writer = GroupCommitWriter(store: store)
      let now = Instant(millisecondsSinceEpoch: 1_796_342_400_000)
      // A first RevokeCertificate has committed its record but not yet put it in force (the
      // window between its commit and its return): modelled by a second instance that shares
      // the store, as the first call's commit leaves it.
      let first = CertificateRevocations()
      _ = try await first.revoke(.identity("erp"), reason: "laptop stolen", by: "admin", writer: writer, at: now)
      let second = CertificateRevocations()
      #expect(!second.isRevoked(identity: "erp"))
      let (receipt, already) = try await second.revoke(.identity("erp"), reason: "again", by: "admin2", writer: writer, at: now)
      #expect(already && receipt == nil)
      #expect(second.isRevoked(identity: "erp"), "answered 'already revoked' while calls would still pass")
      #expect(second.reason(for: .identity("erp")) == "laptop stolen")
      // The first record's reason is the one in force, and nothing new was journaled.
      let reloaded = CertificateRevocations()
      try reloaded.load(from: store)
      #expect(reloaded.isRevoked(identity: "erp"))
      let journaled = try store.withReadTransaction { txn in
        try AuditJournal.entries(about: "certificates/identity/erp", limit: 10, in: txn)
      }
      #expect(journaled.count == 1)
    }
  }
}
