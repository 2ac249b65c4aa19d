import Crypto
import Foundation
import SwiftASN1
import X509

/// An X.509 certificate revocation list (RFC 5280 §5): the serial numbers a CA has revoked,
/// read from the PEM (`-----BEGIN X509 CRL-----`) or DER file that `openssl ca -gencrl` or any CA
/// writes, and accepted only with a valid signature by a CA the daemon trusts.
public struct CertificateRevocationList: Sendable, Hashable {
  public var issuer: DistinguishedName
  public var thisUpdate: Date
  public var nextUpdate: Date?
  /// Revoked serial numbers, as ``Certificate/SerialNumber/hex`` writes them.
  public var revokedSerials: Set<String>
  /// The signed part as it was encoded, the signature algorithm and the signature.
  let signedBytes: [UInt8]
  let signatureAlgorithm: ASN1ObjectIdentifier
  let signature: [UInt8]

  /// Most entries read from one list; a larger one is refused (a CA's list for a gateway's
  /// clients holds tens of entries, not millions).
  public static let maxEntries = 100_000
  /// Largest file read.
  public static let maxBytes = 16 << 20

  public struct Problem: Error, Sendable, Hashable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
  }

  /// Parses a PEM or DER CRL.
  public init(bytes: [UInt8]) throws(Problem) {
    guard bytes.count <= Self.maxBytes else { throw Problem("the CRL is larger than \(Self.maxBytes) bytes") }
    var der = bytes
    if let text = String(validating: bytes, as: UTF8.self), text.contains("-----BEGIN X509 CRL-----") {
      do {
        der = try PEMDocument(pemString: text).derBytes
      } catch {
        throw Problem("the PEM does not decode: \(error)")
      }
    }
    do {
      let root = try DER.parse(der)
      var parsed: (DistinguishedName, Date, Date?, Set<String>, [UInt8], ASN1ObjectIdentifier, [UInt8])?
      try DER.sequence(root, identifier: .sequence) { nodes in
        guard let tbs = nodes.next() else { throw Problem("no tbsCertList") }
        var issuer = DistinguishedName()
        var thisUpdate = Date.distantPast
        var nextUpdate: Date?
        var serials: Set<String> = []
        try DER.sequence(tbs, identifier: .sequence) { fields in
          var field = fields.next()
          // version INTEGER OPTIONAL (v2 = 1)
          if let node = field, node.identifier == .integer { field = fields.next() }
          // signature AlgorithmIdentifier
          field = fields.next()
          guard let issuerNode = field else { throw Problem("no issuer") }
          issuer = try DistinguishedName(derEncoded: issuerNode)
          guard let thisNode = fields.next() else { throw Problem("no thisUpdate") }
          thisUpdate = try Self.time(thisNode)
          field = fields.next()
          if let node = field, node.identifier == .utcTime || node.identifier == .generalizedTime {
            nextUpdate = try Self.time(node)
            field = fields.next()
          }
          if let node = field, node.identifier == .sequence {
            try DER.sequence(node, identifier: .sequence) { entries in
              while let entry = entries.next() {
                guard serials.count < Self.maxEntries else { throw Problem("more than \(Self.maxEntries) revoked certificates") }
                try DER.sequence(entry, identifier: .sequence) { parts in
                  guard let serialNode = parts.next() else { throw Problem("a revoked entry without a serial number") }
                  let serial = try ArraySlice<UInt8>(derEncoded: serialNode)
                  serials.insert(Certificate.SerialNumber(bytes: serial).hex)
                  while parts.next() != nil {}
                }
              }
            }
            field = fields.next()
          }
          // crlExtensions [0] EXPLICIT, not read.
          while fields.next() != nil {}
        }
        guard let algorithmNode = nodes.next(), let signatureNode = nodes.next() else { throw Problem("no signature") }
        var algorithm: ASN1ObjectIdentifier?
        try DER.sequence(algorithmNode, identifier: .sequence) { parts in
          guard let oid = parts.next() else { throw Problem("no signature algorithm") }
          algorithm = try ASN1ObjectIdentifier(derEncoded: oid)
          while parts.next() != nil {}
        }
        let signature = try ASN1BitString(derEncoded: signatureNode)
        guard let algorithm else { throw Problem("no signature algorithm") }
        parsed = (issuer, thisUpdate, nextUpdate, serials, Array(tbs.encodedBytes), algorithm, Array(signature.bytes))
      }
      guard let parsed else { throw Problem("empty") }
      (self.issuer, self.thisUpdate, self.nextUpdate, self.revokedSerials, self.signedBytes, self.signatureAlgorithm, self.signature) = parsed
    } catch let problem as Problem {
      throw problem
    } catch {
      throw Problem("not an X.509 CRL: \(error)")
    }
  }

  static func time(_ node: ASN1Node) throws -> Date {
    switch node.identifier {
    case .utcTime:
      let time = try UTCTime(derEncoded: node)
      return Self.date(time.year, time.month, time.day, time.hours, time.minutes, time.seconds)
    case .generalizedTime:
      let time = try GeneralizedTime(derEncoded: node)
      return Self.date(time.year, time.month, time.day, time.hours, time.minutes, time.seconds)
    default:
      throw Problem("a time that is neither UTCTime nor GeneralizedTime")
    }
  }

  static func date(_ year: Int, _ month: Int, _ day: Int, _ hours: Int, _ minutes: Int, _ seconds: Int) -> Date {
    var calendar = Calendar(identifier: .gregorian)
    calendar.timeZone = TimeZone(identifier: "UTC")!
    return calendar.date(from: DateComponents(year: year, month: month, day: day, hour: hours, minute: minutes, second: seconds)) ?? .distantPast
  }

  static let algorithms: [ASN1ObjectIdentifier: Certificate.SignatureAlgorithm] = [
    [1, 2, 840, 10045, 4, 3, 2]: .ecdsaWithSHA256, [1, 2, 840, 10045, 4, 3, 3]: .ecdsaWithSHA384,
    [1, 2, 840, 10045, 4, 3, 4]: .ecdsaWithSHA512, [1, 2, 840, 113549, 1, 1, 11]: .sha256WithRSAEncryption,
    [1, 2, 840, 113549, 1, 1, 12]: .sha384WithRSAEncryption, [1, 2, 840, 113549, 1, 1, 13]: .sha512WithRSAEncryption,
    [1, 3, 101, 112]: .ed25519,
  ]

  /// Checks that a CA among `authorities` (the trusted bundle) issued and signed this list; a
  /// list from anyone else, or with a bad signature, is refused whole.
  public func verify(issuedByOneOf authorities: [Certificate]) throws(Problem) {
    guard let algorithm = Self.algorithms[self.signatureAlgorithm] else {
      throw Problem("the CRL's signature algorithm \(self.signatureAlgorithm) is not supported")
    }
    let issuers = authorities.filter { $0.subject == self.issuer }
    guard !issuers.isEmpty else { throw Problem("the CRL's issuer (\(self.issuer)) is not a CA in the trusted bundle") }
    guard issuers.contains(where: { $0.publicKey.isValidSignature(self.signature, for: self.signedBytes, signatureAlgorithm: algorithm) })
    else {
      throw Problem("the CRL's signature does not verify with the key of \(self.issuer)")
    }
  }
}

extension CertificateAuthority {
  /// A CRL (DER) signed by this CA listing `serials`: for the development PKI and tests; a
  /// production CA writes its own.
  public func revocationList(
    revoking serials: [Certificate.SerialNumber], at time: Date = Date(), nextUpdate: TimeInterval = 7 * 86_400
  ) throws -> [UInt8] {
    func utc(_ date: Date) throws -> UTCTime {
      var calendar = Calendar(identifier: .gregorian)
      calendar.timeZone = TimeZone(identifier: "UTC")!
      let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
      return try UTCTime(
        year: parts.year!, month: parts.month!, day: parts.day!, hours: parts.hour!, minutes: parts.minute!, seconds: parts.second!)
    }
    let ecdsaWithSHA256: ASN1ObjectIdentifier = [1, 2, 840, 10045, 4, 3, 2]
    var tbs = DER.Serializer()
    try tbs.appendConstructedNode(identifier: .sequence) { s in
      try s.serialize(1)  // v2
      try s.appendConstructedNode(identifier: .sequence) { try $0.serialize(ecdsaWithSHA256) }
      try s.serialize(self.certificate.subject)
      try s.serialize(try utc(time))
      try s.serialize(try utc(time.addingTimeInterval(nextUpdate)))
      if !serials.isEmpty {
        try s.appendConstructedNode(identifier: .sequence) { list in
          for serial in serials {
            try list.appendConstructedNode(identifier: .sequence) { entry in
              try entry.serialize(ArraySlice(serial.bytes))
              try entry.serialize(try utc(time))
            }
          }
        }
      }
    }
    let signed = tbs.serializedBytes
    let signature = try self.privateKey.signature(for: signed).derRepresentation
    var crl = DER.Serializer()
    try crl.appendConstructedNode(identifier: .sequence) { s in
      s.serializeRawBytes(signed)
      try s.appendConstructedNode(identifier: .sequence) { try $0.serialize(ecdsaWithSHA256) }
      try s.serialize(ASN1BitString(bytes: ArraySlice(signature)))
    }
    return crl.serializedBytes
  }
}
