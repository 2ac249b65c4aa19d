import ArgumentParser
import BankLinkCommandLine
import BankLinkFormats
import Foundation

/// `banklink statements`: bank statement files (docs/formats.md).
struct StatementsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "statements", abstract: "Bank statement files: check one locally before the bank is connected.",
    subcommands: [Parse.self])

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
