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
        The file (pain.001.001.03 to .11, as SAP, Oracle, Kingdee and Yonyou export them) is sent
        to the daemon (ImportPaymentFile), which reads it and creates one batch whose idempotency
        key is the file's MsgId: importing the same run twice creates nothing twice and answers
        with the same payments. Each debtor account is found among the gateway's accounts by IBAN
        or account number (spaces ignored). Nothing is created if any transfer is refused.
        --dry-run prints the batch the daemon would create.
        Exit codes: 0 imported (or replayed), 1 the daemon refused it, 64 a transfer cannot be
        mapped, 65 the file is refused.
        """)
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The pain.001 file.") var file: String
    @Flag(help: "Map and print the batch without sending it.") var dryRun = false

    func run() async throws {
      let content: Data
      do {
        content = try Data(contentsOf: URL(fileURLWithPath: self.file))
      } catch {
        throw ValidationError("cannot read \(self.file): \(error.localizedDescription)")
      }
      // The daemon reads and maps the file (ImportPaymentFile): one mapping for every caller.
      let response: Banklink_V1_ImportPaymentFileResponse
      do {
        response = try await withBankLinkClient(self.connection.client) { client in
          try await Banklink_V1_PaymentService.Client(wrapping: client).importPaymentFile(.with {
            $0.content = content
            $0.fileName = URL(fileURLWithPath: self.file).lastPathComponent
            $0.dryRun = self.dryRun
          })
        }
      } catch let error as RPCError where error.code == .invalidArgument && error.message.hasPrefix("content") {
        // A transfer that cannot be mapped is bad input (64); a file that does not read, refused (65).
        FileHandle.standardError.write(Data("refused: \(error.message)\n".utf8))
        throw ExitCode(error.message.hasPrefix("content.transfers[") ? 64 : 65)
      } catch {
        return try await reportingFailures { throw error }
      }
      if self.dryRun {
        try printJSON(response.batchRequest)
        return
      }
      let batch = response.batch
      if self.connection.json {
        try printJSON(batch)
        return
      }
      printFields([
        ("batch", batch.batchID), ("file", "\(response.messageID) (\(batch.payments.count) transfers)"),
        ("replayed", batch.replayed ? "yes: this run was imported before; nothing new was created" : "no"),
        ("receipt", "journal entry \(batch.receipt.journalSequence) \(hex(batch.receipt.entryHash))"),
      ])
      print("")
      // The ERP's references beside the gateway's, so the run can be matched back.
      printTable(
        ["ERP END-TO-END ID", "PAYMENT", "STATUS", "AMOUNT", "CREDITOR"],
        zip(response.erpEndToEndIds, batch.payments).map { erpID, payment in
          [erpID, payment.paymentID, statusText(payment.status), formatMoney(payment.instruction.amount), payment.instruction.creditor.name]
        })
    }
  }
}
