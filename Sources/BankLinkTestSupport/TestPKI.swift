import BankLinkClient
import BankLinkPKI
import Foundation

/// A PKI minted in the test: a CA, a server certificate for 127.0.0.1/localhost and client
/// certificates on demand, written as PEM files into a temporary directory.
public struct TestPKI: Sendable {
  public let directory: TemporaryDirectory
  public let authority: CertificateAuthority

  public var caPath: String { self.directory.appending("ca.pem") }
  public var serverCertificatePath: String { self.directory.appending("server.pem") }
  public var serverKeyPath: String { self.directory.appending("server.key") }

  public init(directory: TemporaryDirectory) throws {
    self.directory = directory
    self.authority = try CertificateAuthority.generate(commonName: "BankLink Test CA")
    try self.authority.issued.write(certificateTo: self.caPath, keyTo: directory.appending("ca.key"))
    let server = try self.authority.issue(
      .server,
      commonName: "banklinkd-test",
      dnsNames: ["localhost"],
      ipAddresses: [[127, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]]
    )
    try server.write(certificateTo: self.serverCertificatePath, keyTo: self.serverKeyPath)
  }

  /// Issues a client certificate and writes it as `FILE.pem`/`FILE.key`; returns its paths.
  public func client(
    commonName: String,
    uri: String? = nil,
    notValidBefore: Date = Date().addingTimeInterval(-3600),
    notValidAfter: Date = Date().addingTimeInterval(400 * 86400),
    file: String? = nil,
    authority: CertificateAuthority? = nil
  ) throws -> ClientIdentityFiles {
    let name = file ?? commonName
    let issued = try (authority ?? self.authority).issue(
      .client,
      commonName: commonName,
      uri: uri,
      notValidBefore: notValidBefore,
      notValidAfter: notValidAfter
    )
    let files = ClientIdentityFiles(
      certificatePath: self.directory.appending("\(name).pem"),
      keyPath: self.directory.appending("\(name).key")
    )
    try issued.write(certificateTo: files.certificatePath, keyTo: files.keyPath)
    return files
  }

  /// A client configuration that connects to `address` as `identity`, trusting this CA.
  public func clientConfiguration(address: String, identity: ClientIdentityFiles) -> ClientConfiguration {
    ClientConfiguration(
      address: address,
      caPath: self.caPath,
      certificatePath: identity.certificatePath,
      keyPath: identity.keyPath
    )
  }
}

public struct ClientIdentityFiles: Sendable, Hashable {
  public var certificatePath: String
  public var keyPath: String

  public init(certificatePath: String, keyPath: String) {
    self.certificatePath = certificatePath
    self.keyPath = keyPath
  }
}
