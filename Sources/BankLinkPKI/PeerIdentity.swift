import Foundation
import X509

/// The identity the daemon derives from a client certificate: the URI SAN when the certificate
/// has one (e.g. `spiffe://corp.example/erp`), otherwise the subject common name.
public struct PeerIdentity: Sendable, Hashable {
  public enum Source: String, Sendable, Hashable {
    case uriSAN = "uri_san"
    case commonName = "common_name"
  }

  public var identity: String
  public var source: Source
  /// The certificate the identity came from. Its descriptive fields below are derived on demand:
  /// the authorization of every call needs only the identity.
  public var certificate: Certificate

  /// Serial number, lower-case hex.
  public var serialNumberHex: String { self.certificate.serialNumber.hex }
  public var notValidAfter: Date { self.certificate.notValidAfter }
  public var subject: String { self.certificate.subject.description }

  /// Derives the identity of `certificate`; nil when it has neither a URI SAN nor a common name.
  public init?(certificate: Certificate) {
    var identity: (String, Source)?
    if let names = try? certificate.extensions.subjectAlternativeNames {
      for name in names {
        if case .uniformResourceIdentifier(let uri) = name, !uri.isEmpty {
          identity = (uri, .uriSAN)
          break
        }
      }
    }
    if identity == nil {
      outer: for rdn in certificate.subject {
        for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
          let name = attribute.value.description
          if !name.isEmpty {
            identity = (name, .commonName)
            break outer
          }
        }
      }
    }
    guard let (value, source) = identity else { return nil }
    self.identity = value
    self.source = source
    self.certificate = certificate
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
