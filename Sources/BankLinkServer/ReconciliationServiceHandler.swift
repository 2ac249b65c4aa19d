import BankLinkCore
import BankLinkFormats
import BankLinkProto
import BankLinkStore
import Crypto
import Foundation
import GRPCCore
import SwiftProtobuf

/// `banklink.v1.ReconciliationService`.
struct ReconciliationServiceHandler: Banklink_V1_ReconciliationService.SimpleServiceProtocol {
  typealias Method = Banklink_V1_ReconciliationService.Method

  let statements: StatementStore

  /// Where uploads are spooled while they arrive: inside the data directory, so a file of
  /// ``Limits/maxStatementFileBytes`` lands on the disk that is sized for the daemon's data.
  var spoolDirectory: String { self.statements.store.configuration.directory + "/spool" }

  func importStatement(
    request: RPCAsyncSequence<Banklink_V1_ImportStatementRequest, any Error>,
    context: ServerContext
  ) async throws -> Banklink_V1_ImportStatementResponse {
    let caller = try Caller.required()
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
        try handle.write(contentsOf: chunk.content)
      }
      try handle.synchronize()
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
    return .with {
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

  func reconcile(request: Banklink_V1_ReconcileRequest, context: ServerContext) async throws -> Banklink_V1_ReconcileResponse {
    throw unimplemented(Method.Reconcile.descriptor)
  }

  func getReconciliationReport(
    request: Banklink_V1_GetReconciliationReportRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ReconciliationReport {
    throw unimplemented(Method.GetReconciliationReport.descriptor)
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
