import BankLinkFormats
import Foundation
import Testing

@Suite("Bank-side writers (the simulator's file mode)")
struct BankFileWriterTests {
  @Test("a pain.002 written is read back status for status, reasons included")
  func pain002() throws {
    let bytes = try Pain002Writer.write(
      messageID: "STS-1", createdAt: "2026-12-03T10:00:00", originalMessageID: "MSG-9",
      statuses: [
        .init(originalEndToEndID: "E2E-1", status: "ACSC"),
        .init(originalEndToEndID: "E2E-2", status: "RJCT", reasonCode: "AC04", reasonText: "Account closed <since 2026>"),
      ])
    let report = try Pain002Reader.read(.data(Data(bytes)))
    #expect(report.messageID == "STS-1" && report.originalMessageID == "MSG-9")
    #expect(report.transactions.map(\.endToEndID) == ["E2E-1", "E2E-2"])
    #expect(report.transactions.map(\.status) == ["ACSC", "RJCT"])
    #expect(report.transactions[1].reasons.first?.code == "AC04")
    // Reason text is written in the SWIFT Latin set, as banks do: other characters become '.'.
    #expect(report.transactions[1].reasons.first?.additionalInfo == "Account closed .since 2026.")
    #expect(throws: Pain001Writer.Problem.self) { try Pain002Writer.write(messageID: "X", createdAt: "2026-12-03T10:00:00", originalMessageID: "", statuses: []) }
  }

  @Test("a camt.053 and a camt.054 written are read back field for field")
  func camt() throws {
    var header = StatementHeader(format: .camt053)
    header.messageID = "STM-7"
    header.statementID = "STM-7"
    header.sequenceNumber = 7
    header.createdAt = "2026-12-03T18:00:00"
    header.fromDateTime = "2026-12-03T00:00:00"
    header.toDateTime = "2026-12-03T18:00:00"
    header.account = StatementAccount(other: "012-875-1-234567-8", currency: "HKD", servicerBIC: "BKCHHKHHXXX")
    header.balances = [
      StatementBalance(type: "OPBD", amountMinor: -5_000, currency: "HKD", date: "2026-12-03"),
      StatementBalance(type: "CLBD", amountMinor: 120_000, currency: "HKD", date: "2026-12-03"),
    ]
    var statement = BankStatement(header: header)
    var credit = StatementEntry()
    credit.amountMinor = 125_000
    credit.currency = "HKD"
    credit.direction = .credit
    credit.bookingDate = "2026-12-03"
    credit.valueDate = "2026-12-04"
    credit.accountServicerReference = "BOC-1"
    var details = TransactionDetails()
    details.endToEndID = "BL1"
    details.counterpartyName = "Kowloon Trading & Sons"
    details.counterpartyAccount = "HK12 3456"
    details.counterpartyBIC = "HSBCHKHHXXX"
    details.remittance = ["Invoice 88"]
    credit.details = [details]
    statement.entries = [credit]

    for kind in [CamtWriter.Kind.statement053, .notification054] {
      let bytes = try CamtWriter.write(statement, kind: kind)
      let read = try #require(try CamtReader.statements(.data(Data(bytes))).first)
      #expect(read.header.format == (kind == .statement053 ? .camt053 : .camt054))
      #expect(read.header.statementID == "STM-7" && read.header.sequenceNumber == 7)
      #expect(read.header.account.other == "012-875-1-234567-8" && read.header.account.servicerBIC == "BKCHHKHHXXX")
      #expect(read.balances == (kind == .statement053 ? header.balances : []))
      let entry = try #require(read.entries.first)
      #expect(entry.amountMinor == 125_000 && entry.direction == .credit && entry.status == "BOOK")
      #expect(entry.bookingDate == "2026-12-03" && entry.valueDate == "2026-12-04" && entry.accountServicerReference == "BOC-1")
      let readDetails = try #require(entry.details.first)
      #expect(readDetails.endToEndID == "BL1" && readDetails.counterpartyName == "Kowloon Trading & Sons")
      #expect(readDetails.counterpartyAccount == "HK123456" && readDetails.counterpartyBIC == "HSBCHKHHXXX")
      #expect(readDetails.remittance == ["Invoice 88"])
      #expect(StatementContinuity.check(read).isEmpty || kind == .notification054)
    }
  }
}
