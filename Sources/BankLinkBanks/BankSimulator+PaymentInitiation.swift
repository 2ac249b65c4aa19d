import BankLinkCore
import BankLinkStore
import Synchronization

/// The simulated bank's payment side: it receives credit transfers, deduplicates them by
/// message id and EndToEndId (counting every receipt durably, so tests can prove nothing was
/// sent twice), accepts them at once (ACTC), and after the settlement delay books the debit and
/// reports ACSC, or rejects with RJCT. Status reports can be duplicated or reordered on demand.
extension BankSimulator: PaymentInitiationConnector {
  static let submissionsDB = Database("sim_submissions")
  static let messageIDsDB = Database("sim_message_ids")
  static let pendingDB = Database("sim_pending")
  static let reportsDB = Database("sim_reports")
  static let reportSequenceKey = Array("report_sequence".utf8)

  struct Submission {
    var submission: PaymentSubmission
    var receivedAt: Instant
    /// Every time the bank received this payment (1 = exactly once).
    var receipts: UInt64
  }

  public func submitPayments(
    _ submissions: [PaymentSubmission],
    deadline: ContinuousClock.Instant
  ) async throws(BankError) -> [SubmissionAcknowledgement] {
    let faults = self.currentFaults
    if let refused = submissions.first(where: { faults.refusedEndToEndIDs.contains($0.endToEndID) }) {
      throw BankError(.rejected, "message refused: transaction \(refused.endToEndID) fails validation")
    }
    return try await self.perform(deadline: deadline) {
      // One message, one durable write: every receipt of it is counted, or none.
      let acknowledgements = try await self.store.write { txn in
        try submissions.map { submission in try self.receive(submission, faults: faults, txn: &txn) }
      }
      self.messages.withLock { $0 += 1 }
      return acknowledgements
    }
  }

  /// Payment messages (pain.001) received since this simulator started.
  public var messagesReceived: Int { self.messages.withLock { $0 } }

  private func receive(_ submission: PaymentSubmission, faults: Faults, txn: inout WriteTransaction) throws
    -> SubmissionAcknowledgement
  {
    let now = self.clock()
    let e2eKey = Array(submission.endToEndID.utf8)
    let existingE2E = try txn.get(Array(submission.messageID.utf8), in: Self.messageIDsDB).map { $0 } ?? (
      try txn.get(e2eKey, in: Self.submissionsDB) != nil ? e2eKey : nil)
    if let existingE2E, let bytes = try txn.get(existingE2E, in: Self.submissionsDB) {
      if faults.refuseDuplicateMessages {
        // Thrown inside the write: the refused message leaves no record.
        throw BankError(.rejected, "DU01 duplicate message: transaction \(submission.endToEndID) was already received")
      }
      var stored = try Self.decodeSubmission(bytes)
      stored.receipts += 1
      try txn.put(existingE2E, Self.encode(stored), in: Self.submissionsDB)
      return SubmissionAcknowledgement(
        messageID: stored.submission.messageID, endToEndID: stored.submission.endToEndID, duplicate: true, receivedAt: now)
    }
    let record = Submission(submission: submission, receivedAt: now, receipts: 1)
    try txn.put(e2eKey, Self.encode(record), in: Self.submissionsDB)
    try txn.put(Array(submission.messageID.utf8), e2eKey, in: Self.messageIDsDB)
    try txn.put(e2eKey, [], in: Self.pendingDB)
    if !faults.reorderReports {
      try self.report(PaymentStatusReport(endToEndID: submission.endToEndID, statusCode: "ACTC", time: now), faults: faults, txn: &txn)
    }
    return SubmissionAcknowledgement(
      messageID: submission.messageID, endToEndID: submission.endToEndID, duplicate: false, receivedAt: now)
  }

  public func fetchStatusReports(
    after cursor: String?,
    limit: Int,
    deadline: ContinuousClock.Instant
  ) async throws(BankError) -> StatusReportPage {
    var start: UInt64 = 0
    if let cursor {
      guard let value = UInt64(cursor) else { throw BankError(.rejected, "cursor '\(cursor)' is not one the bank issued") }
      start = value
    }
    return try await self.perform(deadline: deadline) {
      try self.store.withReadTransaction { txn in
        var writer = RecordWriter(capacity: 8)
        writer.write(start)
        var reports: [PaymentStatusReport] = []
        var next = start
        var more = false
        try txn.scan(Self.reportsDB, from: writer.bytes) { key, value in
          if reports.count == max(1, limit) {
            more = true
            return false
          }
          reports.append(try Self.decodeReport(value))
          next = Self.sequence(of: key) + 1
          return true
        }
        return StatusReportPage(reports: reports, nextCursor: String(next), hasMore: more)
      }
    }
  }

  /// How many times the bank received each payment, by EndToEndId (tests count duplicates).
  public func receipts() throws -> [String: UInt64] {
    try self.store.withReadTransaction { txn in
      var receipts: [String: UInt64] = [:]
      try txn.scan(Self.submissionsDB) { key, value in
        receipts[String(decoding: key, as: UTF8.self)] = try Self.decodeSubmission(value).receipts
        return true
      }
      return receipts
    }
  }

  /// Settles or rejects submissions whose settlement delay has passed; returns booked debits.
  @discardableResult
  public func processSubmissions(now: Instant) async throws -> [BookedTransaction] {
    let faults = self.currentFaults
    let delay = self.configuration.settlementDelayMilliseconds
    return try await self.store.write { txn in
      var due: [[UInt8]] = []
      try txn.scan(Self.pendingDB) { key, _ in
        due.append(key)
        return true
      }
      var booked: [BookedTransaction] = []
      for key in due {
        guard let bytes = try txn.get(key, in: Self.submissionsDB) else { continue }
        let stored = try Self.decodeSubmission(bytes)
        guard now.milliseconds(since: stored.receivedAt) >= delay else { continue }
        try txn.delete(key, in: Self.pendingDB)
        let submission = stored.submission
        let accepted = PaymentStatusReport(endToEndID: submission.endToEndID, statusCode: "ACTC", time: stored.receivedAt)
        let roll = self.random.withLock { Double.random(in: 0..<1, using: &$0) }
        // Only an account the bank does not hold is AC01; a storage failure of the bank's own
        // state fails the whole processing round (it is retried), never a payment.
        let state = try txn.get(Array(submission.debtorAccountID.utf8), in: Self.ledgerDB) == nil
          ? nil : try Self.ledgerState(submission.debtorAccountID, txn: txn)
        let simulated = SimulatorCatalogue.accounts.first { $0.account.id == submission.debtorAccountID }
        var outcome: PaymentStatusReport
        if let state, let simulated {
          if state.minorUnits < submission.amount.minorUnits {
            outcome = PaymentStatusReport(endToEndID: submission.endToEndID, statusCode: "RJCT", reasonCode: "AM04", reasonText: "insufficient funds", time: now)
          } else if roll < faults.rejectionRate {
            outcome = PaymentStatusReport(endToEndID: submission.endToEndID, statusCode: "RJCT", reasonCode: "AC04", reasonText: "creditor account closed", time: now)
          } else {
            let entry = BookedTransaction(
              id: "\(submission.debtorAccountID)-\(state.nextSequence)", accountID: submission.debtorAccountID,
              amount: submission.amount, direction: .debit, bookingTime: max(now, state.asOf), valueDate: now.isoDate,
              counterparty: submission.creditor, endToEndID: submission.endToEndID,
              bankReference: Self.reference(simulated, now, state.nextSequence), description: submission.remittanceInformation)
            try Self.append(entry, state: state, txn: &txn)
            booked.append(entry)
            outcome = PaymentStatusReport(endToEndID: submission.endToEndID, statusCode: "ACSC", time: now)
          }
        } else {
          outcome = PaymentStatusReport(endToEndID: submission.endToEndID, statusCode: "RJCT", reasonCode: "AC01", reasonText: "account unknown", time: now)
        }
        try self.report(outcome, faults: faults, txn: &txn)
        if faults.reorderReports {
          try self.report(accepted, faults: faults, txn: &txn)
        }
      }
      return booked
    }
  }

  private func report(_ report: PaymentStatusReport, faults: Faults, txn: inout WriteTransaction) throws {
    let copies = self.random.withLock { Double.random(in: 0..<1, using: &$0) } < faults.duplicateReportRate ? 2 : 1
    for _ in 0..<copies {
      var sequence: UInt64 = 0
      if let bytes = try txn.get(Self.reportSequenceKey, in: .meta) {
        var reader = RecordReader(bytes)
        sequence = try reader.readUInt64()
      }
      var next = RecordWriter(capacity: 8)
      next.write(sequence + 1)
      try txn.put(Self.reportSequenceKey, next.bytes, in: .meta)
      var key = RecordWriter(capacity: 8)
      key.write(sequence)
      try txn.put(key.bytes, report.record, in: Self.reportsDB)
    }
  }

  static func decodeReport(_ bytes: [UInt8]) throws -> PaymentStatusReport { try PaymentStatusReport(record: bytes) }

  static func encode(_ stored: Submission) -> [UInt8] {
    let submission = stored.submission
    var writer = RecordWriter(capacity: 256)
    writer.write(submission.messageID)
    writer.write(submission.endToEndID)
    writer.write(submission.debtorAccountID)
    writer.write(submission.amount.minorUnits)
    writer.write(submission.amount.currency.code)
    writer.write(submission.creditor.name)
    writer.write(submission.creditor.accountNumber)
    writer.write(submission.creditor.bankBIC)
    writer.write(submission.creditor.bankName)
    writer.write(submission.creditorCountry)
    writer.write(submission.remittanceInformation)
    writer.write(submission.requestedExecutionDate)
    writer.write(stored.receivedAt.millisecondsSinceEpoch)
    writer.write(stored.receipts)
    return writer.bytes
  }

  static func decodeSubmission(_ bytes: [UInt8]) throws -> Submission {
    var reader = RecordReader(bytes)
    let messageID = try reader.readString()
    let endToEndID = try reader.readString()
    let debtor = try reader.readString()
    let minorUnits = try reader.readInt64()
    guard let currency = CurrencyCode(try reader.readString()) else {
      throw StoreError(code: .corrupted, message: "submission with an invalid currency")
    }
    let creditor = Counterparty(
      name: try reader.readString(), accountNumber: try reader.readString(), bankBIC: try reader.readString(),
      bankName: try reader.readString())
    let submission = PaymentSubmission(
      messageID: messageID, endToEndID: endToEndID, debtorAccountID: debtor,
      amount: Money(minorUnits: minorUnits, currency: currency), creditor: creditor, creditorCountry: try reader.readString(),
      remittanceInformation: try reader.readString(), requestedExecutionDate: try reader.readString())
    let stored = Submission(
      submission: submission, receivedAt: Instant(millisecondsSinceEpoch: try reader.readInt64()), receipts: try reader.readUInt64())
    try reader.finish()
    return stored
  }
}

extension PaymentStatusReport {
  /// The stored form of a report in a connector's feed (the simulator's and the file connector's).
  var record: [UInt8] {
    var record = RecordWriter(capacity: 64)
    record.write(self.endToEndID)
    record.write(self.statusCode)
    record.write(self.reasonCode)
    record.write(self.reasonText)
    record.write(self.time.millisecondsSinceEpoch)
    return record.bytes
  }

  init(record bytes: [UInt8]) throws {
    var reader = RecordReader(bytes)
    self.init(
      endToEndID: try reader.readString(), statusCode: try reader.readString(), reasonCode: try reader.readString(),
      reasonText: try reader.readString(), time: Instant(millisecondsSinceEpoch: try reader.readInt64()))
    try reader.finish()
  }
}
