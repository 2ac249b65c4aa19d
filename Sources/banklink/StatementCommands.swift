import ArgumentParser
import BankLinkClient
import BankLinkCommandLine
import BankLinkCore
import BankLinkFormats
import BankLinkProto
import Foundation
import GRPCCore
import SwiftProtobuf

/// `banklink statements`: bank statement files (docs/formats.md).
struct StatementsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "statements", abstract: "Bank statements: check a file locally, import it, list and show what is stored.",
    subcommands: [Parse.self, Import.self, List.self, Show.self])

  struct Import: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Import a camt.052/053/054 or MT940/942 file into the daemon (reconciler or admin).",
      discussion: """
        The file is streamed to the daemon in chunks (the format is detected from the content
        unless --format says it) and checked whole before anything is stored: a malformed file,
        an unknown account or a currency that is not the account's is refused and nothing is
        kept. Entries already stored are counted as duplicates; the same file again is answered
        with the first import's result. Continuity breaks are printed and raised as
        reconciliation_break alerts. A progress line is shown on a terminal for large files.
        Exit codes: 0 imported (or imported before), 65 refused, 69 the daemon is unreachable.
        """)
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The statement file.") var file: String
    @Option(help: "camt.052, camt.053, camt.054, MT940 or MT942; the content must match.") var format: String?
    @Flag(help: "No progress line, even on a terminal.") var quiet = false

    /// Bytes per message: well under the daemon's chunk limit.
    static let chunkBytes = 1 << 20
    /// Files smaller than this are sent without a progress line.
    static let progressFromBytes: Int64 = 8 << 20

    func run() async throws {
      guard let handle = FileHandle(forReadingAtPath: self.file) else { throw ValidationError("cannot read \(self.file)") }
      defer { try? handle.close() }
      let size = (try? FileManager.default.attributesOfItem(atPath: self.file)[.size] as? NSNumber)?.int64Value ?? 0
      let format: Banklink_V1_StatementFormat =
        switch self.format?.lowercased() {
        case nil: .unspecified
        case "camt.052", "camt052": .camt052
        case "camt.053", "camt053": .camt053
        case "camt.054", "camt054": .camt054
        case "mt940": .mt940
        case "mt942": .mt942
        default: throw ValidationError("--format: '\(self.format!)' is not camt.052, camt.053, camt.054, MT940 or MT942")
        }
      let fileName = URL(fileURLWithPath: self.file).lastPathComponent
      let progress = !self.quiet && size >= Self.progressFromBytes && isatty(STDERR_FILENO) == 1
      let response: Banklink_V1_ImportStatementResponse
      do {
        response = try await withBankLinkClient(self.connection.client) { client in
          try await Banklink_V1_ReconciliationService.Client(wrapping: client).importStatement(
            requestProducer: { writer in
              var sent: Int64 = 0
              var first = true
              while let chunk = try handle.read(upToCount: Self.chunkBytes), !chunk.isEmpty {
                try await writer.write(.with {
                  if first {
                    $0.format = format
                    $0.fileName = fileName
                    first = false
                  }
                  $0.content = chunk
                })
                sent += Int64(chunk.count)
                if progress {
                  let percent = size > 0 ? sent * 100 / size : 100
                  FileHandle.standardError.write(Data("\rsent \(sent >> 20) of \(size >> 20) MiB (\(percent) %)".utf8))
                }
              }
              if progress { FileHandle.standardError.write(Data("\rsent; the daemon is checking and storing the file…\n".utf8)) }
            })
        }
      } catch let error as RPCError
        where error.code == .invalidArgument || (error.code == .resourceExhausted && error.message.hasPrefix("content:"))
      {
        // The file itself (malformed, over the size limit, which the daemon reports on
        // `content:`): EX_DATAERR, never worth retrying as it is.
        FileHandle.standardError.write(Data("refused: \(error.message)\n".utf8))
        throw ExitCode(65)
      } catch let error as RPCError where error.code == .resourceExhausted {
        // The daemon busy (uploads in progress) or its disk or store full: EX_TEMPFAIL, the
        // same file can be sent again later.
        FileHandle.standardError.write(Data("banklink: try again later: \(error.message)\n".utf8))
        throw ExitCode(75)
      } catch let error as RPCError {
        FileHandle.standardError.write(Data("banklink: \(statusName(error.code)): \(error.message)\n".utf8))
        throw ExitCode(error.code == .unavailable ? 69 : 1)
      }
      if self.connection.json {
        try printJSON(response)
        return
      }
      Swift.print(
        response.duplicateFile
          ? "imported before (same SHA-256 \(response.fileSha256.prefix(16))…): nothing stored again"
          : "imported \(response.entriesImported) entries in \(response.statements.count) statement(s); \(response.duplicateEntries) already stored")
      for statement in response.statements { printStatementLine(statement) }
      if response.hasReceipt {
        printFields([("receipt", "journal entry \(response.receipt.journalSequence) \(hex(response.receipt.entryHash))")])
      }
      if response.hasReconciliation {
        let run = response.reconciliation
        printFields([
          ("reconciled",
           "\(run.matched) matched (settled \(run.settled), returned \(run.returned)), \(run.unmatchedEntries) entries and \(run.unmatchedPayments) payments unmatched: banklink reconcile report \(run.reportID)"),
        ])
      }
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stored statements in import order (auditor, reconciler, admin).")
    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Only this account's statements.") var account: String?
    @Option(help: "Most statements to print.") var limit = 100

    func run() async throws {
      let statements = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          let service = Banklink_V1_ReconciliationService.Client(wrapping: client)
          var statements: [Banklink_V1_StatementSummary] = []
          var token = ""
          repeat {
            let page = try await service.listStatements(.with {
              $0.accountID = self.account ?? ""
              $0.pageSize = Int32(min(self.limit - statements.count, Limits.maxPageSize))
              $0.pageToken = token
            })
            statements += page.statements
            token = page.nextPageToken
          } while !token.isEmpty && statements.count < self.limit
          return statements
        }
      }
      if self.connection.json {
        try printJSON(Banklink_V1_ListStatementsResponse.with { $0.statements = statements })
        return
      }
      for statement in statements { printStatementLine(statement) }
    }
  }

  struct Show: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "One stored statement with its entries (auditor, reconciler, admin).")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The statement's id (stm-…).") var id: String
    @Option(help: "Most entries to print.") var limit = 1_000

    func run() async throws {
      let (statement, entries) = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          let service = Banklink_V1_ReconciliationService.Client(wrapping: client)
          var entries: [Banklink_V1_StatementEntry] = []
          var statement = Banklink_V1_StatementSummary()
          var token = ""
          repeat {
            let page = try await service.getStatement(.with {
              $0.statementID = self.id
              $0.pageSize = Int32(min(self.limit - entries.count, Limits.maxStatementEntriesPage))
              $0.pageToken = token
            })
            statement = page.statement
            entries += page.entries
            token = page.nextPageToken
          } while !token.isEmpty && entries.count < self.limit
          return (statement, entries)
        }
      }
      if self.connection.json {
        try printJSON(Banklink_V1_GetStatementResponse.with {
          $0.statement = statement
          $0.entries = entries
        })
        return
      }
      printStatementLine(statement)
      printFields([
        ("file", "\(statement.fileName) (SHA-256 \(statement.fileSha256.prefix(16))…)"),
        ("imported", "\(isoTime(statement.importTime)) by \(statement.importedBy)"),
      ])
      printTable(
        ["entry", "booked", "value", "amount", "status", "bank ref", "end-to-end", "counterparty", "details"],
        entries.map { entry in
          [
            entry.entryID, entry.bookingDate, entry.valueDate,
            (entry.direction == .debit ? "-" : "+") + formatMoney(entry.amount) + (entry.reversal ? " (reversal)" : ""),
            entry.status, entry.bankReference, entry.endToEndID, entry.counterparty.name,
            entry.transactionCount > 1 ? "batch of \(entry.transactionCount)" : entry.description_p,
          ]
        })
    }
  }

  struct Parse: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Parse a camt.052/053/054 or MT940/942 file locally (no daemon) and print what an import would store.",
      discussion: """
        The format is detected from the content. Prints each statement (account, numbers,
        balances), every entry with its details, and any continuity break (entries that do not
        sum from opening to closing, an opening that is not the previous closing, a gap in the
        statement numbers). The file is read as a stream: a file of a million entries is fine,
        in bounded memory (use --summary to print only the totals).
        Exit codes: 0 read (breaks are printed, not fatal), 65 the file is refused (the line,
        element and reason are printed).
        """)
    @Argument(help: "The statement file.") var file: String
    @Flag(help: "JSON lines: one object per statement, entry, end and break.") var json = false
    @Flag(help: "Only the totals: statements, entries, sums per currency and direction, breaks.") var summary = false

    func run() async throws {
      guard FileManager.default.isReadableFile(atPath: self.file) else { throw ValidationError("cannot read \(self.file)") }
      let output = StatementPrinter(json: self.json, summary: self.summary)
      let started = ContinuousClock.now
      do {
        let kind = try StatementFiles.read(.file(self.file)) { event in output.take(event) }
        output.finish(kind: kind, elapsed: ContinuousClock.now - started)
      } catch let error as FormatError {
        output.flush()
        FileHandle.standardError.write(Data("refused: \(error)\n".utf8))
        throw ExitCode(65)
      }
    }
  }
}

/// `stm-000000000001  icbc-cny-001  camt.053  2026-12-01..2026-12-01  opening … closing …  12 entries (3 duplicates)`
/// and a line per continuity break.
func printStatementLine(_ statement: Banklink_V1_StatementSummary) {
  let format =
    switch statement.format {
    case .camt052: "camt.052"
    case .camt053: "camt.053"
    case .camt054: "camt.054"
    case .mt940: "MT940"
    case .mt942: "MT942"
    default: "?"
    }
  var parts = [statement.statementID, statement.accountID, format, statement.bankStatementID]
  if statement.sequenceNumber > 0 { parts.append("#\(statement.sequenceNumber)") }
  if !statement.fromDate.isEmpty { parts.append(statement.fromDate == statement.toDate ? statement.fromDate : "\(statement.fromDate)..\(statement.toDate)") }
  if statement.hasOpeningBalance { parts.append("opening \(formatMoney(statement.openingBalance))") }
  if statement.hasClosingBalance { parts.append("closing \(formatMoney(statement.closingBalance))") }
  parts.append("\(statement.entries) entries" + (statement.duplicateEntries > 0 ? " (\(statement.duplicateEntries) duplicates)" : ""))
  Swift.print(parts.joined(separator: "  "))
  for item in statement.breaks { Swift.print("  BREAK \(item.kind): \(item.message)") }
}

/// Prints a reader's events as they come (nothing but the totals is kept).
final class StatementPrinter {
  let json: Bool
  let summary: Bool
  var tracker = ContinuityTracker()
  var statements = 0
  var entries = 0
  var breaks = 0
  /// currency → (credits, debits) in minor units, booked entries only; nil once a sum would
  /// exceed 64 bits (printed as such, never wrapped).
  var sums: [String: (credits: Int64, debits: Int64)?] = [:]
  var header: StatementHeader?
  var out = ""
  let encoder: JSONEncoder = {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return encoder
  }()

  init(json: Bool, summary: Bool) {
    self.json = json
    self.summary = summary
  }

  func write(_ line: String) {
    self.out += line
    self.out += "\n"
    if self.out.utf8.count > 1 << 16 { self.flush() }
  }

  func flush() {
    FileHandle.standardOutput.write(Data(self.out.utf8))
    self.out = ""
  }

  func jsonLine(_ key: String, _ value: some Encodable) {
    guard let data = try? self.encoder.encode([key: value]) else { return }
    self.write(String(decoding: data, as: UTF8.self))
  }

  static func amount(_ minor: Int64, _ currency: String) -> String {
    FormatValues.decimal(minor, currency: currency) + (currency.isEmpty ? "" : " " + currency)
  }

  func take(_ event: StatementEvent) {
    for found in self.tracker.take(event) {
      self.breaks += 1
      if self.json { self.jsonLine("break", found) } else if !self.summary { self.write("BREAK  \(found)") }
    }
    switch event {
    case .begin(let header):
      self.statements += 1
      self.header = header
      if self.json {
        self.jsonLine("statement", header)
      } else if !self.summary {
        let account = header.account.identification + (header.account.currency.isEmpty ? "" : " (\(header.account.currency))")
        var numbers = header.sequenceNumber.map { "no. \($0)" } ?? ""
        if let page = header.page { numbers += "/\(page)" }
        self.write("\(header.format.rawValue) \(header.statementID)  account \(account)  \(numbers)  message \(header.messageID)")
        for balance in header.balances {
          self.write("  balance \(balance.type) \(balance.date)  \(Self.amount(balance.amountMinor, balance.currency))")
        }
      }
    case .entry(let entry):
      self.entries += 1
      if entry.status == "BOOK" {
        if var sum = self.sums[entry.currency] ?? (0, 0) {
          let overflow: Bool
          if entry.direction == .credit {
            (sum.credits, overflow) = sum.credits.addingReportingOverflow(entry.amountMinor)
          } else {
            (sum.debits, overflow) = sum.debits.addingReportingOverflow(entry.amountMinor)
          }
          self.sums[entry.currency] = overflow ? .some(nil) : sum
        }
      }
      if self.json {
        self.jsonLine("entry", entry)
      } else if !self.summary {
        let sign = entry.direction == .credit ? "+" : "-"
        var line = "  \(entry.bookingDate.isEmpty ? entry.valueDate : entry.bookingDate)  \(entry.status)  \(sign)\(Self.amount(entry.amountMinor, entry.currency))"
        if entry.reversal { line += "  REVERSAL" }
        if !entry.accountServicerReference.isEmpty { line += "  ref \(entry.accountServicerReference)" }
        if !entry.bankTransactionCode.isEmpty { line += "  \(entry.bankTransactionCode)" }
        if !entry.additionalInfo.isEmpty { line += "  \(entry.additionalInfo)" }
        self.write(line)
        for details in entry.details {
          var parts: [String] = []
          if !details.endToEndID.isEmpty { parts.append("e2e \(details.endToEndID)") }
          if !details.instructionID.isEmpty { parts.append("instr \(details.instructionID)") }
          if let amount = details.amountMinor { parts.append(Self.amount(amount, details.currency)) }
          if !details.counterpartyName.isEmpty { parts.append(details.counterpartyName) }
          if !details.counterpartyAccount.isEmpty { parts.append(details.counterpartyAccount) }
          if !details.counterpartyBIC.isEmpty { parts.append(details.counterpartyBIC) }
          if !details.remittance.isEmpty { parts.append("\"\(details.remittance.joined(separator: " "))\"") }
          if !details.creditorReference.isEmpty { parts.append("ref \(details.creditorReference)") }
          if !details.returnReason.isEmpty { parts.append("return \(details.returnReason)") }
          if details.chargesMinor != 0 { parts.append("charges \(Self.amount(details.chargesMinor, details.currency))") }
          if !parts.isEmpty { self.write("      " + parts.joined(separator: "  ")) }
        }
      }
    case .end(let trailer):
      if self.json {
        self.jsonLine("end", trailer)
      } else if !self.summary {
        for balance in trailer.balances {
          self.write("  balance \(balance.type) \(balance.date)  \(Self.amount(balance.amountMinor, balance.currency))")
        }
        if !trailer.additionalInfo.isEmpty { self.write("  info \(trailer.additionalInfo)") }
      }
    }
  }

  func finish(kind: BankFileKind, elapsed: Duration) {
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    if self.json {
      self.write(
        "{\"summary\":{\"format\":\"\(kind.rawValue)\",\"statements\":\(self.statements),\"entries\":\(self.entries),\"breaks\":\(self.breaks)}}")
    } else {
      if !self.summary { self.write("") }
      self.write("\(kind.rawValue): \(self.statements) statements, \(self.entries) entries, \(self.breaks) continuity breaks")
      for currency in self.sums.keys.sorted() {
        let name = currency.isEmpty ? "(no currency)" : currency
        if let sum = self.sums[currency] ?? nil {
          self.write("  booked \(name): +\(Self.amount(sum.credits, currency)) -\(Self.amount(sum.debits, currency))")
        } else {
          self.write("  booked \(name): sums beyond 64 bits")
        }
      }
      if self.summary {
        self.write(String(format: "  read in %.2f s (%.0f entries/s)", seconds, seconds > 0 ? Double(self.entries) / seconds : 0))
      }
    }
    self.flush()
  }
}
