import ArgumentParser
import BankLinkClient
import BankLinkCommandLine
import BankLinkCore
import BankLinkFormats
import BankLinkProto
import Foundation
import GRPCCore
import SwiftProtobuf

extension PaymentsCommand {
  /// `banklink payments import FILE`: an ERP's payment run (pain.001) as one batch.
  struct Import: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "import",
      abstract: "Import a pain.001 payment run exported by an ERP as one all-or-nothing batch, idempotent by its MsgId.",
      discussion: """
        The file is read here (pain.001.001.03 to .11, as SAP, Oracle, Kingdee and Yonyou export
        them) and sent as one CreatePaymentBatch whose idempotency key is the file's MsgId: importing
        the same run twice creates nothing twice and answers with the same payments. Each debtor
        account is found among the gateway's accounts by IBAN or account number (spaces ignored).
        Nothing is created if any transfer is refused. --dry-run prints what would be sent.
        Exit codes: 0 imported (or replayed), 1 the daemon refused it, 64 a transfer cannot be
        mapped, 65 the file is refused.
        """)
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The pain.001 file.") var file: String
    @Flag(help: "Map and print the batch without sending it.") var dryRun = false

    /// The batch's idempotency key: the ERP's message id, which names the run.
    static func idempotencyKey(_ messageID: String) -> String { "pain001:" + messageID }

    func run() async throws {
      let message: Pain001Reader.Message
      do {
        message = try Pain001Reader.read(.file(self.file))
      } catch let error as FormatError {
        FileHandle.standardError.write(Data("refused: \(error)\n".utf8))
        throw ExitCode(65)
      }
      guard message.transfers.count <= Limits.maxBatchItems else {
        throw ValidationError("\(message.transfers.count) transfers; a batch holds at most \(Limits.maxBatchItems): split the run")
      }
      let key = Self.idempotencyKey(message.messageID)
      let accounts = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { try await allAccounts($0) }
      }
      // A transfer that cannot be mapped is bad input (exit 64), and nothing is sent.
      let items = try Self.items(message, accounts: accounts)
      if self.dryRun {
        try printJSON(Banklink_V1_CreatePaymentBatchRequest.with { $0.idempotencyKey = key; $0.items = items })
        return
      }
      let response = try await reportingFailures {
        try await withBankLinkClient(self.connection.client) { client in
          try await Banklink_V1_PaymentService.Client(wrapping: client).createPaymentBatch(.with {
            $0.idempotencyKey = key
            $0.items = items
          })
        }
      }
      if self.connection.json {
        try printJSON(response)
        return
      }
      printFields([
        ("batch", response.batchID), ("file", "\(message.messageID) (\(message.transfers.count) transfers)"),
        ("replayed", response.replayed ? "yes: this run was imported before; nothing new was created" : "no"),
        ("receipt", "journal entry \(response.receipt.journalSequence) \(hex(response.receipt.entryHash))"),
      ])
      print("")
      // The ERP's references beside the gateway's, so the run can be matched back.
      printTable(
        ["ERP END-TO-END ID", "PAYMENT", "STATUS", "AMOUNT", "CREDITOR"],
        zip(message.transfers, response.payments).map { transfer, payment in
          [
            transfer.endToEndID, payment.paymentID, statusText(payment.status),
            "\(FormatValues.decimal(transfer.amountMinor, currency: transfer.currency)) \(transfer.currency)", transfer.creditorName,
          ]
        })
    }

    static func normalized(_ account: String) -> String { account.filter { $0 != " " }.uppercased() }

    /// The batch's instructions, or a ValidationError naming every transfer that cannot be mapped.
    static func items(_ message: Pain001Reader.Message, accounts: [Banklink_V1_Account]) throws -> [Banklink_V1_PaymentInstruction] {
      var byIdentification: [String: Banklink_V1_Account] = [:]
      for account in accounts {
        for identification in [account.iban, account.accountNumber] where !identification.isEmpty {
          byIdentification[Self.normalized(identification)] = account
        }
      }
      var problems: [String] = []
      var items: [Banklink_V1_PaymentInstruction] = []
      for (index, transfer) in message.transfers.enumerated() {
        guard let account = byIdentification[Self.normalized(transfer.debtorAccount)] else {
          problems.append("transfers[\(index)] (\(transfer.endToEndID)): debtor account \(transfer.debtorAccount) is not an account of this gateway")
          continue
        }
        // The debtor bank's country is in its BIC (letters 5 and 6).
        let bankCountry = account.bankBic.count >= 6 ? String(account.bankBic.dropFirst(4).prefix(2)) : ""
        items.append(.with {
          $0.debtorAccountID = account.accountID
          $0.amount = .with {
            $0.minorUnits = transfer.amountMinor
            $0.currencyCode = transfer.currency
          }
          $0.creditor = .with {
            $0.name = transfer.creditorName
            let creditorAccount = Self.normalized(transfer.creditorAccount)
            if PaymentValidation.isValidIBAN(creditorAccount) { $0.iban = creditorAccount } else { $0.accountNumber = transfer.creditorAccount }
            $0.bic = transfer.creditorAgentBIC
            $0.country = transfer.creditorCountry.isEmpty ? bankCountry : transfer.creditorCountry
          }
          $0.purpose = String((transfer.remittance.isEmpty ? transfer.creditorReference : transfer.remittance).prefix(140))
          $0.requestedExecutionDate = transfer.executionDate
          $0.type = transfer.creditorCountry.isEmpty || transfer.creditorCountry == bankCountry ? .domestic : .crossBorder
        })
      }
      guard problems.isEmpty else { throw ValidationError(problems.joined(separator: "\n")) }
      return items
    }
  }
}
