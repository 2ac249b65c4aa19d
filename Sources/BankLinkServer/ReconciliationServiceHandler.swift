import BankLinkCore
import BankLinkFormats
import BankLinkProto
import BankLinkStore
import Crypto
import Foundation
import GRPCCore
import Logging
import SwiftProtobuf
import Synchronization

/// `banklink.v1.ReconciliationService`.
struct ReconciliationServiceHandler: Banklink_V1_ReconciliationService.SimpleServiceProtocol {
  typealias Method = Banklink_V1_ReconciliationService.Method

  let statements: StatementStore
  let reconciler: Reconciler

  /// Where uploads are spooled while they arrive: inside the data directory, so a file of
  /// ``Limits/maxStatementFileBytes`` lands on the disk that is sized for the daemon's data.
  var spoolDirectory: String { self.statements.store.configuration.directory + "/spool" }

  func importStatement(
    request: RPCAsyncSequence<Banklink_V1_ImportStatementRequest, any Error>,
    context: ServerContext
  ) async throws -> Banklink_V1_ImportStatementResponse {
    let caller = try Caller.required()
    // Each upload spools up to 2 GiB onto the data directory's disk: a bounded number at once.
    let admitted = self.statements.uploads.withLock { count -> Bool in
      guard count < Limits.maxConcurrentStatementUploads else { return false }
      count += 1
      return true
    }
    guard admitted else {
      throw RPCError(
        code: .resourceExhausted,
        message: "\(Limits.maxConcurrentStatementUploads) statement uploads are in progress; retry when one has finished")
    }
    defer { self.statements.uploads.withLock { $0 -= 1 } }
    try FileManager.default.createDirectory(atPath: self.spoolDirectory, withIntermediateDirectories: true)
    let path = self.spoolDirectory + "/import-\(UUID().uuidString).part"
    guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
      throw RPCError(code: .internalError, message: "cannot spool the upload")
    }
    defer { try? FileManager.default.removeItem(atPath: path) }
    var hasher = SHA256()
    var bytes: Int64 = 0
    var first: Banklink_V1_ImportStatementRequest?
    do {
      defer { try? handle.close() }
      for try await chunk in request {
        if first == nil {
          first = chunk
          if !chunk.requestID.isEmpty { try validIdempotencyKey(chunk.requestID, field: "request_id") }
          if let problem = PaymentValidation.textProblem(chunk.fileName, maxLength: Limits.maxFileNameLength) {
            throw APIError.invalidArgument("file_name", problem)
          }
        }
        guard !chunk.content.isEmpty || bytes == 0 && first?.requestID == chunk.requestID else {
          throw APIError.invalidArgument("content", "an empty chunk after the first: send the file's next bytes")
        }
        guard chunk.content.count <= Limits.maxStatementChunkBytes else {
          throw APIError.invalidArgument("content", "a chunk holds at most \(Limits.maxStatementChunkBytes) bytes; this one \(chunk.content.count)")
        }
        bytes += Int64(chunk.content.count)
        guard bytes <= Limits.maxStatementFileBytes else {
          throw RPCError(
            code: .resourceExhausted,
            message: "content: a statement file is at most \(Limits.maxStatementFileBytes) bytes; split it by account or day")
        }
        hasher.update(data: chunk.content)
        do {
          try handle.write(contentsOf: chunk.content)
        } catch {
          // No space on the data disk is the operator's to fix; anything else is ours.
          let full = (error as NSError).code == Int(ENOSPC) || "\(error)".contains("No space")
          APIError.logger.error("spooling a statement upload failed", metadata: ["error": "\(error)"])
          throw RPCError(
            code: full ? .resourceExhausted : .internalError,
            message: full ? "the daemon's data disk is full; an operator must free space" : "the upload could not be spooled")
        }
      }
      // Not synced: the spool is read back through the page cache and discarded at start.
    }
    guard let first, bytes > 0 else { throw APIError.invalidArgument("content", "is empty: send the file's bytes") }
    let declared: BankLinkFormats.StatementFormat? =
      switch first.format {
      case .unspecified: nil
      case .camt052: .camt052
      case .camt053: .camt053
      case .camt054: .camt054
      case .mt940: .mt940
      case .mt942: .mt942
      case .UNRECOGNIZED(let value): throw APIError.invalidArgument("format", "\(value) is not a statement format")
      }
    let sha256 = Hex.encode(hasher.finalize())
    let outcome: StatementImportOutcome
    do {
      outcome = try await self.statements.importFile(
        at: path, sha256: sha256, bytes: bytes, fileName: first.fileName, declared: declared, importedBy: caller.principal.identity)
    } catch let refusal as StatementImportRefusal {
      throw APIError.invalidArgument("content", "\(refusal)")
    } catch let error as StoreError {
      throw APIError.storage(error)
    }
    let reconciliation = await self.reconcileAfterImport(outcome)
    return .with {
      if let reconciliation { $0.reconciliation = reconciliation }
      $0.statementID = outcome.statements.first?.id ?? ""
      $0.entriesImported = Int64(outcome.entries)
      $0.duplicateEntries = Int64(outcome.duplicates)
      if let receipt = outcome.receipt { $0.receipt = Banklink_V1_Receipt(receipt) }
      $0.statements = outcome.statements.map(Banklink_V1_StatementSummary.init)
      $0.duplicateFile = outcome.duplicateFile
      $0.fileSha256 = outcome.fileSHA256
      $0.fileBytes = outcome.fileBytes
    }
  }

  func listStatements(request: Banklink_V1_ListStatementsRequest, context: ServerContext) async throws -> Banklink_V1_ListStatementsResponse {
    let size = try pageSize(request.pageSize)
    if let problem = PaymentValidation.textProblem(request.accountID, maxLength: Limits.maxAccountIDLength) {
      throw APIError.invalidArgument("account_id", problem)
    }
    let after: UInt64? = request.pageToken.isEmpty ? nil : try PageToken.sequence(request.pageToken, .statements)
    let page = try withStore {
      try self.statements.statements(accountID: request.accountID.isEmpty ? nil : request.accountID, after: after, limit: size)
    }
    return .with {
      $0.statements = page.statements.map(Banklink_V1_StatementSummary.init)
      if page.more, let last = page.statements.last { $0.nextPageToken = PageToken.encode(.statements, after: last.sequence) }
    }
  }

  func getStatement(request: Banklink_V1_GetStatementRequest, context: ServerContext) async throws -> Banklink_V1_GetStatementResponse {
    guard !request.statementID.isEmpty else { throw APIError.invalidArgument("statement_id", "is required") }
    guard let sequence = StatementIDs.parseStatement(request.statementID) else {
      throw APIError.invalidArgument("statement_id", "not a statement id (stm-…)")
    }
    guard request.pageSize >= 0 else { throw APIError.invalidArgument("page_size", "must not be negative") }
    let size = request.pageSize == 0 ? Limits.defaultStatementEntriesPage : min(Int(request.pageSize), Limits.maxStatementEntriesPage)
    let from: UInt32 =
      request.pageToken.isEmpty
      ? 0 : try PageToken.decode(request.pageToken, .statementEntries) { reader -> UInt32? in
        try reader.readUInt64() == sequence ? try reader.readUInt32() : nil
      }
    let (statement, page) = try withStore { () -> (StoredStatement?, (entries: [StoredStatementEntry], more: Bool)) in
      guard let statement = try self.statements.statement(sequence) else { return (nil, ([], false)) }
      return (statement, try self.statements.entries(of: sequence, from: from, limit: size))
    }
    guard let statement else { throw APIError.notFound("statement", request.statementID) }
    return .with {
      $0.statement = Banklink_V1_StatementSummary(statement)
      $0.entries = page.entries.map { Banklink_V1_StatementEntry($0, statementID: statement.id) }
      if page.more, let last = page.entries.last {
        $0.nextPageToken = PageToken.encode(.statementEntries) { writer in
          writer.write(sequence)
          writer.write(last.index + 1)
        }
      }
    }
  }

  /// Reconciliation follows every import, over the accounts and booking dates it brought. The
  /// import is committed: a failing run is logged, not answered as a failed import (the client
  /// would retry, be told the file is a duplicate, and no run would follow).
  func reconcileAfterImport(_ outcome: StatementImportOutcome, evenIfDuplicate: Bool = false) async -> Banklink_V1_ReconcileResponse? {
    guard evenIfDuplicate || !outcome.duplicateFile, !outcome.statements.isEmpty else { return nil }
    let dates = outcome.statements.flatMap { [$0.fromDate, $0.toDate] }.filter { !$0.isEmpty }
    let accounts = Set(outcome.statements.map(\.accountID))
    do {
      return try await self.run(
        accountID: accounts.count == 1 ? accounts.first : nil, fromDate: dates.min() ?? "", toDate: dates.max() ?? "",
        statements: outcome.statements.map(\.sequence), by: "auto")
    } catch {
      APIError.logger.error(
        "reconciliation after an import failed; run `banklink reconcile` again",
        metadata: ["statement_id": "\(outcome.statements.first?.id ?? "")", "error": "\(error)"])
      return nil
    }
  }

  /// One reconciliation run, after the imports and runs before it, on a thread of its own.
  func run(
    accountID: String?, fromDate: String, toDate: String, statements: [UInt64]? = nil, by principal: String
  ) async throws -> Banklink_V1_ReconcileResponse {
    let reconciler = self.reconciler
    let outcome: Reconciler.Outcome
    do {
      outcome = try await self.mappingStorage {
        try await self.statements.queue.run {
          try await onOwnThread {
            try reconciler.reconcile(accountID: accountID, fromDate: fromDate, toDate: toDate, statements: statements, by: principal)
          }
        }
      }
    } catch let refusal as ReconciliationRefusal {
      throw RPCError(code: .resourceExhausted, message: "\(refusal)")
    }
    return .with {
      $0.reportID = outcome.report.id
      $0.matched = Int64(outcome.report.matched)
      $0.unmatchedEntries = Int64(outcome.report.unmatchedEntries)
      $0.unmatchedPayments = Int64(outcome.report.unmatchedPayments)
      $0.settled = Int64(outcome.report.settled)
      $0.returned = Int64(outcome.report.returned)
      $0.receipt = Banklink_V1_Receipt(outcome.receipt)
    }
  }

  func mappingStorage<T>(_ body: () async throws -> T) async throws -> T {
    do {
      return try await body()
    } catch let error as StoreError {
      throw APIError.storage(error)
    }
  }

  func reconcile(request: Banklink_V1_ReconcileRequest, context: ServerContext) async throws -> Banklink_V1_ReconcileResponse {
    let caller = try Caller.required()
    if !request.requestID.isEmpty { try validIdempotencyKey(request.requestID, field: "request_id") }
    if !request.accountID.isEmpty, !PaymentValidation.isAccountID(request.accountID) {
      throw APIError.invalidArgument("account_id", PaymentValidation.accountIDRule)
    }
    func date(_ timestamp: Google_Protobuf_Timestamp, _ field: String, present: Bool) throws -> String {
      guard present else { return "" }
      guard let instant = Instant(timestamp) else { throw APIError.invalidArgument(field, "is not a valid timestamp") }
      return instant.isoDate
    }
    let from = try date(request.startTime, "start_time", present: request.hasStartTime)
    let to = try date(request.endTime, "end_time", present: request.hasEndTime)
    if !from.isEmpty, !to.isEmpty, from > to { throw APIError.invalidArgument("end_time", "is before start_time") }
    return try await self.run(
      accountID: request.accountID.isEmpty ? nil : request.accountID, fromDate: from, toDate: to, by: caller.principal.identity)
  }

  func getReconciliationReport(
    request: Banklink_V1_GetReconciliationReportRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ReconciliationReport {
    guard !request.reportID.isEmpty else { throw APIError.invalidArgument("report_id", "is required") }
    guard let sequence = ReconciliationIDs.parseReport(request.reportID) else {
      throw APIError.invalidArgument("report_id", "not a report id (rec-…)")
    }
    let size = try pageSize(request.pageSize)
    let from: UInt32 =
      request.pageToken.isEmpty
      ? 0 : try PageToken.decode(request.pageToken, .reconciliationReport) { reader -> UInt32? in
        try reader.readUInt64() == sequence ? try reader.readUInt32() : nil
      }
    guard let (header, items, more) = try withStore({ try self.reconciler.page(of: sequence, from: from, limit: size) }) else {
      throw APIError.notFound("reconciliation report", request.reportID)
    }
    let reportTime = header.createdAt
    return .with { report in
      report.reportID = header.id
      report.createTime = header.createdAt.timestamp
      report.createdBy = header.createdBy
      report.accountID = header.accountID
      report.fromDate = header.fromDate
      report.toDate = header.toDate
      report.matchedCount = Int64(header.matched)
      report.unmatchedEntryCount = Int64(header.unmatchedEntries)
      report.unmatchedPaymentCount = Int64(header.unmatchedPayments)
      report.settledCount = Int64(header.settled)
      report.returnedCount = Int64(header.returned)
      report.incomplete = !header.complete
      for line in items {
        switch line.item {
        case .match(let match):
          var proto = Banklink_V1_Match(match)
          if let entry = line.entry { proto.entry = Banklink_V1_StatementEntry(entry, statementID: StatementIDs.statement(entry.statementSequence)) }
          report.matches.append(proto)
        case .unmatchedEntry(_, let classification, let reason):
          guard let entry = line.entry else { continue }
          report.unmatchedEntries.append(.with {
            $0.entry = Banklink_V1_StatementEntry(entry, statementID: StatementIDs.statement(entry.statementSequence))
            $0.classification = classification
            $0.reason = reason
            if let booked = Instant(isoDate: entry.entry.bookingDate) {
              $0.age = Google_Protobuf_Duration(milliseconds: max(0, reportTime.milliseconds(since: booked)))
            }
          })
        case .unmatchedPayment(let id):
          guard let payment = line.payment else { continue }
          report.unmatchedPayments.append(.with {
            $0.paymentID = id
            $0.accountID = payment.instruction.debtorAccountID
            $0.amount = Banklink_V1_Money(payment.instruction.amount)
            $0.endToEndID = payment.endToEndID
            $0.status = payment.status.proto
            $0.creditorName = payment.instruction.creditor.name
            $0.age = Google_Protobuf_Duration(milliseconds: max(0, reportTime.milliseconds(since: payment.createdAt)))
          })
        }
      }
      if more, let last = items.last {
        report.nextPageToken = PageToken.encode(.reconciliationReport) { writer in
          writer.write(sequence)
          writer.write(last.index + 1)
        }
      }
    }
  }

  func matchEntry(request: Banklink_V1_MatchEntryRequest, context: ServerContext) async throws -> Banklink_V1_MatchEntryResponse {
    let caller = try Caller.required()
    if !request.requestID.isEmpty { try validIdempotencyKey(request.requestID, field: "request_id") }
    guard ReconciliationIDs.entryKey(request.entryID) != nil else { throw APIError.invalidArgument("entry_id", "not an entry id (stm-….NNNNNN)") }
    guard !request.paymentIds.isEmpty else { throw APIError.invalidArgument("payment_ids", "name at least one payment") }
    guard request.paymentIds.count <= Limits.maxBatchItems else {
      throw APIError.invalidArgument("payment_ids", "at most \(Limits.maxBatchItems) payments")
    }
    guard Set(request.paymentIds).count == request.paymentIds.count else { throw APIError.invalidArgument("payment_ids", "names a payment twice") }
    for id in request.paymentIds where id.isEmpty || id.utf8.count > Limits.maxAccountIDLength * 2 {
      throw APIError.invalidArgument("payment_ids", "'\(LogText.prefix(id, maxBytes: 64))' is not a payment id")
    }
    try Self.requireNote(request.note)
    let (match, receipt) = try await self.clerk {
      try self.reconciler.match(entryID: request.entryID, paymentIDs: request.paymentIds, note: request.note, by: caller.principal.identity)
    }
    return .with {
      $0.match = Banklink_V1_Match(match)
      $0.receipt = Banklink_V1_Receipt(receipt)
    }
  }

  func unmatchEntry(request: Banklink_V1_UnmatchEntryRequest, context: ServerContext) async throws -> Banklink_V1_UnmatchEntryResponse {
    let caller = try Caller.required()
    if !request.requestID.isEmpty { try validIdempotencyKey(request.requestID, field: "request_id") }
    guard ReconciliationIDs.entryKey(request.entryID) != nil else { throw APIError.invalidArgument("entry_id", "not an entry id (stm-….NNNNNN)") }
    try Self.requireNote(request.note)
    let receipt = try await self.clerk {
      try self.reconciler.unmatch(entryID: request.entryID, note: request.note, by: caller.principal.identity)
    }
    return .with { $0.receipt = Banklink_V1_Receipt(receipt) }
  }

  static func requireNote(_ note: String) throws {
    guard !note.isEmpty else { throw APIError.invalidArgument("note", "is required: say why, for the audit trail") }
    if let problem = PaymentValidation.textProblem(note, maxLength: Limits.maxApprovalCommentLength) {
      throw APIError.invalidArgument("note", problem)
    }
  }

  /// A clerk's change, serialised with imports and runs; refusals become their statuses.
  func clerk<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    do {
      return try await self.mappingStorage { try await self.statements.queue.run { try await onOwnThread(body) } }
    } catch let refusal as ReconciliationRefusal {
      switch refusal {
      case .entryNotFound(let id): throw APIError.notFound("statement entry", id)
      case .paymentNotFound(let id): throw APIError.notFound("payment", id)
      case .alreadyMatched, .paymentAlreadyMatched, .notMatched, .notBooked, .paymentNotReconcilable:
        throw RPCError(code: .failedPrecondition, message: "\(refusal)")
      case .wrongAccount: throw APIError.invalidArgument("payment_ids", "\(refusal)")
      case .scopeTooLarge: throw RPCError(code: .resourceExhausted, message: "\(refusal)")
      }
    }
  }
}

extension Banklink_V1_Match {
  init(_ match: EntryMatch) {
    self.init()
    self.entryID = match.entryID
    self.paymentIds = match.paymentIDs
    self.method =
      switch match.method {
      case .reference: .reference
      case .heuristic: .heuristic
      case .batch: .batch
      case .returned: .return
      case .manual: .manual
      }
    self.score = Int32(match.score)
    self.reason = match.reason
    self.difference = .with {
      $0.minorUnits = match.differenceMinor
      $0.currencyCode = match.currency
    }
    self.matchedBy = match.matchedBy
    self.matchTime = match.time.timestamp
    self.note = match.note
  }
}


extension Banklink_V1_StatementFormat {
  init(_ format: BankLinkFormats.StatementFormat) {
    switch format {
    case .camt052: self = .camt052
    case .camt053: self = .camt053
    case .camt054: self = .camt054
    case .mt940: self = .mt940
    case .mt942: self = .mt942
    }
  }
}

extension Banklink_V1_StatementSummary {
  init(_ statement: StoredStatement) {
    self.init()
    self.statementID = statement.id
    self.accountID = statement.accountID
    self.format = Banklink_V1_StatementFormat(statement.format)
    self.bankStatementID = statement.bankStatementID
    self.messageID = statement.messageID
    self.sequenceNumber = Int64(statement.sequenceNumber ?? 0)
    if let opening = statement.opening { self.openingBalance = .with { $0.minorUnits = opening.amountMinor; $0.currencyCode = opening.currency } }
    if let closing = statement.closing { self.closingBalance = .with { $0.minorUnits = closing.amountMinor; $0.currencyCode = closing.currency } }
    self.fromDate = statement.fromDate
    self.toDate = statement.toDate
    self.entries = Int64(statement.entries)
    self.duplicateEntries = Int64(statement.duplicates)
    self.breaks = statement.breaks.map { item in
      .with {
        $0.kind = item.kind.rawValue
        $0.accountID = item.account
        $0.bankStatementID = item.statementID
        $0.message = item.message
      }
    }
    self.fileName = statement.fileName
    self.fileSha256 = statement.fileSHA256
    self.importedBy = statement.importedBy
    self.importTime = statement.importTime.timestamp
  }
}

extension Banklink_V1_StatementEntry {
  init(_ stored: StoredStatementEntry, statementID: String) {
    self.init()
    let entry = stored.entry
    let first = entry.details.first
    self.entryID = stored.id
    self.statementID = statementID
    self.accountID = stored.accountID
    self.amount = .with { $0.minorUnits = entry.amountMinor; $0.currencyCode = entry.currency }
    self.direction = entry.direction == .credit ? .credit : .debit
    self.bookingDate = entry.bookingDate
    self.valueDate = entry.valueDate
    self.status = entry.status
    self.reversal = entry.reversal
    self.bankTransactionCode = entry.bankTransactionCode
    self.bankReference = entry.accountServicerReference
    self.endToEndID = first?.endToEndID ?? ""
    if self.endToEndID.isEmpty, !entry.customerReference.isEmpty, entry.customerReference != "NONREF" {
      self.endToEndID = entry.customerReference
    }
    self.instructionID = first?.instructionID ?? ""
    self.returnReason = first?.returnReason ?? ""
    let charges = entry.details.reduce(Int64(0)) { $0 &+ $1.chargesMinor }
    if charges != 0 { self.charges = .with { $0.minorUnits = charges; $0.currencyCode = entry.currency } }
    self.transactionCount = Int32(clamping: max(entry.batchCount ?? 0, entry.details.count, 1))
    if let first {
      self.counterparty = .with {
        $0.name = first.counterpartyName
        $0.accountNumber = first.counterpartyAccount
        $0.bankBic = first.counterpartyBIC
      }
    }
    self.description_p = ((first?.remittance ?? []) + [entry.additionalInfo, first?.additionalInfo ?? ""])
      .filter { !$0.isEmpty }.joined(separator: " / ")
  }
}
