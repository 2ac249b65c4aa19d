import BankLinkCore
import Foundation
import X509

/// The identity the daemon derives from a client certificate: the URI SAN when the certificate
/// has one (e.g. `spiffe://corp.example/erp`), otherwise the subject common name.
///
/// Derivation refuses rather than guesses: a subject-alternative-name extension that does not
/// parse, more than one URI SAN, more than one common name, a common name that is not a printable
/// or UTF-8 string, an identity outside ``IdentityRules``, or a URI outside the configured trust
/// domain each refuse the certificate (never a fall-back to the common name).
public struct PeerIdentity: Sendable, Hashable {
  public enum Source: String, Sendable, Hashable {
    case uriSAN = "uri_san"
    case commonName = "common_name"
  }

  /// The fields, in one immutable object. An identity rides in every call's `Caller`, which is
  /// copied into task-locals and the async frames of the interceptors for the whole call; inline,
  /// the `Certificate` alone is 616 bytes, so a caller was 672 bytes a copy (docs/BENCHMARKS.md).
  private final class Storage: Sendable {
    let identity: String
    let source: Source
    let certificate: Certificate

    init(identity: String, source: Source, certificate: Certificate) {
      self.identity = identity
      self.source = source
      self.certificate = certificate
    }
  }

  private let storage: Storage

  public var identity: String { self.storage.identity }
  public var source: Source { self.storage.source }
  /// The certificate the identity came from. Its descriptive fields below are derived on demand:
  /// the authorization of every call needs only the identity.
  public var certificate: Certificate { self.storage.certificate }

  public static func == (lhs: PeerIdentity, rhs: PeerIdentity) -> Bool {
    lhs.storage === rhs.storage
      || (lhs.identity == rhs.identity && lhs.source == rhs.source && lhs.certificate == rhs.certificate)
  }

  public func hash(into hasher: inout Hasher) {
    hasher.combine(self.identity)
    hasher.combine(self.source)
    hasher.combine(self.certificate)
  }

  /// Serial number, lower-case hex.
  public var serialNumberHex: String { self.certificate.serialNumber.hex }
  public var notValidAfter: Date { self.certificate.notValidAfter }
  public var subject: String { self.certificate.subject.description }

  /// What the daemon requires of the identities in client certificates.
  public struct Policy: Sendable, Hashable {
    /// When set, a URI SAN identity must have this authority (`spiffe://<trust domain>/…`);
    /// compared byte for byte, lower-case.
    public var trustDomain: String?

    public init(trustDomain: String? = nil) {
      self.trustDomain = trustDomain
    }

    public static let standard = Policy()
  }

  /// Why a certificate carries no usable identity: a short clause safe to log and to return to
  /// the caller (it quotes nothing from the certificate).
  public struct Refusal: Error, Sendable, Hashable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
  }

  /// Derives the identity of `certificate`, or the reason it has none.
  public static func derive(from certificate: Certificate, policy: Policy = .standard) -> Result<PeerIdentity, Refusal> {
    let names: SubjectAlternativeNames?
    do {
      names = try certificate.extensions.subjectAlternativeNames
    } catch {
      return .failure(Refusal("its subject alternative names do not parse"))
    }
    var uris: [String] = []
    if let names {
      for name in names {
        if case .uniformResourceIdentifier(let uri) = name { uris.append(uri) }
      }
    }
    if uris.count > 1 {
      return .failure(Refusal("it has \(uris.count) URI SANs; exactly one names a principal"))
    }
    if let uri = uris.first {
      switch IdentityRules.check(uri) {
      case .failure(let problem):
        return .failure(Refusal("its URI SAN \(problem)"))
      case .success(.name):
        return .failure(Refusal("its URI SAN is not a scheme://authority URI"))
      case .success(.uri(_, let authority)):
        if let domain = policy.trustDomain, !authority.utf8.elementsEqual(domain.utf8) {
          return .failure(Refusal("its URI SAN is outside the trust domain \(domain)"))
        }
        return .success(PeerIdentity(identity: uri, source: .uriSAN, certificate: certificate))
      }
    }
    var commonNames: [RelativeDistinguishedName.Attribute.Value] = []
    for rdn in certificate.subject {
      for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
        commonNames.append(attribute.value)
      }
    }
    guard commonNames.count == 1 else {
      return .failure(Refusal(
        commonNames.isEmpty
          ? "it has neither a URI SAN nor a common name"
          : "it has \(commonNames.count) common names and no URI SAN; exactly one names a principal"
      ))
    }
    guard let name = String(commonNames[0]) else {
      return .failure(Refusal("its common name is not a printable or UTF-8 string"))
    }
    switch IdentityRules.check(name) {
    case .failure(let problem):
      return .failure(Refusal("its common name \(problem)"))
    case .success(.uri):
      return .failure(Refusal("its common name looks like a URI; a URI identity must be a URI SAN"))
    case .success(.name):
      return .success(PeerIdentity(identity: name, source: .commonName, certificate: certificate))
    }
  }

  /// Derives the identity of `certificate` under the standard policy; nil when it has none.
  public init?(certificate: Certificate) {
    guard case .success(let identity) = Self.derive(from: certificate) else { return nil }
    self = identity
  }

  init(identity: String, source: Source, certificate: Certificate) {
    self.storage = Storage(identity: identity, source: source, certificate: certificate)
  }
}

extension Certificate.SerialNumber {
  /// Lower-case hex of the serial number's bytes, without separators.
  public var hex: String {
    var text = ""
    for byte in self.bytes {
      let digits = String(byte, radix: 16)
      text += digits.count == 1 ? "0" + digits : digits
    }
    return text
  }
}
