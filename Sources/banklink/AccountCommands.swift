import ArgumentParser
import BankLinkClient
import BankLinkCommandLine
import BankLinkCore
import BankLinkProto
import Foundation
import GRPCCore
import SwiftProtobuf

struct AccountsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "accounts",
    abstract: "List the enterprise accounts (follows every page)."
  )

  @OptionGroup var connection: ConnectionOptions

  @Option(help: "Only accounts at the bank with this BIC.")
  var bank: String?

  @Option(help: "Only accounts in this ISO 4217 currency.")
  var currency: String?

  func run() async throws {
    let accounts = try await reportingFailures {
      try await withBankLinkClient(self.connection.client) { client in
        try await allAccounts(client, bank: self.bank ?? "", currency: self.currency ?? "")
      }
    }
    if self.connection.json {
      try printJSON(Banklink_V1_ListAccountsResponse.with { $0.accounts = accounts })
      return
    }
    printTable(
      ["ACCOUNT", "CCY", "BANK", "NUMBER / IBAN", "NAME", "STATUS"],
      accounts.map { account in
        [
          account.accountID, account.currencyCode, account.bankBic,
          account.iban.isEmpty ? account.accountNumber : account.iban, account.displayName,
          "\(account.status)".lowercased(),
        ]
      }
    )
  }
}

struct BalanceCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "balance",
    abstract: "Show the ledger and available balance of an account, with how fresh it is."
  )

  @OptionGroup var connection: ConnectionOptions

  @Argument(help: "Account id (see `banklink accounts`).")
  var account: String

  @Flag(help: "Ask the bank live; answers from the cache, marked stale, if the bank is slow or down.")
  var refresh = false

  @Option(help: "Deadline of the call in milliseconds.")
  var timeoutMs = 5_000

  func run() async throws {
    let balance = try await reportingFailures {
      try await withBankLinkClient(self.connection.client) { client in
        var options = CallOptions.defaults
        options.timeout = .milliseconds(self.timeoutMs)
        return try await Banklink_V1_AccountService.Client(wrapping: client).getBalance(
          .with {
            $0.accountID = self.account
            $0.refresh = self.refresh
          },
          options: options
        )
      }
    }
    if self.connection.json {
      try printJSON(balance)
      return
    }
    printFields([
      ("account", balance.accountID),
      ("ledger", formatMoney(balance.ledger)),
      ("available", formatMoney(balance.available)),
      ("as of", isoTime(balance.asOf)),
      ("staleness", String(format: "%.3f s", Double(balance.staleness.seconds) + Double(balance.staleness.nanos) / 1e9)),
      ("stale", balance.stale ? "yes" : "no"),
      ("source", balance.source == .bank ? "bank (live)" : "cache"),
    ])
  }
}

struct TransactionsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "transactions",
    abstract: "List booked transactions of an account, oldest first (follows pages up to --limit)."
  )

  @OptionGroup var connection: ConnectionOptions

  @Argument(help: "Account id.")
  var account: String

  @Option(help: "Booked at or after: ISO 8601 date (2026-11-01) or time (2026-11-01T08:00:00Z).")
  var from: String?

  @Option(help: "Booked before: ISO 8601 date or time.")
  var to: String?

  @Option(help: "debit or credit; both when absent.")
  var direction: String?

  @Option(help: "Most transactions to print.")
  var limit = 50

  func run() async throws {
    let start = try self.from.map { try parseTime($0, option: "--from") }
    let end = try self.to.map { try parseTime($0, option: "--to") }
    let direction: Banklink_V1_Direction
    switch self.direction?.lowercased() {
    case nil: direction = .unspecified
    case "debit": direction = .debit
    case "credit": direction = .credit
    case let other?: throw ValidationError("--direction must be debit or credit, not '\(other)'")
    }
    guard self.limit > 0 else { throw ValidationError("--limit must be positive") }

    let transactions = try await reportingFailures {
      try await withBankLinkClient(self.connection.client) { client in
        let service = Banklink_V1_AccountService.Client(wrapping: client)
        var transactions: [Banklink_V1_Transaction] = []
        var token = ""
        repeat {
          let page = try await service.listTransactions(.with {
            $0.accountID = self.account
            if let start { $0.startTime = start }
            if let end { $0.endTime = end }
            $0.direction = direction
            $0.pageSize = Int32(min(self.limit - transactions.count, Limits.maxPageSize))
            $0.pageToken = token
          })
          transactions += page.transactions
          token = page.nextPageToken
        } while !token.isEmpty && transactions.count < self.limit
        return transactions
      }
    }
    if self.connection.json {
      try printJSON(Banklink_V1_ListTransactionsResponse.with { $0.transactions = transactions })
      return
    }
    printTable(
      ["BOOKED", "DIR", "AMOUNT", "COUNTERPARTY", "REFERENCE", "DESCRIPTION"],
      transactions.map { transaction in
        [
          isoTime(transaction.bookingTime), transaction.direction == .credit ? "CR" : "DR",
          formatMoney(transaction.amount), transaction.counterparty.name, transaction.bankReference,
          transaction.description_p,
        ]
      }
    )
  }
}

func formatMoney(_ money: Banklink_V1_Money) -> String {
  guard let currency = CurrencyCode(money.currencyCode) else { return "\(money.minorUnits) \(money.currencyCode)" }
  return Money(minorUnits: money.minorUnits, currency: currency).description
}

func isoTime(_ timestamp: Google_Protobuf_Timestamp) -> String {
  let formatter = ISO8601DateFormatter()
  return formatter.string(from: timestamp.date)
}

func parseTime(_ text: String, option: String) throws -> Google_Protobuf_Timestamp {
  let formatter = ISO8601DateFormatter()
  if let date = formatter.date(from: text) { return Google_Protobuf_Timestamp(date: date) }
  formatter.formatOptions = [.withFullDate]
  if let date = formatter.date(from: text) { return Google_Protobuf_Timestamp(date: date) }
  throw ValidationError("\(option): '\(text)' is not an ISO 8601 date (2026-11-01) or time (2026-11-01T08:00:00Z)")
}

/// Every account the gateway holds (following pages), optionally of one bank or currency.
func allAccounts(_ client: GRPCClient<some ClientTransport>, bank: String = "", currency: String = "") async throws -> [Banklink_V1_Account] {
  let service = Banklink_V1_AccountService.Client(wrapping: client)
  var accounts: [Banklink_V1_Account] = []
  var token = ""
  repeat {
    let page = try await service.listAccounts(.with {
      $0.pageSize = Int32(Limits.maxPageSize)
      $0.pageToken = token
      $0.bankBic = bank
      $0.currencyCode = currency
    })
    accounts += page.accounts
    token = page.nextPageToken
  } while !token.isEmpty
  return accounts
}
