import BankLinkBanks
import BankLinkCore
import BankLinkJournal
import BankLinkStore

/// The ledger's side of talking to the bank: claiming outbox entries for delivery, recording
/// what the bank did with them, and applying status reports — each in one group-committed
/// transaction.
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
    /// The bank refused the message itself on a first attempt: the payment fails.
    case refused(OutboxEntry, reason: String)
    /// The bank refused a *re-send*: an earlier attempt's answer was lost, so the bank may hold
    /// (and pay) the first copy while refusing this one as a duplicate message (DU01). The
    /// payment stays `submitting` with its funds reserved until a status report resolves it,
    /// and an operator is alerted; failing it would release funds the bank may still debit.
    case unresolved(OutboxEntry, reason: String)
    /// Its payment no longer goes to the bank (cancelled or gone).
    case discarded(OutboxEntry)
  }

  /// The oldest outbox entries, at most `limit`, each with its payment as stored now (nil if
  /// gone), from one snapshot; claims nothing (tests and diagnostics).
  public func outbox(limit: Int) throws -> [(entry: OutboxEntry, payment: Payment?)] {
    try self.store.withReadTransaction { txn in
      var entries: [OutboxEntry] = []
      try txn.scan(.outbox) { key, value in
        guard entries.count < limit else { return false }
        entries.append(try OutboxRecord.decode(key: key, value: value))
        return true
      }
      return try entries.map { entry in
        (entry, try txn.get(Array(entry.paymentID.utf8), in: .payments).map(Payment.init(record:)))
      }
    }
  }

  /// Journal entries after sequence `after`, at most `limit`, oldest first.
  public func auditEntries(after: UInt64 = 0, limit: Int = Limits.maxPageSize) throws -> [AuditEntry] {
    try self.store.withReadTransaction { txn in try AuditJournal.entries(after: after, limit: limit, in: txn) }
  }

  /// Claims the oldest outbox entries, at most `limit`, for delivery, in one committed write
  /// *before* anything is sent: each `approved` payment becomes `submitting` (no longer
  /// cancellable); a payment already `submitting` (a round that timed out, or a crash after the
  /// claim) is sent again with the same ids. Entries whose payment was cancelled first, or
  /// that a status report already moved on, leave the outbox here. Returns what to send.
  ///
  /// `resend` is true for a payment claimed in an earlier round whose delivery was never
  /// recorded (a timeout, an outage, a crash): the bank may already hold it.
  public func claimForSubmission(limit: Int) async throws -> [(entry: OutboxEntry, payment: Payment, resend: Bool)] {
    let now = self.now()
    return try await self.writer.write { txn in
      var entries: [OutboxEntry] = []
      try txn.scan(.outbox) { key, value in
        guard entries.count < limit else { return false }
        entries.append(try OutboxRecord.decode(key: key, value: value))
        return true
      }
      var claimed: [(entry: OutboxEntry, payment: Payment, resend: Bool)] = []
      for entry in entries {
        guard let bytes = try txn.get(Array(entry.paymentID.utf8), in: .payments) else {
          try txn.delete(entry.key, in: .outbox)
          continue
        }
        var payment = try Payment(record: bytes)
        switch payment.status {
        case .approved:
          // Before anything leaves for the bank: the approvals must still verify against the
          // stored instruction. Bytes changed in the data file after approval block it here.
          if let problem = try Self.releaseProblem(payment, in: txn) {
            _ = payment.apply(.releaseCheckFailed, at: now, reason: "release check failed: \(problem)")
            try Reservations.releaseIfDue(payment, txn: &txn)
            try txn.putPayment(payment)
            try txn.delete(entry.key, in: .outbox)
            try AuditJournal.append(
              &txn, at: now, principal: "system", action: "payment.blocked", object: payment.id,
              details: ["reason": problem, "check": "release"])
            try AlertLog.raise(
              &txn, at: now, severity: .critical, kind: .tampering, paymentID: payment.id,
              accountID: payment.instruction.debtorAccountID,
              message: "payment \(payment.id) blocked at release: \(problem); its stored instruction or approvals were altered",
              details: ["reason": problem])
            continue
          }
          _ = payment.apply(.claimedForSubmission, at: now)
          try txn.putPayment(payment)
          try AuditJournal.append(
            &txn, at: now, principal: "system", action: "payment.submitting", object: payment.id,
            details: ["message_id": entry.messageID])
          claimed.append((entry, payment, false))
        case .submitting:
          claimed.append((entry, payment, true))
        default:
          // Cancelled before the claim (nothing is sent), or already reported on by the bank.
          try txn.delete(entry.key, in: .outbox)
        }
      }
      return claimed
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
            try txn.putPayment(payment)
            try AuditJournal.append(
              &txn, at: now, principal: "system", action: "payment.submitted", object: payment.id,
              details: ["message_id": entry.messageID])
          }
        case .refused(let entry, let reason):
          try txn.delete(entry.key, in: .outbox)
          guard let bytes = try txn.get(Array(entry.paymentID.utf8), in: .payments) else { continue }
          var payment = try Payment(record: bytes)
          let before = payment.status
          // A payment a status report already failed takes the refusal without a change: no
          // second journal entry, alert or burst count for the same rejection.
          guard case .success(let after) = payment.apply(.bankRejected, at: now, reason: reason), after != before else { continue }
          try Reservations.releaseIfDue(payment, txn: &txn)
          try txn.putPayment(payment)
          try AuditJournal.append(
            &txn, at: now, principal: "system", action: "payment.failed", object: payment.id, details: ["reason": reason])
          try AlertLog.raise(
            &txn, at: now, severity: .warning, kind: .bankRejection, paymentID: payment.id,
            accountID: payment.instruction.debtorAccountID, message: "the bank refused payment \(payment.id): \(reason)",
            details: ["reason": reason])
          try RejectionBurst.note(paymentID: payment.id, accountID: payment.instruction.debtorAccountID, at: now, txn: &txn)
        case .unresolved(let entry, let reason):
          try txn.delete(entry.key, in: .outbox)
          guard let bytes = try txn.get(Array(entry.paymentID.utf8), in: .payments) else { continue }
          let payment = try Payment(record: bytes)
          // A status report may already have moved it on; then there is nothing to resolve.
          guard payment.status == .submitting else { continue }
          try AuditJournal.append(
            &txn, at: now, principal: "system", action: "payment.resend_refused", object: payment.id,
            details: ["reason": reason, "message_id": entry.messageID])
          try AlertLog.raise(
            &txn, at: now, severity: .critical, kind: .anomaly, paymentID: payment.id,
            accountID: payment.instruction.debtorAccountID,
            message: "the bank refused a re-send of payment \(payment.id) (\(reason)); it may hold the first copy: "
              + "the payment stays submitting with its funds reserved until the bank reports on it — check with the bank",
            details: ["reason": reason, "message_id": entry.messageID, "end_to_end_id": payment.endToEndID])
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

  /// What applying a page of status reports did.
  public struct AppliedReports: Sendable, Hashable {
    /// Payments whose state changed.
    public var changed = 0
    /// Reports that could not be applied, each recorded in the audit in the same transaction.
    public var anomalies: [BankAnomaly] = []
  }

  /// Status codes that carry no lifecycle change (pain.002 `PDNG` pending, `RCVD` received).
  static let informationalStatusCodes: Set<String> = ["PDNG", "RCVD"]

  /// Applies a page of status reports and stores the cursor after it, in one transaction.
  /// Duplicates and reordered reports are harmless: the state machine keeps the most advanced
  /// state. A report that cannot be applied (no usable EndToEndId, an unknown one, an unknown
  /// status code, or one the payment's state cannot take — e.g. settled after cancelled) is
  /// never dropped: it is recorded as a ``BankAnomaly`` and the cursor moves past it.
  @discardableResult
  public func apply(_ reports: [PaymentStatusReport], nextCursor: String) async throws -> AppliedReports {
    let now = self.now()
    guard nextCursor.utf8.count <= BankDataLimits.maxCursorBytes else {
      let problem = "status report cursor of \(nextCursor.utf8.count) bytes exceeds \(BankDataLimits.maxCursorBytes)"
      let anomaly = BankAnomaly(subject: "status-reports", description: "\(problem); the feed cannot move on until the bank sends a shorter one")
      try await self.writer.write { txn in try anomaly.recordStuckFeed("status-reports", &txn, at: now) }
      throw BankError(.malformed, problem)
    }
    return try await self.writer.write { txn in
      try BankAnomaly.feedMoved("status-reports", &txn)
      var result = AppliedReports()
      func anomaly(_ subject: String, _ text: String) throws {
        let found = BankAnomaly(subject: subject, description: text)
        try found.record(&txn, at: now)
        result.anomalies.append(found)
      }
      for report in reports {
        let code = LogText.prefix(report.statusCode)
        if let problem = BankDataLimits.endToEndIDProblem(report.endToEndID) {
          try anomaly(report.endToEndID, "status report \(code) \(problem); not applied")
          continue
        }
        guard let event = PaymentStateMachine.event(forBankStatus: report.statusCode) else {
          if !Self.informationalStatusCodes.contains(report.statusCode.uppercased()) {
            try anomaly(report.endToEndID, "status report with unknown status code \(code); not applied")
          }
          continue
        }
        guard let paymentID = try txn.get(Array(report.endToEndID.utf8), in: .paymentsByEndToEnd),
          let bytes = try txn.get(paymentID, in: .payments)
        else {
          try anomaly(report.endToEndID, "status report \(code) for an EndToEndId no payment carries; not applied")
          continue
        }
        var payment = try Payment(record: bytes)
        let before = payment.status
        if before == .approved {
          // Never claimed for submission, so never sent: a report about it is a misrouted or
          // forged file, and applying it would mark settled a payment whose money never left
          // (its funds held for good). Recorded, not applied; the submitter sends it as usual.
          try anomaly(
            payment.id,
            "bank reports \(code) for payment \(payment.id), which has not been sent (approved, not yet claimed for submission); not applied")
          continue
        }
        let reason = LogText.prefix(
          report.reasonText.isEmpty ? report.reasonCode : "\(report.reasonCode) \(report.reasonText)",
          maxBytes: BankDataLimits.maxReasonBytes)
        guard case .success(let after) = payment.apply(event, at: now, reason: event == .bankRejected ? reason : "") else {
          try anomaly(
            payment.id,
            "bank reports \(code) \(reason) for payment \(payment.id) in state \(before.rawValue); not applied — the bank and the daemon disagree")
          continue
        }
        if after != before || payment.bankStatusCode.isEmpty {
          payment.bankStatusCode = String(report.statusCode.prefix(BankDataLimits.maxStatusCodeBytes))
          payment.bankReasonCode = String(report.reasonCode.prefix(BankDataLimits.maxStatusCodeBytes))
        }
        try Reservations.releaseIfDue(payment, txn: &txn)
        try txn.putPayment(payment, key: paymentID)
        if after != before {
          result.changed += 1
          try AuditJournal.append(
            &txn, at: now, principal: "bank", action: "payment.\(after.rawValue)", object: payment.id,
            details: ["status_code": code, "reason_code": reason])
          // RJCT after acceptance leaves the payment `failed`, before it `rejected`; a return
          // after settlement `returned`: each is the bank refusing the money's way.
          if event == .bankRejected || after == .returned {
            try AlertLog.raise(
              &txn, at: now, severity: .warning, kind: .bankRejection, paymentID: payment.id,
              accountID: payment.instruction.debtorAccountID,
              message: "the bank reports payment \(payment.id) \(after.rawValue): \(reason)",
              details: ["status_code": code, "reason": reason])
            try RejectionBurst.note(paymentID: payment.id, accountID: payment.instruction.debtorAccountID, at: now, txn: &txn)
          }
        }
      }
      try txn.put(Self.statusCursorKey, Array(nextCursor.utf8), in: .meta)
      return result
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

extension PaymentLedger {
  /// When the oldest entry of the outbox was put there (its payment's last change: the claim
  /// for submission), or nil for an empty outbox. For the `banklink_outbox_oldest_age_seconds`
  /// gauge: an outbox that does not drain shows as a growing age.
  public static func oldestOutboxEntryTime(in txn: some ReadableTransaction) throws -> Instant? {
    var oldest: PaymentLedger.OutboxEntry?
    try txn.scan(.outbox, from: nil) { key, value in
      oldest = try OutboxRecord.decode(key: key, value: value)
      return false
    }
    guard let oldest, let record = try txn.get(Array(oldest.paymentID.utf8), in: .payments) else { return nil }
    return try Payment(record: record).updatedAt
  }
}
