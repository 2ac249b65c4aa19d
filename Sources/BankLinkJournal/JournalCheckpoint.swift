import BankLinkCore
import BankLinkPKI
import BankLinkStore
import Crypto
import Foundation
import SwiftASN1
import X509

/// Signed checkpoints: the daemon signs the journal's head (sequence and hash) with the private
/// key of its own TLS certificate and appends the signature as a `journal.checkpoint` entry. An
/// auditor holding only the daemon's certificate can then check an export: rewriting history
/// before a checkpoint needs a new signature, which needs the daemon's key.
///
/// The signed message (docs/audit.md, "Checkpoints"):
///
///     "banklink-checkpoint-v1" ‖ u64(signed_sequence) ‖ signed_hash (32 bytes)
///
/// signed with ECDSA (DER signature) or RSA PKCS #1 v1.5, SHA-256 (SHA-384 for P-384 keys), as
/// `openssl dgst -sha256 -verify` checks it.
public enum JournalCheckpoint {
  public static let action = "journal.checkpoint"
  public static let object = "journal"
  static let domain = "banklink-checkpoint-v1"
  /// `meta` key: the sequence of the last checkpoint entry.
  static let lastKey = Array("audit_last_checkpoint".utf8)

  /// The sequence of the last checkpoint entry, or 0.
  public static func lastCheckpoint(_ txn: some ReadableTransaction) throws -> UInt64 {
    guard let bytes = try txn.get(Self.lastKey, in: .meta) else { return 0 }
    var reader = RecordReader(bytes)
    return try reader.readUInt64()
  }

  /// The bytes signed for head `sequence` with hash `hash`.
  public static func message(sequence: UInt64, hash: [UInt8]) -> [UInt8] {
    var bytes = Array(Self.domain.utf8)
    withUnsafeBytes(of: sequence.bigEndian) { bytes += $0 }
    bytes += hash
    return bytes
  }

  /// The daemon's signing identity: its TLS private key and certificate.
  public struct Signer: Sendable {
    let key: Certificate.PrivateKey
    let algorithm: Certificate.SignatureAlgorithm
    /// SHA-256 of the certificate's DER, named in each checkpoint so that a verifier knows which
    /// certificate to check it with (the daemon's certificate is renewed over the years).
    public let certificateDigest: String

    public init(certificatePEM: String, privateKeyPEM: String) throws {
      let certificate = try Certificate(pemEncoded: certificatePEM)
      self.key = try Certificate.PrivateKey(pemEncoded: privateKeyPEM)
      guard self.key.publicKey == certificate.publicKey else {
        throw CheckpointError("the private key does not belong to the certificate")
      }
      self.algorithm = try CertificateSignatures.algorithm(for: certificate.publicKey)
      self.certificateDigest = try JournalCheckpoint.digest(of: certificate)
    }

    /// Appends a checkpoint of the current head inside `txn`, unless the head is already a
    /// checkpoint or the journal is empty. Returns its receipt.
    public func checkpoint(_ txn: inout WriteTransaction, at time: Instant) throws -> JournalReceipt? {
      guard let head = try AuditJournal.head(txn) else { return nil }
      if let last = try AuditJournal.entry(head.sequence, in: txn), last.action == JournalCheckpoint.action { return nil }
      let signature = try self.key.sign(
        bytes: JournalCheckpoint.message(sequence: head.sequence, hash: head.entryHash), signatureAlgorithm: self.algorithm)
      let receipt = try AuditJournal.append(
        &txn, at: time, principal: "system", action: JournalCheckpoint.action, object: JournalCheckpoint.object,
        details: [
          "signed_sequence": String(head.sequence),
          "signed_hash": Hex.encode(head.entryHash),
          "algorithm": JournalCheckpoint.name(of: self.algorithm),
          "signature": Data(signature.rawRepresentation).base64EncodedString(),
          "certificate_sha256": self.certificateDigest,
        ])
      var last = RecordWriter(capacity: 8)
      last.write(receipt.sequence)
      try txn.put(JournalCheckpoint.lastKey, last.bytes, in: .meta)
      return receipt
    }
  }

  /// What a verifier checks checkpoints with.
  public struct Verifier: Sendable {
    let publicKey: Certificate.PublicKey
    let algorithm: Certificate.SignatureAlgorithm
    public let certificateDigest: String

    public init(certificatePEM: String) throws {
      let certificate = try Certificate(pemEncoded: certificatePEM)
      self.publicKey = certificate.publicKey
      self.algorithm = try CertificateSignatures.algorithm(for: certificate.publicKey)
      self.certificateDigest = try JournalCheckpoint.digest(of: certificate)
    }

    public enum Outcome: Sendable, Hashable {
      case verified
      /// Signed with another certificate (an earlier or later one of the daemon's): not checked.
      case otherCertificate
      case invalid(String)
    }

    /// Checks checkpoint `entry`: it signs exactly the entry before it, with this certificate.
    public func check(_ entry: AuditEntry) -> Outcome {
      let fields = entry.details
      guard let sequenceText = fields["signed_sequence"], let sequence = UInt64(sequenceText),
        let hashText = fields["signed_hash"], let hash = Hex.decode(hashText),
        let signatureText = fields["signature"], let signature = Data(base64Encoded: signatureText),
        let certificate = fields["certificate_sha256"]
      else { return .invalid("checkpoint \(entry.sequence) is malformed") }
      guard sequence == entry.sequence - 1, hash == entry.previousHash else {
        return .invalid("checkpoint \(entry.sequence) signs entry \(sequence), not the entry before it")
      }
      guard certificate == self.certificateDigest else { return .otherCertificate }
      let message = JournalCheckpoint.message(sequence: sequence, hash: hash)
      guard self.publicKey.isValidSignature(signature, for: message, signatureAlgorithm: self.algorithm) else {
        return .invalid("checkpoint \(entry.sequence) has a signature the daemon's certificate does not verify")
      }
      return .verified
    }
  }

  /// OpenSSL's name of the algorithm (`openssl dgst` takes the digest; the key gives the rest).
  static func name(of algorithm: Certificate.SignatureAlgorithm) -> String {
    switch algorithm {
    case .ecdsaWithSHA256: "ecdsa-with-SHA256"
    case .ecdsaWithSHA384: "ecdsa-with-SHA384"
    case .sha256WithRSAEncryption: "sha256WithRSAEncryption"
    default: "\(algorithm)"
    }
  }

  static func digest(of certificate: Certificate) throws -> String {
    var serializer = DER.Serializer()
    try serializer.serialize(certificate)
    return Hex.encode(Array(SHA256.hash(data: serializer.serializedBytes)))
  }
}

public struct CheckpointError: Error, Sendable, CustomStringConvertible {
  public var description: String
  init(_ description: String) { self.description = description }
}
