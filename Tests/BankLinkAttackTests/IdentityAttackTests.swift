import BankLinkClient
import BankLinkCore
import BankLinkPKI
import BankLinkProto
import BankLinkServer
import BankLinkTestSupport
import Crypto
import Foundation
import GRPCCore
import SwiftASN1
import Testing
import X509

/// Certificates the CA signed (or a CA it signed) that try to pass for someone else. Each must
/// be refused; none may reach another principal's roles.
@Suite("Attacks with confusable identities")
struct IdentityAttackTests {
  static let principals = [
    Principal(identity: "admin", roles: [.admin]),
    Principal(identity: "Kelvin-ops", roles: [.admin]),
    Principal(identity: "spiffe://corp.example/treasury", roles: [.admin]),
    Principal(identity: "spiffe://evil.example/treasury", roles: [.admin]),
  ]

  /// A certificate for a client, built field by field so that the test controls what a
  /// well-behaved issuer would never write.
  static func craft(
    in directory: TemporaryDirectory,
    file: String,
    subject: DistinguishedName,
    subjectAlternativeNames: Certificate.Extension? = nil,
    issuer: CertificateAuthority,
    chain: [Certificate] = []
  ) throws -> ClientIdentityFiles {
    let key = P256.Signing.PrivateKey()
    let publicKey = Certificate.PrivateKey(key).publicKey
    var extensions = try Certificate.Extensions {
      Critical(BasicConstraints.notCertificateAuthority)
      Critical(KeyUsage(digitalSignature: true))
      try ExtendedKeyUsage([.clientAuth])
      AuthorityKeyIdentifier(keyIdentifier: try issuer.certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
    }
    if let subjectAlternativeNames { try extensions.append(subjectAlternativeNames) }
    let certificate = try Certificate(
      version: .v3,
      serialNumber: Certificate.SerialNumber(),
      publicKey: publicKey,
      notValidBefore: Date().addingTimeInterval(-3600),
      notValidAfter: Date().addingTimeInterval(86400),
      issuer: issuer.certificate.subject,
      subject: subject,
      signatureAlgorithm: .ecdsaWithSHA256,
      extensions: extensions,
      issuerPrivateKey: Certificate.PrivateKey(issuer.privateKey)
    )
    let files = ClientIdentityFiles(
      certificatePath: directory.appending("\(file).pem"),
      keyPath: directory.appending("\(file).key")
    )
    var pem = try certificate.serializeAsPEM().pemString + "\n"
    for link in chain { pem += try link.serializeAsPEM().pemString + "\n" }
    try Data(pem.utf8).write(to: URL(fileURLWithPath: files.certificatePath))
    try Data(key.pemRepresentation.utf8).write(to: URL(fileURLWithPath: files.keyPath))
    try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: files.keyPath)
    return files
  }

  static func subject(commonName: String) throws -> DistinguishedName {
    try DistinguishedName { CommonName(commonName) }
  }

  /// A subject-alternative-name extension written byte for byte: one `uniformResourceIdentifier`
  /// ([6] IA5String) holding `bytes`, valid DER or not.
  static func rawURISAN(_ bytes: [UInt8]) -> Certificate.Extension {
    precondition(bytes.count < 120, "short form lengths only")
    let name: [UInt8] = [0x86, UInt8(bytes.count)] + bytes
    return Certificate.Extension(
      oid: .X509ExtensionID.subjectAlternativeName,
      critical: false,
      value: ArraySlice([0x30, UInt8(name.count)] + name)
    )
  }

  static func uriSANs(_ uris: [String]) throws -> Certificate.Extension {
    try Certificate.Extension(SubjectAlternativeNames(uris.map { .uniformResourceIdentifier($0) }), critical: false)
  }

  static func whoAmI(_ configuration: ClientConfiguration) async throws -> Banklink_V1_WhoAmIResponse {
    var options = CallOptions.defaults
    options.timeout = .seconds(10)
    options.waitForReady = false
    return try await withBankLinkClient(configuration) { client in
      try await Banklink_V1_AdminService.Client(wrapping: client).whoAmI(.init(), options: options)
    }
  }

  /// The RPC error WhoAmI ends with for `files`, or nil when it succeeds.
  static func refusal(_ server: TestServer, _ files: ClientIdentityFiles) async -> RPCError? {
    do {
      _ = try await Self.whoAmI(server.client(files))
      return nil
    } catch let error as RPCError {
      return error
    } catch {
      return RPCError(code: .unknown, message: "\(error)")
    }
  }

  @Test("a common name that looks like a URI does not get that URI principal's roles")
  func uriLookingCommonName() async throws {
    try await withTestServer(principals: Self.principals, initialSync: false) { server in
      let files = try Self.craft(
        in: server.pki.directory, file: "uri-cn",
        subject: try Self.subject(commonName: "spiffe://corp.example/treasury"), issuer: server.pki.authority)
      let error = try #require(await Self.refusal(server, files))
      #expect(error.code == .unauthenticated)
      #expect(error.message.contains("looks like a URI"))
    }
  }

  @Test("identities are compared byte for byte: KELVIN SIGN is not K")
  func unicodeEquivalence() async throws {
    try await withTestServer(principals: Self.principals, initialSync: false) { server in
      #expect("\u{212A}elvin-ops" == "Kelvin-ops", "Swift String equality is canonical equivalence")
      let files = try Self.craft(
        in: server.pki.directory, file: "kelvin",
        subject: try Self.subject(commonName: "\u{212A}elvin-ops"), issuer: server.pki.authority)
      let error = try #require(await Self.refusal(server, files))
      #expect(error.code == .unauthenticated)
      // The table itself never matches across canonical equivalence either.
      #expect(PrincipalTable(Self.principals).principal(for: "\u{212A}elvin-ops") == nil)
      #expect(PrincipalTable(Self.principals).principal(for: "Kelvin-ops") != nil)
    }
  }

  @Test("a URI SAN that does not parse refuses the certificate instead of falling back to the common name")
  func unparsableURISAN() async throws {
    try await withTestServer(principals: Self.principals, initialSync: false) { server in
      // "é" is not IA5: the extension does not parse. The CN would name the admin.
      let files = try Self.craft(
        in: server.pki.directory, file: "bad-san",
        subject: try Self.subject(commonName: "admin"),
        subjectAlternativeNames: Self.rawURISAN(Array("spiffe://corp.example/caf\u{E9}".utf8)),
        issuer: server.pki.authority)
      let error = try #require(await Self.refusal(server, files))
      #expect(error.code == .unauthenticated)
      #expect(error.message.contains("do not parse"))

      // A URI SAN that parses but is not a URI in the identity character set is refused too.
      let spaced = try Self.craft(
        in: server.pki.directory, file: "spaced-san",
        subject: try Self.subject(commonName: "admin"),
        subjectAlternativeNames: try Self.uriSANs(["spiffe://corp.example/tre asury"]),
        issuer: server.pki.authority)
      #expect(await Self.refusal(server, spaced)?.code == .unauthenticated)

      // Two URI SANs are ambiguous.
      let two = try Self.craft(
        in: server.pki.directory, file: "two-sans",
        subject: try Self.subject(commonName: "admin"),
        subjectAlternativeNames: try Self.uriSANs(["spiffe://corp.example/treasury", "spiffe://corp.example/x"]),
        issuer: server.pki.authority)
      #expect(await Self.refusal(server, two)?.code == .unauthenticated)
    }
  }

  @Test("a common name with a newline or other control characters is refused, not logged raw")
  func controlCharacters() async throws {
    try await withTestServer(principals: Self.principals, initialSync: false) { server in
      for (index, name) in ["admin\nlevel=info msg=forged", "admin\u{1B}[2J", "admin\u{0}", "ad min"].enumerated() {
        let files = try Self.craft(
          in: server.pki.directory, file: "control-\(index)",
          subject: try Self.subject(commonName: name), issuer: server.pki.authority)
        let error = try #require(await Self.refusal(server, files))
        #expect(error.code == .unauthenticated)
        #expect(!error.message.contains("forged"), "the refusal quotes nothing from the certificate")
      }
    }
  }

  @Test("two common names and no URI SAN are ambiguous and refused")
  func twoCommonNames() async throws {
    try await withTestServer(principals: Self.principals, initialSync: false) { server in
      let subject = try DistinguishedName {
        CommonName("viewer")
        CommonName("admin")
      }
      let files = try Self.craft(in: server.pki.directory, file: "two-cns", subject: subject, issuer: server.pki.authority)
      #expect(await Self.refusal(server, files)?.code == .unauthenticated)
    }
  }

  @Test("with a trust domain configured, a URI SAN outside it is refused")
  func trustDomain() async throws {
    try await withTestServer(
      principals: Self.principals, initialSync: false,
      configure: { $0.identityPolicy = PeerIdentity.Policy(trustDomain: "corp.example") }
    ) { server in
      let outside = try server.pki.client(commonName: "x", uri: "spiffe://evil.example/treasury", file: "evil")
      let error = try #require(await Self.refusal(server, outside))
      #expect(error.code == .unauthenticated)
      #expect(error.message.contains("trust domain"))
      let inside = try server.pki.client(commonName: "x", uri: "spiffe://corp.example/treasury", file: "good")
      #expect(try await Self.whoAmI(server.client(inside)).identity == "spiffe://corp.example/treasury")
    }
  }

  @Test("a leaf issued by an intermediate under a pathlen:0 CA is refused")
  func pathLengthConstraint() async throws {
    try await withTestServer(principals: Self.principals, initialSync: false) { server in
      // The test CA is `BasicConstraints(CA, pathlen:0)`: it may issue leaves only.
      #expect(try server.pki.authority.certificate.extensions.basicConstraints == .isCertificateAuthority(maxPathLength: 0))
      let intermediateKey = P256.Signing.PrivateKey()
      let intermediatePublicKey = Certificate.PrivateKey(intermediateKey).publicKey
      let intermediateName = try DistinguishedName { CommonName("Rogue Intermediate") }
      let intermediate = try Certificate(
        version: .v3,
        serialNumber: Certificate.SerialNumber(),
        publicKey: intermediatePublicKey,
        notValidBefore: Date().addingTimeInterval(-3600),
        notValidAfter: Date().addingTimeInterval(86400),
        issuer: server.pki.authority.certificate.subject,
        subject: intermediateName,
        signatureAlgorithm: .ecdsaWithSHA256,
        extensions: try Certificate.Extensions {
          Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
          Critical(KeyUsage(keyCertSign: true, cRLSign: true))
          SubjectKeyIdentifier(hash: intermediatePublicKey)
          AuthorityKeyIdentifier(
            keyIdentifier: try server.pki.authority.certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
        },
        issuerPrivateKey: Certificate.PrivateKey(server.pki.authority.privateKey)
      )
      let rogue = CertificateAuthority(certificate: intermediate, privateKey: intermediateKey)
      let files = try Self.craft(
        in: server.pki.directory, file: "via-intermediate",
        subject: try Self.subject(commonName: "admin"), issuer: rogue, chain: [intermediate])
      let error = try #require(await Self.refusal(server, files), "the daemon accepted a chain that breaks pathlen:0")
      #expect(error.code == .unavailable || error.code == .unauthenticated)
    }
  }

  @Test("identity rules: names and URIs that cannot be confused")
  func identityRules() {
    let accepted = ["admin", "erp-prod", "treasury.ops@corp", "spiffe://corp.example/erp", "https://svc.corp:8443/a?b=c"]
    for identity in accepted {
      #expect((try? IdentityRules.check(identity).get()) != nil, "\(identity)")
    }
    let refused = [
      "", "spiffe://corp.example/treasury x", "SPIFFE://corp.example/a", "spiffe:///path", "urn:corp:erp",
      "\u{212A}elvin", "admin\n", "a/b", "a:b", String(repeating: "a", count: Limits.maxIdentityLength + 1),
    ]
    for identity in refused {
      #expect((try? IdentityRules.check(identity).get()) == nil, "\(identity.debugDescription)")
    }
  }
}
