import ArgumentParser
import BankLinkClient
import BankLinkCommandLine
import BankLinkCore
import BankLinkProto
import Foundation
import GRPCCore
import SwiftProtobuf

/// `banklink reconcile`: statement entries against payments (docs/reconciliation.md).
struct ReconcileCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "reconcile",
    abstract: "Reconcile statement entries against payments; read reports; match and unmatch by hand.",
    subcommands: [Run.self, Report.self, Match.self, Unmatch.self],
    defaultSubcommand: Run.self)

  struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "run",
      abstract: "Reconcile an account's booked entries (reconciler or admin): `banklink reconcile ACCOUNT --from --to`.",
      discussion: """
        Matches unmatched booked entries to payments by EndToEndId, then a batch by sum and
        count, then by amount, value date and counterparty; settles what the bank booked and
        moves returned payments to `returned`. Prints the totals and the report's id; `banklink
        reconcile report ID` shows it. Runs after every import on its own.
        """)
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The account; omit for every account.") var account: String?
    @Option(help: "First booking date (2026-12-01).") var from: String?
    @Option(help: "Last booking date (2026-12-31).") var to: String?

    func run() async throws {
      let from = try self.from.map { try parseTime($0, option: "--from") }
      let to = try self.to.map { try parseTime($0, option: "--to") }
      let response = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          try await Banklink_V1_ReconciliationService.Client(wrapping: client).reconcile(.with {
            $0.accountID = self.account ?? ""
            if let from { $0.startTime = from }
            if let to { $0.endTime = to }
          })
        }
      }
      if self.connection.json {
        try printJSON(response)
        return
      }
      printFields([
        ("report", response.reportID),
        ("matched", "\(response.matched) (settled \(response.settled), returned \(response.returned))"),
        ("unmatched", "\(response.unmatchedEntries) entries, \(response.unmatchedPayments) payments"),
        ("receipt", "journal entry \(response.receipt.journalSequence) \(hex(response.receipt.entryHash))"),
      ])
    }
  }

  struct Report: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "A reconciliation report: matches, unmatched entries, unmatched payments (auditor, reconciler, admin).")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The report's id (rec-…).") var id: String
    @Flag(help: "CSV: one line per item (section, entry, payments, amount, method or class, score, reason).") var csv = false

    func run() async throws {
      let report = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          let service = Banklink_V1_ReconciliationService.Client(wrapping: client)
          var whole = Banklink_V1_ReconciliationReport()
          var token = ""
          repeat {
            let page = try await service.getReconciliationReport(.with {
              $0.reportID = self.id
              $0.pageSize = Int32(Limits.maxPageSize)
              $0.pageToken = token
            })
            let (matches, entries, payments) = (whole.matches + page.matches, whole.unmatchedEntries + page.unmatchedEntries, whole.unmatchedPayments + page.unmatchedPayments)
            whole = page
            whole.matches = matches
            whole.unmatchedEntries = entries
            whole.unmatchedPayments = payments
            token = page.nextPageToken
          } while !token.isEmpty
          whole.nextPageToken = ""
          return whole
        }
      }
      if self.connection.json {
        try printJSON(report)
        return
      }
      func signed(_ entry: Banklink_V1_StatementEntry) -> String {
        (entry.direction == .debit ? "-" : "+") + formatMoney(entry.amount)
      }
      if self.csv {
        if report.incomplete {
          // Not in the CSV itself (its lines are items): on stderr, where a script sees it.
          FileHandle.standardError.write(
            Data("warning: report \(report.reportID) is INCOMPLETE: the run was cut short or is still going; these are the lines it committed\n".utf8))
        }
        func field(_ text: String) -> String {
          text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" }) ? "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : text
        }
        Swift.print("section,entry_id,booking_date,payment_ids,amount,method_or_class,score,difference,reason")
        for match in report.matches {
          Swift.print([
            "matched", match.entryID, match.entry.bookingDate, match.paymentIds.joined(separator: " "), signed(match.entry),
            methodName(match.method), String(match.score), String(match.difference.minorUnits), match.reason,
          ].map(field).joined(separator: ","))
        }
        for item in report.unmatchedEntries {
          Swift.print([
            "unmatched_entry", item.entry.entryID, item.entry.bookingDate, "", signed(item.entry), item.classification, "", "", item.reason,
          ].map(field).joined(separator: ","))
        }
        for payment in report.unmatchedPayments {
          Swift.print([
            "unmatched_payment", "", "", payment.paymentID, "-" + formatMoney(payment.amount), statusText(payment.status), "", "",
            payment.creditorName,
          ].map(field).joined(separator: ","))
        }
        return
      }
      printFields([
        ("report", "\(report.reportID) by \(report.createdBy) at \(isoTime(report.createTime))"),
        ("scope", "\(report.accountID.isEmpty ? "every account" : report.accountID), booked \(report.fromDate.isEmpty ? "…" : report.fromDate)..\(report.toDate.isEmpty ? "…" : report.toDate)"),
        ("totals", "\(report.matchedCount) matched (settled \(report.settledCount), returned \(report.returnedCount)), \(report.unmatchedEntryCount) entries and \(report.unmatchedPaymentCount) payments unmatched"),
      ] + (report.incomplete ? [("state", "INCOMPLETE: the run was cut short or is still going; these are the lines it committed")] : []))
      if !report.matches.isEmpty {
        Swift.print("\nmatched")
        printTable(
          ["entry", "booked", "amount", "payments", "method", "score", "difference", "reason"],
          report.matches.map {
            [$0.entryID, $0.entry.bookingDate, signed($0.entry), $0.paymentIds.joined(separator: " "), methodName($0.method), String($0.score),
             $0.difference.minorUnits == 0 ? "" : formatMoney($0.difference), $0.reason]
          }, maxCellWidth: 80)
      }
      if !report.unmatchedEntries.isEmpty {
        Swift.print("\nunmatched entries")
        printTable(
          ["entry", "booked", "amount", "class", "bank ref", "reason"],
          report.unmatchedEntries.map { [$0.entry.entryID, $0.entry.bookingDate, signed($0.entry), $0.classification, $0.entry.bankReference, $0.reason] },
          maxCellWidth: 80)
      }
      if !report.unmatchedPayments.isEmpty {
        Swift.print("\nunmatched payments")
        printTable(
          ["payment", "account", "amount", "status", "age", "creditor"],
          report.unmatchedPayments.map {
            [$0.paymentID, $0.accountID, formatMoney($0.amount), statusText($0.status), "\($0.age.seconds / 86_400) d", $0.creditorName]
          })
      }
    }
  }

  struct Match: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Match an entry to payments of its account by hand, with a note (audited).")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The entry's id (stm-….NNNNNN).") var entry: String
    @Argument(help: "The payments it books.") var payments: [String]
    @Option(help: "Why (required, kept in the audit journal).") var note: String

    func run() async throws {
      let response = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          try await Banklink_V1_ReconciliationService.Client(wrapping: client).matchEntry(.with {
            $0.entryID = self.entry
            $0.paymentIds = self.payments
            $0.note = self.note
          })
        }
      }
      if self.connection.json {
        try printJSON(response)
        return
      }
      printFields([
        ("matched", "\(response.match.entryID) → \(response.match.paymentIds.joined(separator: ", "))"),
        ("difference", formatMoney(response.match.difference)),
        ("receipt", "journal entry \(response.receipt.journalSequence) \(hex(response.receipt.entryHash))"),
      ])
    }
  }

  struct Unmatch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Undo an entry's match, with a note (audited).")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The entry's id (stm-….NNNNNN).") var entry: String
    @Option(help: "Why (required, kept in the audit journal).") var note: String

    func run() async throws {
      let response = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          try await Banklink_V1_ReconciliationService.Client(wrapping: client).unmatchEntry(.with {
            $0.entryID = self.entry
            $0.note = self.note
          })
        }
      }
      if self.connection.json {
        try printJSON(response)
        return
      }
      printFields([("unmatched", self.entry), ("receipt", "journal entry \(response.receipt.journalSequence) \(hex(response.receipt.entryHash))")])
    }
  }
}

func methodName(_ method: Banklink_V1_MatchMethod) -> String {
  switch method {
  case .reference: "reference"
  case .heuristic: "heuristic"
  case .batch: "batch"
  case .return: "return"
  case .manual: "manual"
  default: "?"
  }
}
