import BankLinkCore
import Foundation
import Logging
import NIOCore
import NIOSSL
import SwiftASN1
import Synchronization
import X509

/// Verifies the certificate chain a client presents, in place of BoringSSL's built-in check.
///
/// Why our own: BoringSSL, as NIOSSL configures it, accepted a leaf issued by an intermediate CA
/// that a `pathlen:0` root had signed (the root may issue leaves only). swift-certificates'
/// `RFC5280Policy` enforces basic constraints with path lengths, name constraints, validity
/// periods and critical extensions; ``ClientAuthenticationPolicy`` adds the extended key usage a
/// TLS client certificate must carry. Verification runs once per handshake, before any HTTP/2
/// byte is read, and the chain it validates is what the transport exposes to the interceptor.
public struct ClientCertificateVerifier: Sendable {
  /// The trusted CA bundle in force; a reload replaces it (``TrustedAuthorities/replace(with:)``)
  /// and the next handshake is verified against the new one.
  public let trust: TrustedAuthorities
  /// The trusted CA certificates, for checking a CRL's signature.
  public var authorities: [Certificate] { self.trust.certificates }
  let logger: Logger
  /// Checked after the chain verifies: a revoked or expired leaf is refused at the handshake too.
  let revocations: CertificateRevocations?

  /// Loads the trusted CA bundle (PEM, one or more certificates).
  public init(caBundlePath: String, logger: Logger, revocations: CertificateRevocations? = nil) throws {
    self.trust = TrustedAuthorities(try TrustedAuthorities.load(caBundlePath))
    self.logger = logger
    self.revocations = revocations
  }

  public enum Outcome: Sendable {
    /// The chain from the leaf to a trusted root.
    case verified([Certificate])
    /// Why the chain is refused (safe to log: certificate text is escaped).
    case refused(String)
  }

  /// Verifies `presented` (the leaf first, then any intermediates the client sent) against the
  /// trusted roots at the current time.
  public func verify(_ presented: [Certificate]) async -> Outcome {
    guard let leaf = presented.first else { return .refused("no client certificate") }
    guard presented.count <= Limits.maxClientCertificateChainLength else {
      return .refused("\(presented.count) certificates presented, at most \(Limits.maxClientCertificateChainLength)")
    }
    var verifier = Verifier(rootCertificates: CertificateStore(self.trust.certificates)) {
      RFC5280Policy()
      ClientAuthenticationPolicy()
    }
    switch await verifier.validate(leaf: leaf, intermediates: CertificateStore(presented.dropFirst())) {
    case .validCertificate(let chain):
      if let refusal = self.revocations?.refusal(for: leaf, identity: nil) { return .refused(refusal) }
      return .verified(Array(chain))
    case .couldNotValidate(let failures):
      let reasons = failures.prefix(3).map { "\($0.policyFailureReason)" }.joined(separator: "; ")
      return .refused(reasons.isEmpty ? "no chain to a trusted CA" : reasons)
    }
  }

  /// The callback NIOSSL calls with the peer's certificates during each handshake.
  public var callback: @Sendable ([NIOSSLCertificate], EventLoopPromise<NIOSSLVerificationResultWithMetadata>) -> Void {
    self.callback(onVerified: nil)
  }

  /// ``callback``, which also hands the verified leaf, parsed, to `onVerified` before the
  /// handshake completes: the connection keeps it, so no call parses it again.
  public func callback(
    onVerified: (@Sendable (Certificate) -> Void)?
  ) -> @Sendable ([NIOSSLCertificate], EventLoopPromise<NIOSSLVerificationResultWithMetadata>) -> Void {
    { [self] certificates, promise in
      let presented: [Certificate]
      do {
        presented = try certificates.map { try Certificate(derEncoded: try $0.toDERBytes()) }
      } catch {
        self.logger.warning("TLS handshake refused: a client certificate does not parse")
        promise.succeed(.failed)
        return
      }
      Task {
        switch await self.verify(presented) {
        case .verified(let chain):
          if let leaf = chain.first { onVerified?(leaf) }
          do {
            let validated = try chain.map { certificate in
              var serializer = DER.Serializer()
              try serializer.serialize(certificate)
              return try NIOSSLCertificate(bytes: serializer.serializedBytes, format: .der)
            }
            promise.succeed(.certificateVerified(VerificationMetadata(NIOSSL.ValidatedCertificateChain(validated))))
          } catch {
            promise.succeed(.failed)
          }
        case .refused(let reason):
          self.logger.warning(
            "TLS handshake refused: the client certificate chain does not verify",
            metadata: [
              "serial": "\(presented.first?.serialNumber.description ?? "-")",
              "reason": "\(LogText.prefix(reason, maxBytes: Limits.maxLoggedReasonBytes))",
            ]
          )
          promise.succeed(.failed)
        }
      }
    }
  }
}

/// The CA certificates whose client certificates are accepted (`tls.ca`), replaceable on reload.
public final class TrustedAuthorities: Sendable {
  private let state: Mutex<[Certificate]>

  public init(_ certificates: [Certificate]) {
    self.state = Mutex(certificates)
  }

  public var certificates: [Certificate] { self.state.withLock { $0 } }

  public func replace(with certificates: [Certificate]) {
    self.state.withLock { $0 = certificates }
  }

  /// Reads a PEM bundle of one or more CA certificates; throws for a file that cannot be read,
  /// does not parse or holds none.
  public static func load(_ path: String) throws -> [Certificate] {
    let certificates = try NIOSSLCertificate.fromPEMFile(path).map {
      try Certificate(derEncoded: try $0.toDERBytes())
    }
    guard !certificates.isEmpty else {
      throw CocoaError(.fileReadCorruptFile, userInfo: [NSFilePathErrorKey: path])
    }
    return certificates
  }

  /// ``load(_:)`` for a reload: a failure is a refusal naming `tls.ca`.
  public static func loadForReload(_ path: String) throws(ReloadRefusal) -> [Certificate] {
    do {
      return try Self.load(path)
    } catch {
      throw ReloadRefusal(key: "tls.ca", reason: "tls.ca: cannot read \(path) as a PEM bundle of CA certificates (\(error))")
    }
  }
}

/// A TLS client certificate must be usable for client authentication: when it has an extended
/// key usage extension, that extension lists `clientAuth` (or `anyExtendedKeyUsage`), as
/// BoringSSL's own check for SSL clients requires.
struct ClientAuthenticationPolicy: VerifierPolicy {
  let verifyingCriticalExtensions: [ASN1ObjectIdentifier] = [.X509ExtensionID.extendedKeyUsage]

  func chainMeetsPolicyRequirements(chain: UnverifiedCertificateChain) async -> PolicyEvaluationResult {
    do {
      guard let usage = try chain.leaf.extensions.extendedKeyUsage else { return .meetsPolicy }
      if usage.contains(.clientAuth) || usage.contains(.any) { return .meetsPolicy }
      return .failsToMeetPolicy(reason: "the leaf's extended key usage does not allow client authentication")
    } catch {
      return .failsToMeetPolicy(reason: "the leaf's extended key usage does not parse")
    }
  }
}
