import BankLinkCore
import BankLinkJournal
import BankLinkStore
import Crypto
import Metrics

// The payment ledger's stored records: their keys and byte layouts, each in one place. The
// databases themselves are listed, with their keys and writers, in ``Database`` and in
// docs/architecture.md ("The LMDB schema").

/// Monotonic counters kept in `meta`.
enum Sequences {
  static let payment = Array("payment_sequence".utf8)
  static let outbox = Array("outbox_sequence".utf8)

  /// The next value of the counter under `key` (1 first), incremented in the caller's
  /// transaction: values are handed out in commit order.
  static func next(_ key: [UInt8], txn: inout WriteTransaction) throws -> UInt64 {
    var next: UInt64 = 1
    if let bytes = try txn.get(key, in: .meta) {
      var reader = RecordReader(bytes)
      next = try reader.readUInt64() + 1
    }
    var writer = RecordWriter(capacity: 8)
    writer.write(next)
    try txn.put(key, writer.bytes, in: .meta)
    return next
  }

  /// The key of a sequence-numbered record: 8 bytes big-endian, so LMDB's byte order is the
  /// numeric order.
  static func key(_ sequence: UInt64) -> [UInt8] {
    var writer = RecordWriter(capacity: 8)
    writer.write(sequence)
    return writer.bytes
  }
}

/// Payment ids. Issued inside the creating transaction from the payment sequence, fixed width,
/// so id order is commit order: a client paging `ListPayments` while payments are created
/// never misses one. `pay-s` sorts after the ids of earlier builds (`pay-<ms>-<n>`, which keep
/// working), so the order holds across the upgrade too.
enum PaymentIDs {
  static let prefix = "pay-s"
  static let digits = 15

  static func make(sequence: UInt64) -> String {
    let text = String(sequence)
    return prefix + String(repeating: "0", count: max(0, digits - text.count)) + text
  }
}

/// Something the bank sent that the daemon could not apply: recorded (audit, action
/// `bank.anomaly`), raised as a warning alert (kind `anomaly`) in the same transaction, and
/// logged at error level by whoever received it. Never dropped silently.
public struct BankAnomaly: Sendable, Hashable, CustomStringConvertible {
  /// What the anomaly is about: an EndToEndId, a payment id, an account id, a transaction id.
  public var subject: String
  public var description: String

  public init(subject: String, description: String) {
    self.subject = subject
    self.description = description
  }

  func record(_ txn: inout WriteTransaction, at time: Instant) throws {
    try AuditJournal.append(
      &txn, at: time, principal: "bank", action: "bank.anomaly", object: LogText.prefix(self.subject),
      details: ["description": self.description])
    try AlertLog.raise(
      &txn, at: time, severity: .warning, kind: .anomaly, message: "bank data not applied: \(self.description)",
      details: ["subject": LogText.prefix(self.subject)])
  }

  /// A feed the daemon cannot move past (its page's cursor breaks ``BankDataLimits``): every
  /// round fails the same way, so it is recorded once per episode — the first time, marked in
  /// `meta` under `stuck_feed/<feed>` — and the mark is cleared by the feed's next stored page
  /// (``feedMoved(_:_:)``). Returns whether this call recorded it.
  @discardableResult
  func recordStuckFeed(_ feed: String, _ txn: inout WriteTransaction, at time: Instant) throws -> Bool {
    let key = Self.stuckFeedKey(feed)
    guard try txn.get(key, in: .meta) == nil else { return false }
    try txn.put(key, [1], in: .meta)
    try self.record(&txn, at: time)
    return true
  }

  /// Ends a stuck-feed episode of `feed`, if one was recorded.
  static func feedMoved(_ feed: String, _ txn: inout WriteTransaction) throws {
    _ = try txn.delete(Self.stuckFeedKey(feed), in: .meta)
  }

  static func stuckFeedKey(_ feed: String) -> [UInt8] { Array("stuck_feed/\(feed)".utf8) }
}

/// Outbox entries (`outbox`, by sequence): a payment to deliver and the message id fixed for
/// every retry of its delivery.
enum OutboxRecord {
  static let recordFormat: UInt8 = 1

  static func enqueue(_ payment: Payment, txn: inout WriteTransaction) throws {
    let sequence = try Sequences.next(Sequences.outbox, txn: &txn)
    var record = RecordWriter(capacity: 64)
    record.write(Self.recordFormat)
    record.write(payment.id)
    // The message id is fixed here, once: every retry of this submission reuses it.
    record.write("MSG\(payment.endToEndID)")
    try txn.put(Sequences.key(sequence), record.bytes, in: .outbox)
  }

  static func decode(key: [UInt8], value: [UInt8]) throws -> PaymentLedger.OutboxEntry {
    var reader = RecordReader(value)
    guard try reader.readUInt8() == Self.recordFormat else {
      throw StoreError(code: .corrupted, message: "unknown outbox record format")
    }
    return PaymentLedger.OutboxEntry(key: key, paymentID: try reader.readString(), messageID: try reader.readString())
  }
}

/// Idempotency records (`idempotency`): (creator, 0x00, key) → fingerprint of the request, then
/// the payment id (single payments) or the batch id and every payment id (batches, whose keys
/// carry a `batch` 0x00 prefix).
enum IdempotencyRecord {
  static func key(creator: String, key: String) -> [UInt8] {
    Array(creator.utf8) + [0] + Array(key.utf8)
  }

  static func batchKey(creator: String, key: String) -> [UInt8] {
    Self.key(creator: creator, key: "batch\u{0}" + key)
  }

  /// What an idempotency record keeps of the request it guards: a SHA-256 digest of the
  /// canonical request, so that records stay small (one B-tree page holds ~40 of them) however
  /// long the request's texts are.
  static func fingerprint(_ canonical: [UInt8]) -> String {
    Self.fingerprintPrefix + Hex.encode(Array(SHA256.hash(data: canonical)))
  }

  static let fingerprintPrefix = "sha256:"

  /// Whether a stored fingerprint is that of `canonical`. Records written before digests were
  /// introduced hold the whole canonical request in hex, and are compared as such.
  static func fingerprint(_ stored: String, matches canonical: [UInt8]) -> Bool {
    if stored.hasPrefix(Self.fingerprintPrefix) { return stored == Self.fingerprint(canonical) }
    return stored == Hex.encode(canonical)
  }
}

extension WriteTransaction {
  /// Prometheus counter of payment state changes, by `from` (`new` for a created payment) and
  /// `to` state.
  static let paymentTransitionsMetric = "banklink_payment_transitions_total"

  /// Writes `payment`'s record under `key` (its id by default). A change of state is counted
  /// (``paymentTransitionsMetric``) once the write commits, never for a write that aborts.
  mutating func putPayment(_ payment: Payment, key: [UInt8]? = nil) throws {
    let key = key ?? Array(payment.id.utf8)
    // Only for the count: a record that does not decode never stops the write.
    let before = try self.get(key, in: .payments).flatMap { try? Payment(record: $0).status }
    try self.putPayment(payment, key: key, replacing: before)
  }

  /// ``putPayment(_:key:)`` for a caller that read the stored record in this transaction and
  /// knows its state (`nil`: there was none), so it is not read again.
  mutating func putPayment(_ payment: Payment, key: [UInt8]? = nil, replacing before: PaymentStatus?) throws {
    let key = key ?? Array(payment.id.utf8)
    try self.put(key, payment.record, in: .payments)
    guard before != payment.status else { return }
    let dimensions = [("from", before?.rawValue ?? "new"), ("to", payment.status.rawValue)]
    self.afterCommit { Counter(label: Self.paymentTransitionsMetric, dimensions: dimensions).increment() }
  }
}
