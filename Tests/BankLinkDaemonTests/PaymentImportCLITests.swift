import BankLinkProto
import BankLinkTestSupport
import Foundation
import SwiftProtobuf
import Testing

/// `banklink payments import`: an ERP's pain.001 payment run, through the real CLI and daemon.
@Suite("Payment import with the banklink CLI")
struct PaymentImportCLITests {
  static func pain001(messageID: String, debtorAccount: String, date: String) -> String {
    func transfer(_ id: String, _ amount: String, _ name: String, _ account: String, _ bic: String) -> String {
      """
      <CdtTrfTxInf><PmtId><InstrId>\(id)</InstrId><EndToEndId>ERP-\(id)</EndToEndId></PmtId>
        <Amt><InstdAmt Ccy="CNY">\(amount)</InstdAmt></Amt>
        <CdtrAgt><FinInstnId><BIC>\(bic)</BIC></FinInstnId></CdtrAgt>
        <Cdtr><Nm>\(name)</Nm><PstlAdr><Ctry>CN</Ctry></PstlAdr></Cdtr>
        <CdtrAcct><Id><Othr><Id>\(account)</Id></Othr></Id></CdtrAcct>
        <RmtInf><Ustrd>Invoice \(id)</Ustrd></RmtInf></CdtTrfTxInf>
      """
    }
    return """
      <?xml version="1.0" encoding="UTF-8"?>
      <Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"><CstmrCdtTrfInitn>
      <GrpHdr><MsgId>\(messageID)</MsgId><CreDtTm>\(date)T08:00:00</CreDtTm><NbOfTxs>2</NbOfTxs><CtrlSum>350.50</CtrlSum>
        <InitgPty><Nm>Shanghai Huaxin Trading Co., Ltd.</Nm></InitgPty></GrpHdr>
      <PmtInf><PmtInfId>\(messageID)-1</PmtInfId><PmtMtd>TRF</PmtMtd><ReqdExctnDt>\(date)</ReqdExctnDt>
        <Dbtr><Nm>Shanghai Huaxin Trading Co., Ltd.</Nm></Dbtr>
        <DbtrAcct><Id><Othr><Id>\(debtorAccount)</Id></Othr></Id></DbtrAcct>
        <DbtrAgt><FinInstnId><BIC>ICBKCNBJ</BIC></FinInstnId></DbtrAgt>
      \(transfer("4711", "300.00", "Jiangsu Hengrui Logistics Co., Ltd.", "3201550104000087761", "PCBCCNBJ"))
      \(transfer("4712", "50.50", "Zhejiang Lianda Electronics Co., Ltd.", "1202021209900033218", "ICBKCNBJ"))
      </PmtInf></CstmrCdtTrfInitn></Document>
      """
  }

  @Test("a pain.001 run becomes one batch, idempotent by its MsgId; unknown accounts and broken files are refused")
  func importRun() async throws {
    try await withTemporaryDirectory { directory in
      let pki = try TestPKI(directory: directory)
      let config = try writeTestDaemonConfig(in: directory, principals: [("erp", ["payer"])])
      let socket = try NotifySocket(path: directory.appending("notify.sock"))
      let daemon = try await RunningDaemon.start(config: config, socket: socket)
      defer { if daemon.process.isRunning { daemon.process.terminate() } }
      let erp = try pki.client(commonName: "erp", file: "erp")
      let environment = cliEnvironment(port: daemon.port, caPath: pki.caPath, identity: erp)
      func cli(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try runProgram(Binaries.cli, arguments, environment: environment)
      }

      let listed = try cli(["accounts", "--json"])
      #expect(listed.status == 0, "\(listed.stderr)")
      let accounts = try Banklink_V1_ListAccountsResponse(jsonString: listed.stdout).accounts
      let debtor = try #require(accounts.first { $0.accountID == "icbc-cny-001" })
      let today = String(ISO8601DateFormatter().string(from: Date()).prefix(10))
      // The account number as an ERP writes it: with spaces, as the bank prints it.
      let spaced = debtor.accountNumber.enumerated().map { $0.offset > 0 && $0.offset % 4 == 0 ? " \($0.element)" : "\($0.element)" }.joined()
      let run = directory.appending("run.xml")
      try Data(Self.pain001(messageID: "SAP-RUN-20261203-01", debtorAccount: spaced, date: today).utf8).write(to: URL(fileURLWithPath: run))

      let dry = try cli(["payments", "import", run, "--dry-run"])
      #expect(dry.status == 0, "\(dry.stderr)")
      let request = try Banklink_V1_CreatePaymentBatchRequest(jsonString: dry.stdout)
      #expect(request.idempotencyKey == "pain001:SAP-RUN-20261203-01")
      #expect(request.items.map(\.debtorAccountID) == ["icbc-cny-001", "icbc-cny-001"])
      #expect(request.items.map(\.amount.minorUnits) == [30_000, 5_050])
      #expect(request.items.first?.creditor.bic == "PCBCCNBJ" && request.items.first?.type == .domestic)
      #expect(request.items.first?.purpose == "Invoice 4711" && request.items.first?.requestedExecutionDate == today)

      let imported = try cli(["payments", "import", run])
      #expect(imported.status == 0, "\(imported.stderr)")
      #expect(imported.stdout.contains("replayed") && imported.stdout.contains("no"), "\(imported.stdout)")
      #expect(imported.stdout.contains("ERP-4711") && imported.stdout.contains("ERP-4712"), "\(imported.stdout)")
      let again = try cli(["payments", "import", run, "--json"])
      #expect(again.status == 0, "\(again.stderr)")
      let replay = try Banklink_V1_CreatePaymentBatchResponse(jsonString: again.stdout)
      #expect(replay.replayed, "the same run imported twice creates nothing twice")
      #expect(replay.payments.count == 2)
      let payments = try cli(["payments", "list", "--account", "icbc-cny-001", "--json"])
      #expect(try Banklink_V1_ListPaymentsResponse(jsonString: payments.stdout).payments.count == 2)

      // An account the gateway does not hold: nothing is sent (exit 64), the transfer named.
      let foreign = directory.appending("foreign.xml")
      try Data(Self.pain001(messageID: "SAP-RUN-X", debtorAccount: "9999000011112222", date: today).utf8)
        .write(to: URL(fileURLWithPath: foreign))
      let unknown = try cli(["payments", "import", foreign])
      #expect(unknown.status == 64 && unknown.stderr.contains("transfers[0] (ERP-4711): debtor account 9999000011112222"), "\(unknown.stderr)")
      // A file whose control sum does not add up: refused with the element (exit 65).
      let tampered = directory.appending("tampered.xml")
      try Data(Self.pain001(messageID: "SAP-RUN-Y", debtorAccount: spaced, date: today)
        .replacingOccurrences(of: "<CtrlSum>350.50</CtrlSum>", with: "<CtrlSum>350.51</CtrlSum>").utf8)
        .write(to: URL(fileURLWithPath: tampered))
      let refused = try cli(["payments", "import", tampered])
      #expect(refused.status == 65 && refused.stderr.contains("GrpHdr/CtrlSum"), "\(refused.stderr)")
      await daemon.stop()
    }
  }
}
