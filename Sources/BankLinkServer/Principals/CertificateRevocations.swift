import BankLinkCore
import BankLinkJournal
import BankLinkPKI
import BankLinkStore
import Crypto
import Foundation
import Synchronization
import SwiftASN1
import X509

/// The client certificates refused although their chain verifies: revoked with
/// `RevokeCertificate` (stored in `revocations`, journaled) or listed in the CRL file
/// (`tls.crl_file`, read at start and on reload). Checked at each TLS handshake and again on
/// **every call**, so a certificate revoked, or one that expires, is refused on its next call
/// even on a connection opened before.
public final class CertificateRevocations: Sendable {
  /// What is revoked, as stored keys (`serial/…`, `sha256/…`, `identity/…`).
  public enum Target: Sendable, Hashable, CustomStringConvertible {
    case serial(String)
    case fingerprint(String)
    case identity(String)

    var key: String {
      switch self {
      case .serial(let hex): "serial/" + hex
      case .fingerprint(let hex): "sha256/" + hex
      case .identity(let identity): "identity/" + identity
      }
    }

    public var description: String {
      switch self {
      case .serial(let hex): "serial \(hex)"
      case .fingerprint(let hex): "SHA-256 fingerprint \(hex)"
      case .identity(let identity): "every certificate of '\(identity)'"
      }
    }
  }

  private struct State {
    /// Stored key → reason.
    var stored: [String: String] = [:] {
      didSet { self.changed() }
    }
    /// Serials listed in the CRL file.
    var listed: Set<String> = [] {
      didSet { self.changed() }
    }
    /// Whether any stored revocation is by fingerprint (kept on change, not scanned per call).
    private(set) var anyFingerprint = false
    /// Bumped on every change: a decision taken at one version holds until the next.
    private(set) var version: UInt64 = 0

    private mutating func changed() {
      self.version &+= 1
      self.anyFingerprint = self.stored.keys.contains { $0.hasPrefix("sha256/") }
    }
  }

  private let state = Mutex(State())
  let now: @Sendable () -> Date

  public init(now: @escaping @Sendable () -> Date = { Date() }) {
    self.now = now
  }

  /// Reads the stored revocations: at start, before serving.
  public func load(from store: Store) throws {
    var stored: [String: String] = [:]
    try store.withReadTransaction { txn in
      try txn.scan(.revocations) { key, value in
        var reader = RecordReader(value)
        stored[String(decoding: key, as: UTF8.self)] = try reader.readString()
        return true
      }
    }
    self.state.withLock { $0.stored = stored }
  }

  /// Puts a CRL's serials in force (replacing the previous file's).
  public func replaceListed(_ serials: Set<String>) {
    let canonical = Set(serials.compactMap(Self.canonicalSerial))
    self.state.withLock { $0.listed = canonical }
  }

  // MARK: CRL freshness

  /// `meta` key of the newest CRL of an issuer put in force: its `thisUpdate`, in ms.
  static func issuedKey(_ list: CertificateRevocationList) -> [UInt8] {
    Array("crl_issued/".utf8) + Array(Hex.encode(Array(SHA256.hash(data: Array(String(describing: list.issuer).utf8)))).utf8)
  }

  /// Refuses a CRL issued before the newest list of the same CA put in force (at a start or a
  /// reload, remembered in the store): putting it in force would un-revoke every certificate
  /// revoked since (a configuration rolled back, an old copy of the file).
  public static func checkNotOlder(_ list: CertificateRevocationList, in store: Store) throws {
    _ = try store.withReadTransaction { try Self.newestInForce(beside: list, txn: $0) }
  }

  /// Remembers `list` as the newest of its CA put in force, in `txn` — and refuses it there if
  /// a newer one was put in force since it was checked (two reloads at once).
  public static func recordInForce(_ list: CertificateRevocationList, txn: inout WriteTransaction) throws {
    if let newest = try Self.newestInForce(beside: list, txn: txn), newest >= Self.issued(list) { return }
    var record = RecordWriter(capacity: 8)
    record.write(Self.issued(list))
    try txn.put(Self.issuedKey(list), record.bytes, in: .meta)
  }

  /// `thisUpdate` of the newest list of `list`'s CA put in force (nil: none yet); throws when
  /// `list` is older than it.
  private static func newestInForce(beside list: CertificateRevocationList, txn: some ReadableTransaction) throws -> Int64? {
    guard let bytes = try txn.get(Self.issuedKey(list), in: .meta) else { return nil }
    var reader = RecordReader(bytes)
    let newest = try reader.readInt64()
    let issued = Self.issued(list)
    guard issued >= newest else {
      throw CertificateRevocationList.Problem(
        "this CRL was issued at \(Instant(millisecondsSinceEpoch: issued).isoTimestamp), before the list of the same CA put in "
          + "force (issued at \(Instant(millisecondsSinceEpoch: newest).isoTimestamp)): an older list would un-revoke the "
          + "certificates revoked since")
    }
    return newest
  }

  private static func issued(_ list: CertificateRevocationList) -> Int64 {
    Int64((list.thisUpdate.timeIntervalSince1970 * 1000).rounded(.down))
  }

  public var counts: (stored: Int, listed: Int) {
    self.state.withLock { ($0.stored.count, $0.listed.count) }
  }

  /// A serial number as compared: lower-case hex without separators or leading zeros, so that
  /// `openssl x509 -serial` (no sign byte), `-text` (colons) and the DER bytes (a leading 00
  /// before a high bit) name the same certificate. Nil when it is not hex.
  public static func canonicalSerial(_ text: String) -> String? {
    let digits = text.lowercased().filter { $0 != ":" && $0 != " " }
    guard !digits.isEmpty, digits.allSatisfy(\.isHexDigit) else { return nil }
    let trimmed = digits.drop { $0 == "0" }
    return trimmed.isEmpty ? "0" : String(trimmed)
  }

  /// A SHA-256 fingerprint as compared: 64 lower-case hex digits. Nil when it is not one.
  public static func canonicalFingerprint(_ text: String) -> String? {
    let digits = text.lowercased().filter { $0 != ":" && $0 != " " }
    guard digits.utf8.count == 64, digits.allSatisfy(\.isHexDigit) else { return nil }
    return digits
  }

  /// Lower-case hex SHA-256 of the certificate's DER encoding, as `openssl x509 -fingerprint
  /// -sha256` prints it (without the colons).
  public static func fingerprint(_ certificate: Certificate) -> String? {
    var serializer = DER.Serializer()
    guard (try? serializer.serialize(certificate)) != nil else { return nil }
    return Hex.encode(SHA256.hash(data: serializer.serializedBytes))
  }

  /// Why `certificate` (presented as `identity`, when one was derived) must be refused now, or
  /// nil: revoked by serial, fingerprint or identity, listed in the CRL, or outside its validity.
  public func refusal(for certificate: Certificate, identity: String?) -> String? {
    self.validityRefusal(certificate) ?? self.revocationRefusal(for: certificate, identity: identity).refusal
  }

  /// Why `certificate` is outside its validity period now, or nil.
  func validityRefusal(_ certificate: Certificate) -> String? {
    let time = self.now()
    if time > certificate.notValidAfter { return "the client certificate expired at \(certificate.notValidAfter)" }
    if time < certificate.notValidBefore { return "the client certificate is not valid before \(certificate.notValidBefore)" }
    return nil
  }

  /// The version of what is revoked: it changes with every revocation, load and CRL.
  var version: UInt64 { self.state.withLock { $0.version } }

  /// Why `certificate` (as `identity`) is revoked, or nil, with the ``version`` the answer holds
  /// for (a connection keeps it until the version moves: ``ConnectionPeers/Peer``).
  func revocationRefusal(for certificate: Certificate, identity: String?) -> (refusal: String?, version: UInt64) {
    let serial = Self.canonicalSerial(certificate.serialNumber.hex) ?? certificate.serialNumber.hex
    let (reason, checkFingerprint, version) = self.state.withLock { state -> (String?, Bool, UInt64) in
      if let reason = state.stored["serial/" + serial] { return ("revoked (serial \(serial)): \(reason)", false, state.version) }
      if state.listed.contains(serial) { return ("revoked (serial \(serial) is listed in the CRL)", false, state.version) }
      if let identity, let reason = state.stored["identity/" + identity] {
        return ("revoked (identity '\(identity)'): \(reason)", false, state.version)
      }
      return (nil, state.anyFingerprint, state.version)
    }
    if let reason { return (reason, version) }
    // A fingerprint needs the DER encoding hashed: only when some revocation is by fingerprint.
    guard checkFingerprint, let fingerprint = Self.fingerprint(certificate) else { return (nil, version) }
    return self.state.withLock { state in
      // Read again: a change in between moves the version, so the answer is never cached stale.
      (state.stored["sha256/" + fingerprint].map { "revoked (SHA-256 \(fingerprint)): \($0)" }, min(version, state.version))
    }
  }

  /// The reason in force for `target`, if it is revoked by a stored record.
  func reason(for target: Target) -> String? {
    self.state.withLock { $0.stored[target.key] }
  }

  /// Whether `identity` as a whole is revoked.
  public func isRevoked(identity: String) -> Bool {
    self.state.withLock { $0.stored["identity/" + identity] != nil }
  }

  /// Stores and journals a revocation by `admin`, then puts it in force. Revoking what is revoked
  /// already keeps the first record and journals nothing new. Either way the revocation is in
  /// force before this returns: a second call that finds the first one's record stored does not
  /// answer `already revoked` while the first call has yet to put it in force.
  /// Revoking an identity would leave no admin whose certificates are not revoked.
  public struct LastAdmin: Error, Sendable, Hashable {
    public var identity: String
  }

  /// `registry`: for an identity, checks in the same transaction that an admin is left
  /// (``LastAdmin`` otherwise, nothing written) — two admins revoking each other at once
  /// cannot together lock every admin out.
  public func revoke(
    _ target: Target, reason: String, by admin: String, writer: GroupCommitWriter, registry: PrincipalRegistry? = nil, at instant: Instant
  ) async throws -> (receipt: JournalReceipt?, alreadyRevoked: Bool) {
    let key = Array(target.key.utf8)
    let outcome: (receipt: JournalReceipt?, already: Bool, reason: String) = try await writer.write { txn in
      if case .identity(let identity) = target, let registry, try txn.get(key, in: .revocations) == nil {
        let table = try registry.table(in: txn)
        if table.principal(for: identity)?.holds(.admin) == true,
          try PrincipalRegistry.usableAdmins(in: table, excluding: identity, txn: txn) == 0
        {
          throw LastAdmin(identity: identity)
        }
      }
      if let stored = try txn.get(key, in: .revocations) {
        // A record that does not decode is still a revocation: put in force with this reason.
        var reader = RecordReader(stored)
        return (nil, true, (try? reader.readString()) ?? reason)
      }
      var record = RecordWriter(capacity: 64 + reason.utf8.count)
      record.write(reason)
      record.write(admin)
      record.write(instant.millisecondsSinceEpoch)
      try txn.put(key, record.bytes, in: .revocations)
      let receipt = try AuditJournal.append(
        &txn, at: instant, principal: admin, action: "certificate.revoked", object: "certificates/" + target.key,
        details: ["target": target.description, "reason": reason])
      return (receipt, false, reason)
    }
    self.state.withLock { state in
      if state.stored[target.key] == nil { state.stored[target.key] = outcome.reason }
    }
    return (outcome.receipt, outcome.already)
  }
}
