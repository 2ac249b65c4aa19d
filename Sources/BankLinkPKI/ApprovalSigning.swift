import BankLinkCore
import Crypto
import Foundation
import X509
import _CryptoExtras

/// What an approver signs: the approval digest of a payment at one level of its requirement
/// (docs/approvals.md, "The approval digest").
///
///     SHA-256( "banklink-approval-v1" ‖ str(payment_id)
///              ‖ str(debtor_account_id) ‖ str(creditor.name) ‖ str(creditor.account_number)
///              ‖ str(creditor.iban) ‖ str(creditor.bic) ‖ str(creditor.country)
///              ‖ i64(amount_minor) ‖ str(currency) ‖ str(purpose) ‖ str(requested_execution_date)
///              ‖ str(payment_type) ‖ u64(policy_version) ‖ u32(level) )
///
/// integers big-endian (i64 two's complement), `str` a u32 byte count then UTF-8. Every field
/// that moves money is in it: an approval signed for one payment, amount, beneficiary, policy or
/// level verifies for no other.
public enum ApprovalDigest {
  static let domain = "banklink-approval-v1"

  public static func digest(paymentID: String, instruction: PaymentInstruction, policyVersion: UInt64, level: Int) -> [UInt8] {
    var bytes = Array(Self.domain.utf8)
    func string(_ text: String) {
      let utf8 = Array(text.utf8)
      withUnsafeBytes(of: UInt32(utf8.count).bigEndian) { bytes += $0 }
      bytes += utf8
    }
    string(paymentID)
    string(instruction.debtorAccountID)
    string(instruction.creditor.name)
    string(instruction.creditor.accountNumber)
    string(instruction.creditor.iban)
    string(instruction.creditor.bic)
    string(instruction.creditor.country)
    withUnsafeBytes(of: instruction.amount.minorUnits.bigEndian) { bytes += $0 }
    string(instruction.amount.currency.code)
    string(instruction.purpose)
    string(instruction.requestedExecutionDate)
    string(instruction.type.rawValue)
    withUnsafeBytes(of: policyVersion.bigEndian) { bytes += $0 }
    withUnsafeBytes(of: UInt32(level).bigEndian) { bytes += $0 }
    return Array(SHA256.hash(data: bytes))
  }
}

/// Signatures made with certificate keys: the algorithm a key signs with, signing, checking.
public enum CertificateSignatures {
  /// ECDSA with SHA-256 (P-256) or SHA-384 (P-384), or RSA PKCS #1 v1.5 with SHA-256.
  public static func algorithm(for key: Certificate.PublicKey) throws -> Certificate.SignatureAlgorithm {
    if P256.Signing.PublicKey(key) != nil { return .ecdsaWithSHA256 }
    if P384.Signing.PublicKey(key) != nil { return .ecdsaWithSHA384 }
    if _RSA.Signing.PublicKey(key) != nil { return .sha256WithRSAEncryption }
    throw SignatureError("only P-256, P-384 and RSA keys sign here")
  }

  /// Signs `message` with `key` (DER for ECDSA); what `isValid` checks.
  public static func sign(_ message: [UInt8], with key: Certificate.PrivateKey) throws -> [UInt8] {
    try key.sign(bytes: message, signatureAlgorithm: try Self.algorithm(for: key.publicKey)).rawRepresentation
  }

  public static func isValid(_ signature: [UInt8], for message: [UInt8], by key: Certificate.PublicKey) -> Bool {
    guard let algorithm = try? Self.algorithm(for: key) else { return false }
    return key.isValidSignature(signature, for: message, signatureAlgorithm: algorithm)
  }
}

public struct SignatureError: Error, Sendable, CustomStringConvertible {
  public var description: String
  public init(_ description: String) { self.description = description }
}
