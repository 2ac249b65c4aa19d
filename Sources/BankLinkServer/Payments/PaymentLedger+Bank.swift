import BankLinkBanks
import BankLinkCore
import BankLinkStore

/// The ledger's side of talking to the bank: the outbox entries to deliver, marking them
/// delivered, and applying status reports — each in one group-committed transaction.
extension PaymentLedger {
  public struct OutboxEntry: Sendable, Hashable {
    public var key: [UInt8]
    public var paymentID: String
    public var messageID: String

    public init(key: [UInt8], paymentID: String, messageID: String) {
      self.key = key
      self.paymentID = paymentID
      self.messageID = messageID
    }
  }

  static let statusCursorKey = Array("bank_status_cursor".utf8)

  /// What became of an outbox entry in one submission round.
  public enum Delivery: Sendable, Hashable {
    /// The bank acknowledged it (or a status report already proved the bank holds it).
    case submitted(OutboxEntry)
    /// The bank refused the message itself: the payment fails.
    case refused(OutboxEntry, reason: String)
    /// Its payment no longer goes to the bank (cancelled or gone).
    case discarded(OutboxEntry)
  }

  /// The oldest outbox entries, at most `limit`, each with its payment as stored now (nil if
  /// gone), from one snapshot.
  public func outbox(limit: Int) throws -> [(entry: OutboxEntry, payment: Payment?)] {
    try self.store.withReadTransaction { txn in
      var entries: [OutboxEntry] = []
      try txn.scan(.outbox) { key, value in
        guard entries.count < limit else { return false }
        var reader = RecordReader(value)
        _ = try reader.readUInt8()
        entries.append(OutboxEntry(key: key, paymentID: try reader.readString(), messageID: try reader.readString()))
        return true
      }
      return try entries.map { entry in
        (entry, try txn.get(Array(entry.paymentID.utf8), in: .payments).map(Payment.init(record:)))
      }
    }
  }

  /// Records a submission round in one transaction: acknowledged payments become `submitted`
  /// (unless a status report already moved them further), refused ones fail and release their
  /// reservation, and every entry named leaves the outbox.
  public func record(_ deliveries: [Delivery]) async throws {
    guard !deliveries.isEmpty else { return }
    let now = self.now()
    try await self.writer.write { txn in
      for delivery in deliveries {
        switch delivery {
        case .submitted(let entry):
          try txn.delete(entry.key, in: .outbox)
          guard let bytes = try txn.get(Array(entry.paymentID.utf8), in: .payments) else { continue }
          var payment = try Payment(record: bytes)
          let before = payment.status
          if case .success(let after) = payment.apply(.submitted, at: now), after != before {
            try txn.put(Array(payment.id.utf8), payment.record, in: .payments)
            try Self.audit(&txn, at: now, principal: "system", action: "payment.submitted", object: payment.id, detail: entry.messageID)
          }
        case .refused(let entry, let reason):
          try txn.delete(entry.key, in: .outbox)
          guard let bytes = try txn.get(Array(entry.paymentID.utf8), in: .payments) else { continue }
          var payment = try Payment(record: bytes)
          _ = payment.apply(.submitted, at: now)
          guard case .success = payment.apply(.bankRejected, at: now, reason: reason) else { continue }
          try Self.releaseIfDue(payment, txn: &txn)
          try txn.put(Array(payment.id.utf8), payment.record, in: .payments)
          try Self.audit(&txn, at: now, principal: "system", action: "payment.failed", object: payment.id, detail: reason)
        case .discarded(let entry):
          _ = try txn.delete(entry.key, in: .outbox)
        }
      }
    }
  }

  /// The stored position in the bank's status-report feed.
  public func statusCursor() throws -> String? {
    try self.store.withReadTransaction { txn in
      try txn.get(Self.statusCursorKey, in: .meta).map { String(decoding: $0, as: UTF8.self) }
    }
  }

  /// Applies a page of status reports and stores the cursor after it, in one transaction.
  /// Duplicates and reordered reports are harmless: the state machine keeps the most advanced
  /// state. Returns how many payments changed state.
  @discardableResult
  public func apply(_ reports: [PaymentStatusReport], nextCursor: String) async throws -> Int {
    let now = self.now()
    return try await self.writer.write { txn in
      var changed = 0
      for report in reports {
        guard let event = PaymentStateMachine.event(forBankStatus: report.statusCode),
          let paymentID = try txn.get(Array(report.endToEndID.utf8), in: .paymentsByEndToEnd),
          let bytes = try txn.get(paymentID, in: .payments)
        else { continue }
        var payment = try Payment(record: bytes)
        let before = payment.status
        if before == .approved {
          // A report proves the bank holds the payment, even if our acknowledgement was lost.
          _ = payment.apply(.submitted, at: now)
        }
        let reason = report.reasonText.isEmpty ? report.reasonCode : "\(report.reasonCode) \(report.reasonText)"
        guard case .success(let after) = payment.apply(event, at: now, reason: event == .bankRejected ? reason : "") else {
          continue
        }
        if after != before || payment.bankStatusCode.isEmpty {
          payment.bankStatusCode = report.statusCode
          payment.bankReasonCode = report.reasonCode
        }
        try Self.releaseIfDue(payment, txn: &txn)
        try txn.put(paymentID, payment.record, in: .payments)
        if after != before {
          changed += 1
          try Self.audit(
            &txn, at: now, principal: "bank", action: "payment.\(after.rawValue)", object: payment.id,
            detail: "\(report.statusCode) \(reason)")
        }
      }
      try txn.put(Self.statusCursorKey, Array(nextCursor.utf8), in: .meta)
      return changed
    }
  }

  /// The submission message for a payment, with the message id fixed in its outbox entry.
  func submission(for entry: OutboxEntry, _ payment: Payment) -> PaymentSubmission {
    let creditor = payment.instruction.creditor
    return PaymentSubmission(
      messageID: entry.messageID, endToEndID: payment.endToEndID, debtorAccountID: payment.instruction.debtorAccountID,
      amount: payment.instruction.amount,
      creditor: Counterparty(
        name: creditor.name, accountNumber: creditor.iban.isEmpty ? creditor.accountNumber : creditor.iban,
        bankBIC: creditor.bic, bankName: ""),
      creditorCountry: creditor.country, remittanceInformation: payment.instruction.purpose,
      requestedExecutionDate: payment.instruction.requestedExecutionDate)
  }
}

extension PaymentLedger {
  /// The exact submission the submitter would send for `entry` (tests simulate lost acks).
  public func submissionForTesting(_ entry: OutboxEntry, _ payment: Payment) -> PaymentSubmission {
    self.submission(for: entry, payment)
  }
}
