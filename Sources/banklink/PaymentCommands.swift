import ArgumentParser
import BankLinkClient
import BankLinkCommandLine
import BankLinkCore
import BankLinkProto
import Foundation
import GRPCCore
import SwiftProtobuf

struct PayCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "pay",
    abstract: "Create a payment (idempotent: retry with the same --idempotency-key after any failure).",
    discussion: """
      The amount is a decimal in the currency's units (1234.56 CNY), converted exactly to minor
      units. Without --idempotency-key a key is generated and printed: keep it to retry safely.
      Example (as the payer 'erp'):
        banklink pay --cert certs/dev/erp.pem --key certs/dev/erp.key --from icbc-cny-001 \\
          --to-name "Shanghai Huaxin Trading Co., Ltd." --to-account "3100 2011 0904 0012 345" \\
          --to-bic CMBCCNBS --to-country CN --amount 1234.56 --currency CNY --purpose "INV-2026-0042"
      """
  )

  @OptionGroup var connection: ConnectionOptions

  @Option(help: "Debtor account id.") var from: String
  @Option(name: .customLong("to-name"), help: "Creditor name.") var toName: String
  @Option(name: .customLong("to-account"), help: "Creditor account number (or use --to-iban).") var toAccount: String?
  @Option(name: .customLong("to-iban"), help: "Creditor IBAN.") var toIBAN: String?
  @Option(name: .customLong("to-bic"), help: "Creditor bank BIC.") var toBIC: String
  @Option(name: .customLong("to-country"), help: "Creditor bank country (ISO 3166 alpha-2).") var toCountry: String
  @Option(help: "Amount as a decimal, e.g. 1234.56.") var amount: String
  @Option(help: "ISO 4217 currency of the debtor account.") var currency: String
  @Option(help: "Remittance information.") var purpose = ""
  @Option(help: "Requested execution date YYYY-MM-DD (default: next execution day).") var date = ""
  @Option(help: "internal_transfer, domestic, cross_border or payroll_item.") var type = "domestic"
  @Option(name: .customLong("idempotency-key"), help: "Idempotency key (generated if absent).") var idempotencyKey: String?

  func run() async throws {
    guard let code = CurrencyCode(self.currency.uppercased()) else {
      throw ValidationError("--currency must be an ISO 4217 code such as CNY")
    }
    guard let minorUnits = Money.parseMinorUnits(self.amount, exponent: Money.minorUnitExponent(of: code)) else {
      throw ValidationError("--amount '\(self.amount)' is not a decimal with at most \(Money.minorUnitExponent(of: code)) decimals")
    }
    let type: Banklink_V1_PaymentType
    switch self.type {
    case "internal_transfer": type = .internalTransfer
    case "domestic": type = .domestic
    case "cross_border": type = .crossBorder
    case "payroll_item": type = .payrollItem
    default: throw ValidationError("--type must be internal_transfer, domestic, cross_border or payroll_item")
    }
    let key = self.idempotencyKey ?? "cli-\(UUID().uuidString.lowercased())"
    if self.idempotencyKey == nil && !self.connection.json {
      FileHandle.standardError.write(Data("idempotency key: \(key)\n".utf8))
    }
    let response = try await reportingFailures {
      try await withBankLinkClient(self.connection.client) { client in
        try await Banklink_V1_PaymentService.Client(wrapping: client).createPayment(.with {
          $0.idempotencyKey = key
          $0.instruction = .with {
            $0.debtorAccountID = self.from
            $0.creditor = .with {
              $0.name = self.toName
              $0.accountNumber = self.toAccount ?? ""
              $0.iban = self.toIBAN ?? ""
              $0.bic = self.toBIC
              $0.country = self.toCountry
            }
            $0.amount = .with { $0.minorUnits = minorUnits; $0.currencyCode = code.code }
            $0.purpose = self.purpose
            $0.requestedExecutionDate = self.date
            $0.type = type
          }
        })
      }
    }
    if self.connection.json {
      try printJSON(response)
    } else {
      printPayment(response.payment, extra: [("replayed", response.replayed ? "yes (an earlier call created it)" : "no")])
    }
  }
}

struct PaymentsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "payments",
    abstract: "List, show, cancel and import payments.",
    subcommands: [List.self, Show.self, Cancel.self, Import.self]
  )

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List payments, oldest first (follows pages up to --limit).")
    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Only this status (e.g. pending_approval); repeatable.") var status: [String] = []
    @Option(help: "Only payments from this account.") var account = ""
    @Option(help: "Only payments created by this identity.") var creator = ""
    @Option(help: "Most payments to print.") var limit = 50

    func run() async throws {
      let statuses = try self.status.map { name -> Banklink_V1_PaymentStatus in
        guard let value = Banklink_V1_PaymentStatus.allCases.first(where: { "\($0)".lowercased() == name.replacingOccurrences(of: "_", with: "").lowercased() })
        else { throw ValidationError("--status '\(name)' is not a payment status") }
        return value
      }
      let payments = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          let service = Banklink_V1_PaymentService.Client(wrapping: client)
          var payments: [Banklink_V1_Payment] = []
          var token = ""
          repeat {
            let page = try await service.listPayments(.with {
              $0.statuses = statuses
              $0.debtorAccountID = self.account
              $0.creator = self.creator
              $0.pageSize = Int32(min(self.limit - payments.count, Limits.maxPageSize))
              $0.pageToken = token
            })
            payments += page.payments
            token = page.nextPageToken
          } while !token.isEmpty && payments.count < self.limit
          return payments
        }
      }
      if self.connection.json {
        try printJSON(Banklink_V1_ListPaymentsResponse.with { $0.payments = payments })
        return
      }
      printTable(
        ["PAYMENT", "STATUS", "FROM", "AMOUNT", "CREDITOR", "CREATOR", "CREATED"],
        payments.map { payment in
          [
            payment.paymentID, statusText(payment.status), payment.instruction.debtorAccountID,
            formatMoney(payment.instruction.amount), payment.instruction.creditor.name, payment.creator,
            isoTime(payment.createTime),
          ]
        })
    }
  }

  struct Show: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one payment.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "Payment id.") var payment: String

    func run() async throws {
      let payment = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          try await Banklink_V1_PaymentService.Client(wrapping: client).getPayment(.with { $0.paymentID = self.payment })
        }
      }
      if self.connection.json { try printJSON(payment) } else { printPayment(payment) }
    }
  }

  struct Cancel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Cancel a payment not yet submitted to the bank.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "Payment id.") var payment: String
    @Option(help: "Why.") var reason = ""

    func run() async throws {
      let response = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          try await Banklink_V1_PaymentService.Client(wrapping: client).cancelPayment(.with {
            $0.paymentID = self.payment
            $0.reason = self.reason
            $0.requestID = "cli-\(UUID().uuidString.lowercased())"
          })
        }
      }
      if self.connection.json { try printJSON(response) } else { printPayment(response.payment) }
    }
  }
}

func statusText(_ status: Banklink_V1_PaymentStatus) -> String {
  var text = ""
  for character in "\(status)" {
    if character.isUppercase { text += "_" }
    text += character.lowercased()
  }
  return text
}

func printPayment(_ payment: Banklink_V1_Payment, extra: [(String, String)] = []) {
  let creditor = payment.instruction.creditor
  printFields(
    [
      ("payment", payment.paymentID),
      ("status", statusText(payment.status) + (payment.statusReason.isEmpty ? "" : " (\(payment.statusReason))")),
      ("from", payment.instruction.debtorAccountID),
      ("amount", formatMoney(payment.instruction.amount)),
      ("creditor", "\(creditor.name), \(creditor.iban.isEmpty ? creditor.accountNumber : creditor.iban), \(creditor.bic), \(creditor.country)"),
      ("purpose", payment.instruction.purpose),
      ("end-to-end id", payment.endToEndID),
      ("creator", payment.creator),
      ("idempotency key", payment.idempotencyKey),
      ("created", isoTime(payment.createTime)),
      ("updated", isoTime(payment.updateTime)),
    ] + riskFields(payment) + extra)
}

/// The risk decision of a payment, one line per rule that held.
func riskFields(_ payment: Banklink_V1_Payment) -> [(String, String)] {
  guard payment.hasRiskDecision else { return [] }
  let decision = payment.riskDecision
  var fields = [("risk", "\(ruleActionText(decision.outcome)) (rule set \(decision.ruleSetVersion), score \(decision.score))")]
  for hit in decision.hits {
    fields.append(("  rule", ruleHitText(hit)))
  }
  return fields
}

func ruleActionText(_ action: Banklink_V1_RuleAction) -> String {
  switch action {
  case .allow: "allow"
  case .review: "review"
  case .block: "block"
  default: "unspecified"
  }
}

func ruleHitText(_ hit: Banklink_V1_RuleHit) -> String {
  var text = "\(hit.ruleID) → \(ruleActionText(hit.action))\(hit.shadow ? " (shadow)" : "")"
  if !hit.error.isEmpty { return text + ": error: \(hit.error)" }
  if !hit.because.isEmpty { text += ": " + hit.because.joined(separator: "; ") }
  return text
}
