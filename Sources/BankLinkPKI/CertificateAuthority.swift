import Crypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SwiftASN1
import X509

/// A certificate authority that mints P-256 certificates in process: the development PKI
/// (`banklink dev-certs`) and the certificates tests create. Not for production use: a
/// production deployment brings its own CA.
public struct CertificateAuthority: Sendable {
  public let certificate: Certificate
  public let privateKey: P256.Signing.PrivateKey

  public init(certificate: Certificate, privateKey: P256.Signing.PrivateKey) {
    self.certificate = certificate
    self.privateKey = privateKey
  }

  /// Loads a CA from PEM files written by ``IssuedCertificate/write(certificateTo:keyTo:)``.
  public init(certificatePEM: String, privateKeyPEM: String) throws {
    self.certificate = try Certificate(pemEncoded: certificatePEM)
    self.privateKey = try P256.Signing.PrivateKey(pemRepresentation: privateKeyPEM)
  }

  /// Creates a self-signed root CA.
  public static func generate(
    commonName: String,
    organization: String = "BankLink Development",
    notValidBefore: Date = Date().addingTimeInterval(-3600),
    notValidAfter: Date = Date().addingTimeInterval(3650 * 86400)
  ) throws -> CertificateAuthority {
    let key = P256.Signing.PrivateKey()
    let certificateKey = Certificate.PrivateKey(key)
    let name = try DistinguishedName {
      OrganizationName(organization)
      CommonName(commonName)
    }
    let extensions = try Certificate.Extensions {
      Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
      Critical(KeyUsage(keyCertSign: true, cRLSign: true))
      SubjectKeyIdentifier(hash: certificateKey.publicKey)
    }
    let certificate = try Certificate(
      version: .v3,
      serialNumber: Certificate.SerialNumber(),
      publicKey: certificateKey.publicKey,
      notValidBefore: notValidBefore,
      notValidAfter: notValidAfter,
      issuer: name,
      subject: name,
      signatureAlgorithm: .ecdsaWithSHA256,
      extensions: extensions,
      issuerPrivateKey: certificateKey
    )
    return CertificateAuthority(certificate: certificate, privateKey: key)
  }

  /// What an issued certificate is for.
  public enum Usage: Sendable {
    /// A TLS server: the daemon.
    case server
    /// A TLS client: a principal calling the daemon.
    case client
  }

  /// Issues a leaf certificate signed by this CA.
  ///
  /// - Parameters:
  ///   - commonName: Subject CN; the identity of a client without a URI SAN.
  ///   - uri: Optional URI SAN; when present it is the client's identity.
  ///   - dnsNames, ipAddresses: SANs for servers (IPv4 as 4 bytes, IPv6 as 16).
  public func issue(
    _ usage: Usage,
    commonName: String,
    uri: String? = nil,
    dnsNames: [String] = [],
    ipAddresses: [[UInt8]] = [],
    notValidBefore: Date = Date().addingTimeInterval(-3600),
    notValidAfter: Date = Date().addingTimeInterval(825 * 86400)
  ) throws -> IssuedCertificate {
    let key = P256.Signing.PrivateKey()
    let certificateKey = Certificate.PrivateKey(key)
    let subject = try DistinguishedName {
      OrganizationName("BankLink Development")
      CommonName(commonName)
    }
    var names: [GeneralName] = dnsNames.map { .dnsName($0) }
    names += ipAddresses.map { .ipAddress(ASN1OctetString(contentBytes: ArraySlice($0))) }
    if let uri { names.append(.uniformResourceIdentifier(uri)) }
    let sans = SubjectAlternativeNames(names)
    let extensions = try Certificate.Extensions {
      Critical(BasicConstraints.notCertificateAuthority)
      Critical(KeyUsage(digitalSignature: true, keyEncipherment: usage == .server))
      try ExtendedKeyUsage([usage == .server ? .serverAuth : .clientAuth])
      SubjectKeyIdentifier(hash: certificateKey.publicKey)
      AuthorityKeyIdentifier(keyIdentifier: try self.certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
      if !names.isEmpty {
        sans
      }
    }
    let certificate = try Certificate(
      version: .v3,
      serialNumber: Certificate.SerialNumber(),
      publicKey: certificateKey.publicKey,
      notValidBefore: notValidBefore,
      notValidAfter: notValidAfter,
      issuer: self.certificate.subject,
      subject: subject,
      signatureAlgorithm: .ecdsaWithSHA256,
      extensions: extensions,
      issuerPrivateKey: Certificate.PrivateKey(self.privateKey)
    )
    return IssuedCertificate(certificate: certificate, privateKey: key)
  }

  /// The CA itself as an issued certificate (for writing it to files).
  public var issued: IssuedCertificate {
    IssuedCertificate(certificate: self.certificate, privateKey: self.privateKey)
  }
}

/// A certificate and its private key.
public struct IssuedCertificate: Sendable {
  public let certificate: Certificate
  public let privateKey: P256.Signing.PrivateKey

  public init(certificate: Certificate, privateKey: P256.Signing.PrivateKey) {
    self.certificate = certificate
    self.privateKey = privateKey
  }

  public var certificatePEM: String {
    get throws { try self.certificate.serializeAsPEM().pemString }
  }

  /// PKCS#8 PEM of the private key. Never log it.
  public var privateKeyPEM: String {
    self.privateKey.pemRepresentation
  }

  /// Writes the certificate (mode 0644) and the private key (mode 0600, owner only).
  /// Each file ends with a newline, as PEM files conventionally do, so that `cat a.pem b.pem`
  /// makes a valid bundle.
  public func write(certificateTo certificatePath: String, keyTo keyPath: String) throws {
    try writeFile(certificatePath, contents: try self.certificatePEM + "\n", permissions: 0o644)
    try writeFile(keyPath, contents: self.privateKeyPEM + "\n", permissions: 0o600)
  }
}

/// Writes `contents` to `path` with exactly `permissions`, atomically: the bytes go to a new file
/// created with that mode by `open(2)` (`O_CREAT | O_EXCL`, so a private key is never readable
/// by others, not even for an instant), then the file is renamed over `path`.
func writeFile(_ path: String, contents: String, permissions: Int) throws {
  let temporary = path + ".tmp-\(getpid())"
  let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode_t(permissions))
  guard fd >= 0 else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: temporary]) }
  // The process umask may have narrowed the mode; never widened it. Set it exactly.
  _ = fchmod(fd, mode_t(permissions))
  let bytes = Array(contents.utf8)
  var written = 0
  while written < bytes.count {
    let result = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, bytes.count - written) }
    if result < 0 {
      if errno == EINTR { continue }
      close(fd)
      unlink(temporary)
      throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: temporary])
    }
    written += result
  }
  guard fsync(fd) == 0, close(fd) == 0, rename(temporary, path) == 0 else {
    unlink(temporary)
    throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
  }
}
