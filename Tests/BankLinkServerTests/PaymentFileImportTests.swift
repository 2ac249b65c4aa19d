import BankLinkClient
import BankLinkCore
import BankLinkProto
import BankLinkServer
import BankLinkTestSupport
import Foundation
import GRPCCore
import GRPCProtobuf
import SwiftProtobuf
import Testing

/// `ImportPaymentFile` on the real server: an ERP's pain.001 run as one batch, and what it
/// refuses.
@Suite("Payment file import")
struct PaymentFileImportTests {
  static func file(messageID: String, debtor: String = "1001 2345 0987 6543 210", controlSum: String = "350.50", transfers: Int = 2) -> Data {
    let items = (0..<transfers).map { index in
      """
      <CdtTrfTxInf><PmtId><InstrId>I\(index)</InstrId><EndToEndId>ERP-\(index)</EndToEndId></PmtId>
        <Amt><InstdAmt Ccy="CNY">\(index == 0 ? "300.00" : "50.50")</InstdAmt></Amt>
        <CdtrAgt><FinInstnId><BIC>PCBCCNBJ</BIC></FinInstnId></CdtrAgt>
        <Cdtr><Nm>Jiangsu Hengrui Logistics Co., Ltd.</Nm></Cdtr>
        <CdtrAcct><Id><Othr><Id>3201550104000087761</Id></Othr></Id></CdtrAcct>
        <RmtInf><Ustrd>Invoice \(index)</Ustrd></RmtInf></CdtTrfTxInf>
      """
    }.joined()
    return Data("""
      <?xml version="1.0" encoding="UTF-8"?>
      <Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"><CstmrCdtTrfInitn>
      <GrpHdr><MsgId>\(messageID)</MsgId><CreDtTm>2026-12-03T08:00:00</CreDtTm><NbOfTxs>\(transfers)</NbOfTxs><CtrlSum>\(controlSum)</CtrlSum>
        <InitgPty><Nm>Huaxin</Nm></InitgPty></GrpHdr>
      <PmtInf><PmtInfId>\(messageID)-1</PmtInfId><PmtMtd>TRF</PmtMtd><ReqdExctnDt>\(WallClock.now().isoDate)</ReqdExctnDt>
        <Dbtr><Nm>Huaxin</Nm></Dbtr><DbtrAcct><Id><Othr><Id>\(debtor)</Id></Othr></Id></DbtrAcct>
        <DbtrAgt><FinInstnId><BIC>ICBKCNBJ</BIC></FinInstnId></DbtrAgt>\(items)
      </PmtInf></CstmrCdtTrfInitn></Document>
      """.utf8)
  }

  @Test("a run becomes one batch keyed by its MsgId; a dry run creates nothing; bad files, unknown accounts and the wrong role are refused")
  func importFile() async throws {
    try await PaymentTests.withPayments { server, client in
      try await PaymentTests.as_(client("erp")) { payments in
        let dry = try await payments.importPaymentFile(.with { $0.content = Self.file(messageID: "RUN-1"); $0.dryRun = true })
        #expect(dry.idempotencyKey == "pain001:RUN-1" && dry.erpEndToEndIds == ["ERP-0", "ERP-1"])
        #expect(dry.batchRequest.items.map(\.debtorAccountID) == ["icbc-cny-001", "icbc-cny-001"])
        #expect(dry.batchRequest.items.map(\.amount.minorUnits) == [30_000, 5_050])
        #expect(!dry.hasBatch)
        #expect(try await payments.listPayments(.init()).payments.isEmpty, "a dry run creates nothing")

        let imported = try await payments.importPaymentFile(.with { $0.content = Self.file(messageID: "RUN-1"); $0.fileName = "run.xml" })
        #expect(imported.batch.payments.count == 2 && !imported.batch.replayed)
        #expect(imported.batch.payments.map(\.instruction.purpose) == ["Invoice 0", "Invoice 1"])
        let again = try await payments.importPaymentFile(.with { $0.content = Self.file(messageID: "RUN-1") })
        #expect(again.batch.replayed && again.batch.payments.map(\.paymentID) == imported.batch.payments.map(\.paymentID))

        // Refusals name the field and create nothing.
        func refusal(_ request: Banklink_V1_ImportPaymentFileRequest) async -> RPCError? {
          await #expect(throws: RPCError.self) { try await payments.importPaymentFile(request) }
        }
        let empty = await refusal(.init())
        #expect(empty?.code == .invalidArgument && empty?.message.hasPrefix("content") == true)
        let garbage = await refusal(.with { $0.content = Data("<Document/>".utf8) })
        #expect(garbage?.code == .invalidArgument && garbage?.message.hasPrefix("content: refused") == true, "\(String(describing: garbage))")
        let sum = await refusal(.with { $0.content = Self.file(messageID: "RUN-2", controlSum: "350.51") })
        #expect(sum?.message.contains("CtrlSum") == true, "\(String(describing: sum))")
        let unknown = await refusal(.with { $0.content = Self.file(messageID: "RUN-3", debtor: "9999000011112222") })
        #expect(try PaymentTests.violations(unknown) == ["content.transfers[0].debtor_account", "content.transfers[1].debtor_account"])
        let tooBig = await refusal(.with { $0.content = Data(count: Limits.maxPaymentFileBytes + 1) })
        #expect(tooBig?.code == .invalidArgument || tooBig?.code == .resourceExhausted, "\(String(describing: tooBig))")
        #expect(try await payments.listPayments(.init()).payments.count == 2)
      }
      // Only payers import.
      let viewer = await #expect(throws: RPCError.self) {
        try await PaymentTests.as_(client("viewer")) { try await $0.importPaymentFile(.with { $0.content = Self.file(messageID: "RUN-4") }) }
      }
      #expect(viewer?.code == .permissionDenied)
    }
  }
}
