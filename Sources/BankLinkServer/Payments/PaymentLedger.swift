import BankLinkCore
import BankLinkStore
import Crypto

/// The payment use cases over the store: create (idempotent, validated, funds reserved),
/// read, list and cancel. Every mutation runs through the ``GroupCommitWriter`` and writes its
/// payment, idempotency record, reservation, outbox entry and audit record in one transaction.
public struct PaymentLedger: Sendable {
  public struct Configuration: Sendable {
    /// Payments of at least this many minor units wait in `pending_approval`; smaller ones are
    /// released to the bank at once. Stands in for the approval policy until it is built.
    public var approvalThresholdMinorUnits: Int64

    public init(approvalThresholdMinorUnits: Int64 = 100_000_000) {
      self.approvalThresholdMinorUnits = approvalThresholdMinorUnits
    }
  }

  public let writer: GroupCommitWriter
  public let configuration: Configuration
  let now: @Sendable () -> Instant

  public init(writer: GroupCommitWriter, configuration: Configuration, now: @escaping @Sendable () -> Instant) {
    self.writer = writer
    self.configuration = configuration
    self.now = now
  }

  var store: Store { self.writer.store }

  /// Why a create or cancel was refused; mapped to gRPC statuses by the handler.
  public enum Refusal: Error, Sendable, Hashable {
    case invalid([FieldViolation])
    case accountNotFound(String)
    case accountNotActive(String, AccountStatus)
    case insufficientFunds(available: Int64, requested: Int64, currency: CurrencyCode)
    case idempotencyConflict(key: String, paymentID: String)
    case paymentNotFound(String)
    case notCreator(paymentID: String)
    case notCancellable(paymentID: String, status: PaymentStatus)
    case batchRejected([BatchItemRefusal])
  }

  public struct BatchItemRefusal: Sendable, Hashable {
    public var index: Int
    public var refusal: Refusal
  }

  public struct Created: Sendable, Hashable {
    public var payment: Payment
    /// True when an earlier call with the same key already created it.
    public var replayed: Bool
  }

  // MARK: Keys

  static func idempotencyKey(creator: String, key: String) -> [UInt8] {
    Array(creator.utf8) + [0] + Array(key.utf8)
  }

  static let paymentSequenceKey = Array("payment_sequence".utf8)
  static let auditSequenceKey = Array("audit_sequence".utf8)
  static let outboxSequenceKey = Array("outbox_sequence".utf8)

  // MARK: Create

  /// Creates a payment, or returns the one an earlier call with the same key created.
  public func create(_ instruction: PaymentInstruction, idempotencyKey: String, creator: String) async throws -> Created {
    let today = self.now().isoDate
    let violations = PaymentValidation.violations(of: instruction, today: today)
    guard violations.isEmpty else { throw Refusal.invalid(violations) }
    let threshold = self.configuration.approvalThresholdMinorUnits
    let now = self.now()
    return try await self.writer.write { txn in
      let idemKey = Self.idempotencyKey(creator: creator, key: idempotencyKey)
      let canonical = instruction.canonicalRecord
      if let existing = try txn.get(idemKey, in: .idempotency) {
        var reader = RecordReader(existing)
        let storedRequest = try reader.readString()
        let paymentID = try reader.readString()
        guard Self.fingerprint(storedRequest, matches: canonical) else {
          throw Refusal.idempotencyConflict(key: idempotencyKey, paymentID: paymentID)
        }
        guard let bytes = try txn.get(Array(paymentID.utf8), in: .payments) else {
          throw StoreError(code: .corrupted, message: "idempotency record points at missing payment \(paymentID)")
        }
        return Created(payment: try Payment(record: bytes), replayed: true)
      }

      let payment = try Self.insert(
        instruction, field: "instruction.", creator: creator, idempotencyKey: idempotencyKey, batchID: "",
        threshold: threshold, at: now, txn: &txn)
      let id = payment.id
      var record = RecordWriter(capacity: 128)
      record.write(Self.fingerprint(canonical))
      record.write(id)
      try txn.put(idemKey, record.bytes, in: .idempotency)
      return Created(payment: payment, replayed: false)
    }
  }

  /// Creates one payment inside the caller's transaction: account and funds checks, state,
  /// reservation, outbox entry and audit records.
  static func insert(
    _ instruction: PaymentInstruction, field: String, creator: String, idempotencyKey: String, batchID: String,
    threshold: Int64, at now: Instant, txn: inout WriteTransaction
  ) throws -> Payment {
    let account = try Self.account(instruction.debtorAccountID, txn: txn)
    guard account.currency == instruction.amount.currency else {
      throw Refusal.invalid([
        FieldViolation(
          field: field + "amount.currency_code",
          description: "must be the debtor account's currency \(account.currency), not \(instruction.amount.currency)")
      ])
    }
    guard account.status == .active else { throw Refusal.accountNotActive(account.id, account.status) }
    let available = try Self.available(account.id, txn: txn)
    guard instruction.amount.minorUnits <= available else {
      throw Refusal.insufficientFunds(available: available, requested: instruction.amount.minorUnits, currency: account.currency)
    }
    let sequence = try Self.nextSequence(Self.paymentSequenceKey, txn: &txn)
    let id = "pay-\(now.millisecondsSinceEpoch)-\(sequence)"
    var payment = Payment(
      id: id, instruction: instruction, status: .pendingRisk, creator: creator, idempotencyKey: idempotencyKey,
      endToEndID: "BL\(now.millisecondsSinceEpoch)\(sequence)", batchID: batchID, createdAt: now, updatedAt: now)
    try Self.audit(&txn, at: now, principal: creator, action: "payment.created", object: id, detail: "\(instruction.amount)")
    // No risk evaluator yet: every payment clears risk; the threshold stands in for policy.
    _ = payment.apply(.riskCleared(needsApproval: instruction.amount.minorUnits >= threshold), at: now)
    try Self.audit(&txn, at: now, principal: "system", action: "payment.\(payment.status.rawValue)", object: id, detail: "")
    if payment.status == .approved {
      try Self.enqueueOutbox(payment, txn: &txn)
    }
    try txn.put(Array(id.utf8), payment.record, in: .payments)
    try txn.put(Array(payment.endToEndID.utf8), Array(id.utf8), in: .paymentsByEndToEnd)
    try Self.reserve(payment, txn: &txn)
    return payment
  }

  // MARK: Batch

  public struct CreatedBatch: Sendable, Hashable {
    public var batchID: String
    public var payments: [Payment]
    public var replayed: Bool
  }

  /// Creates every item of a batch or none: a refusal of any item (validation, funds, account)
  /// rolls the whole batch back and reports every failing item by index.
  public func createBatch(_ items: [PaymentInstruction], idempotencyKey: String, creator: String) async throws -> CreatedBatch {
    guard !items.isEmpty else { throw Refusal.invalid([FieldViolation(field: "items", description: "must not be empty")]) }
    guard items.count <= Limits.maxBatchItems else {
      throw Refusal.invalid([FieldViolation(field: "items", description: "at most \(Limits.maxBatchItems) items per batch")])
    }
    let today = self.now().isoDate
    let violations = items.enumerated().flatMap { index, item in
      PaymentValidation.violations(of: item, today: today, prefix: "items[\(index)].")
    }
    guard violations.isEmpty else { throw Refusal.invalid(violations) }
    let threshold = self.configuration.approvalThresholdMinorUnits
    let now = self.now()
    return try await self.writer.write { txn in
      let idemKey = Self.idempotencyKey(creator: creator, key: "batch\u{0}" + idempotencyKey)
      var canonical: [UInt8] = []
      for item in items { canonical += item.canonicalRecord }
      let fingerprint = Self.fingerprint(canonical)
      if let existing = try txn.get(idemKey, in: .idempotency) {
        var reader = RecordReader(existing)
        guard Self.fingerprint(try reader.readString(), matches: canonical) else {
          throw Refusal.idempotencyConflict(key: idempotencyKey, paymentID: "")
        }
        let batchID = try reader.readString()
        var payments: [Payment] = []
        while !reader.isAtEnd {
          let id = try reader.readString()
          guard let bytes = try txn.get(Array(id.utf8), in: .payments) else {
            throw StoreError(code: .corrupted, message: "batch \(batchID) points at missing payment \(id)")
          }
          payments.append(try Payment(record: bytes))
        }
        return CreatedBatch(batchID: batchID, payments: payments, replayed: true)
      }
      let sequence = try Self.nextSequence(Self.paymentSequenceKey, txn: &txn)
      let batchID = "batch-\(now.millisecondsSinceEpoch)-\(sequence)"
      var payments: [Payment] = []
      var failures: [(Int, Refusal)] = []
      for (index, item) in items.enumerated() {
        do {
          // Each item in its own nested transaction so that every failing item is reported;
          // any failure aborts the whole batch below.
          let payment = try txn.withNestedTransaction { nested in
            try Self.insert(
              item, field: "items[\(index)].", creator: creator, idempotencyKey: "\(idempotencyKey)#\(index)",
              batchID: batchID, threshold: threshold, at: now, txn: &nested)
          }
          payments.append(payment)
        } catch let refusal as Refusal {
          failures.append((index, refusal))
        }
      }
      if !failures.isEmpty { throw Refusal.batchRejected(failures.map { BatchItemRefusal(index: $0.0, refusal: $0.1) }) }
      var record = RecordWriter(capacity: fingerprint.utf8.count + 32 * payments.count)
      record.write(fingerprint)
      record.write(batchID)
      for payment in payments { record.write(payment.id) }
      try txn.put(idemKey, record.bytes, in: .idempotency)
      try Self.audit(&txn, at: now, principal: creator, action: "batch.created", object: batchID, detail: "\(payments.count) payments")
      return CreatedBatch(batchID: batchID, payments: payments, replayed: false)
    }
  }

  // MARK: Read

  public func payment(_ id: String) throws -> Payment? {
    try self.store.withReadTransaction { txn in
      try txn.get(Array(id.utf8), in: .payments).map(Payment.init(record:))
    }
  }

  public struct Filter: Sendable {
    public var statuses: Set<PaymentStatus> = []
    public var debtorAccountID = ""
    public var creator = ""
    public var createdFrom: Instant?
    public var createdBefore: Instant?

    public init() {}

    func matches(_ payment: Payment) -> Bool {
      (self.statuses.isEmpty || self.statuses.contains(payment.status))
        && (self.debtorAccountID.isEmpty || payment.instruction.debtorAccountID == self.debtorAccountID)
        && (self.creator.isEmpty || payment.creator == self.creator)
        && (self.createdFrom.map { payment.createdAt >= $0 } ?? true)
        && (self.createdBefore.map { payment.createdAt < $0 } ?? true)
    }
  }

  /// One page of ``list(_:after:limit:scanLimit:)``.
  public struct Page: Sendable {
    public var payments: [Payment]
    /// The payment id the next page starts after, or nil when no later payment matches.
    public var resumeAfter: String?
  }

  /// Payments matching `filter` in id order after `afterID`, at most `limit` of them.
  ///
  /// The scan reads at most `scanLimit` payments, so a call costs the same on a long history
  /// with a selective filter as on a short one: when the budget runs out first the page is
  /// short (possibly empty) and `resumeAfter` names the last payment read. Callers page on
  /// until `resumeAfter` is nil.
  public func list(
    _ filter: Filter, after afterID: String?, limit: Int, scanLimit: Int = Limits.maxListScanRecords
  ) throws -> Page {
    let budget = max(1, scanLimit)
    return try self.store.withReadTransaction { txn in
      var found: [Payment] = []
      var scanned = 0
      var lastRead: String?
      var resumeAfter: String?
      let start = afterID.map { Array($0.utf8) + [0] }
      try txn.scan(.payments, from: start) { _, value in
        if scanned == budget {
          // More payments follow, none of them read: continue after the last one read.
          resumeAfter = lastRead
          return false
        }
        scanned += 1
        let payment = try Payment(record: value)
        lastRead = payment.id
        guard filter.matches(payment) else { return true }
        if found.count == limit {
          resumeAfter = found.last?.id
          return false
        }
        found.append(payment)
        return true
      }
      return Page(payments: found, resumeAfter: resumeAfter)
    }
  }

  /// Available balance = ledger (from the cache) − reservations of payments in flight.
  public func available(accountID: String) throws -> Int64? {
    try self.store.withReadTransaction { txn in
      guard try txn.get(Array(accountID.utf8), in: .balances) != nil else { return nil }
      return try Self.available(accountID, reading: txn)
    }
  }

  // MARK: Cancel

  /// Cancels a payment not yet handed to the bank, by its creator or an admin. Cancelling an
  /// already cancelled payment returns it unchanged.
  public func cancel(_ id: String, by principal: String, isAdmin: Bool, reason: String) async throws -> Payment {
    let now = self.now()
    return try await self.writer.write { txn in
      guard let bytes = try txn.get(Array(id.utf8), in: .payments) else { throw Refusal.paymentNotFound(id) }
      var payment = try Payment(record: bytes)
      guard payment.creator == principal || isAdmin else { throw Refusal.notCreator(paymentID: id) }
      if payment.status == .cancelled { return payment }
      guard case .success = payment.apply(.cancelled, at: now, reason: reason) else {
        throw Refusal.notCancellable(paymentID: id, status: payment.status)
      }
      try Self.releaseIfDue(payment, txn: &txn)
      try txn.put(Array(id.utf8), payment.record, in: .payments)
      try Self.audit(&txn, at: now, principal: principal, action: "payment.cancelled", object: id, detail: reason)
      return payment
    }
  }

  // MARK: Helpers

  static func account(_ id: String, txn: WriteTransaction) throws -> Account {
    guard let bytes = try txn.get(Array(id.utf8), in: .accounts) else { throw Refusal.accountNotFound(id) }
    return try Account(record: bytes)
  }

  static func reserved(_ accountID: String, _ get: ([UInt8]) throws -> [UInt8]?) throws -> Int64 {
    guard let bytes = try get(Array(accountID.utf8)) else { return 0 }
    var reader = RecordReader(bytes)
    return try reader.readInt64()
  }

  static func ledger(_ accountID: String, _ get: ([UInt8]) throws -> [UInt8]?) throws -> Int64 {
    guard let bytes = try get(Array(accountID.utf8)) else { return 0 }
    return try AccountCache.decodeBalance(accountID, bytes).balance.ledger.minorUnits
  }

  static func available(_ accountID: String, txn: WriteTransaction) throws -> Int64 {
    try ledger(accountID) { try txn.get($0, in: .balances) } - reserved(accountID) { try txn.get($0, in: .reservations) }
  }

  static func available(_ accountID: String, reading txn: ReadTransaction) throws -> Int64 {
    try ledger(accountID) { try txn.get($0, in: .balances) } - reserved(accountID) { try txn.get($0, in: .reservations) }
  }

  static func adjustReservation(_ accountID: String, by delta: Int64, txn: inout WriteTransaction) throws {
    let current = try reserved(accountID) { try txn.get($0, in: .reservations) }
    var writer = RecordWriter(capacity: 8)
    writer.write(current + delta)
    try txn.put(Array(accountID.utf8), writer.bytes, in: .reservations)
  }

  static func reserve(_ payment: Payment, txn: inout WriteTransaction) throws {
    var amount = RecordWriter(capacity: 8)
    amount.write(payment.instruction.amount.minorUnits)
    try txn.put(Array(payment.id.utf8), amount.bytes, in: .paymentReservations)
    try adjustReservation(payment.instruction.debtorAccountID, by: payment.instruction.amount.minorUnits, txn: &txn)
  }

  /// Releases the payment's reservation once it no longer needs one: at once when it ends
  /// without paying, and for a settled payment only once the account cache holds the booked
  /// debit (so available never counts the money twice, nor frees it before the ledger shows
  /// it gone). Idempotent.
  static func releaseIfDue(_ payment: Payment, txn: inout WriteTransaction) throws {
    let due: Bool
    switch payment.status {
    case .settled:
      due = try txn.get(Array(payment.endToEndID.utf8), in: .bookedEndToEnd) != nil
    default:
      due = !payment.status.holdsReservation
    }
    guard due, let bytes = try txn.get(Array(payment.id.utf8), in: .paymentReservations) else { return }
    var reader = RecordReader(bytes)
    let amount = try reader.readInt64()
    try txn.delete(Array(payment.id.utf8), in: .paymentReservations)
    try adjustReservation(payment.instruction.debtorAccountID, by: -amount, txn: &txn)
  }

  static func nextSequence(_ key: [UInt8], txn: inout WriteTransaction) throws -> UInt64 {
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

  /// Appends an audit record in the caller's transaction (hash chaining comes with the journal).
  static func audit(_ txn: inout WriteTransaction, at time: Instant, principal: String, action: String, object: String, detail: String) throws {
    let sequence = try nextSequence(auditSequenceKey, txn: &txn)
    var key = RecordWriter(capacity: 8)
    key.write(sequence)
    var record = RecordWriter(capacity: 96)
    record.write(UInt8(1))
    record.write(time.millisecondsSinceEpoch)
    record.write(principal)
    record.write(action)
    record.write(object)
    record.write(detail)
    try txn.put(key.bytes, record.bytes, in: .audit)
  }

  static func enqueueOutbox(_ payment: Payment, txn: inout WriteTransaction) throws {
    let sequence = try nextSequence(outboxSequenceKey, txn: &txn)
    var key = RecordWriter(capacity: 8)
    key.write(sequence)
    var record = RecordWriter(capacity: 64)
    record.write(UInt8(1))
    record.write(payment.id)
    // The message id is fixed here, once: every retry of this submission reuses it.
    record.write("MSG\(payment.endToEndID)")
    try txn.put(key.bytes, record.bytes, in: .outbox)
  }

  /// What an idempotency record keeps of the request it guards: a SHA-256 digest of the
  /// canonical request, so that records stay small (one B-tree page holds ~40 of them) however
  /// long the request's texts are.
  static func fingerprint(_ canonical: [UInt8]) -> String {
    Self.fingerprintPrefix + Self.hex(Array(SHA256.hash(data: canonical)))
  }

  static let fingerprintPrefix = "sha256:"

  /// Whether a stored fingerprint is that of `canonical`. Records written before digests were
  /// introduced hold the whole canonical request in hex, and are compared as such.
  static func fingerprint(_ stored: String, matches canonical: [UInt8]) -> Bool {
    if stored.hasPrefix(Self.fingerprintPrefix) { return stored == Self.fingerprint(canonical) }
    return stored == Self.hex(canonical)
  }

  static func hex(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 2)
    for byte in bytes {
      out.append(digits[Int(byte >> 4)])
      out.append(digits[Int(byte & 0x0F)])
    }
    return String(decoding: out, as: UTF8.self)
  }
}
