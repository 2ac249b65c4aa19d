import BankLinkFormats
import Foundation
import Testing

/// The bank file formats, read from hand-written samples of each format and version (with the
/// odd cases real banks produce), written and read back, and refused when malformed.
@Suite("Bank file formats")
struct FormatTests {
  static let samples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Samples")

  static func sample(_ name: String) throws -> Data { try Data(contentsOf: Self.samples.appendingPathComponent(name)) }
  static func path(_ name: String) -> String { Self.samples.appendingPathComponent(name).path }

  static func refusal(_ text: String, _ read: (FormatSource) throws -> Void) -> FormatError? {
    do {
      try read(.data(Data(text.utf8)))
      return nil
    } catch let error as FormatError {
      return error
    } catch {
      Issue.record("not a FormatError: \(error)")
      return nil
    }
  }

  @Test("camt.053.001.02 with prefixed namespaces: two statements, a batch, a reversal with its return reason, fees, a pending entry")
  func camt053Version2() throws {
    // Read from the file (streamed in chunks), as an import of a large file is.
    let statements = try CamtReader.statements(.file(Self.path("camt053-v02-prefixed.xml")))
    #expect(statements.count == 2)
    let first = try #require(statements.first)
    #expect(first.header.format == .camt053)
    #expect(first.header.messageID == "STMT-MSG-0001")
    #expect(first.header.statementID == "STMT-2026-12-01")
    #expect(first.header.sequenceNumber == 1)
    #expect(first.header.account == StatementAccount(iban: "DE89370400440532013000", currency: "EUR", servicerBIC: "COBADEFFXXX"))
    #expect(first.header.fromDateTime == "2026-12-01T00:00:00+01:00")
    #expect(first.balance("OPBD") == StatementBalance(type: "OPBD", amountMinor: 1_000_000, currency: "EUR", date: "2026-12-01"))
    #expect(first.balance("CLBD")?.amountMinor == 869_750)
    #expect(first.entries.count == 4)

    let batch = first.entries[0]
    #expect(batch.amountMinor == 150_000 && batch.direction == .debit && batch.status == "BOOK")
    #expect(batch.bookingDate == "2026-12-01" && batch.valueDate == "2026-12-01")
    #expect(batch.accountServicerReference == "BNK-0001")
    #expect(batch.bankTransactionCode == "PMNT/ICDT/ESCT")
    #expect(batch.batchCount == 2)
    #expect(batch.details.map(\.endToEndID) == ["BL1", "BL2"])
    #expect(batch.details.map(\.amountMinor) == [100_000, 50_000])
    let one = batch.details[0]
    #expect(one.messageID == "PAIN-0001" && one.paymentInformationID == "PAIN-0001-1" && one.instructionID == "I-1")
    #expect(one.counterpartyName == "Hengrui Logistics GmbH", "a debit's counterparty is the creditor")
    #expect(one.counterpartyAccount == "DE02120300000000202051" && one.counterpartyBIC == "BYLADEM1001")
    #expect(one.remittance == ["INV-77", "second line"])

    let reversal = first.entries[1]
    #expect(reversal.reversal && reversal.direction == .credit && reversal.amountMinor == 20_000)
    #expect(reversal.details.first?.returnReason == "AC04")
    #expect(reversal.details.first?.counterpartyName == "Hengrui Logistics GmbH", "a credit's counterparty is the debtor")

    let fee = first.entries[2]
    #expect(fee.bankTransactionCode == "PRTRY:FEE" && fee.additionalInfo == "Transfer fee")
    #expect(fee.details.first?.chargesMinor == 250)
    #expect(fee.valueDate.isEmpty, "a missing optional element stays empty")

    let pending = first.entries[3]
    #expect(pending.status == "PDNG" && pending.amountMinor == 9_999)
    #expect(first.trailer.additionalInfo == "End of day")

    // Booked entries sum from opening to closing (the pending one does not count), and the
    // second statement follows on from the first.
    #expect(StatementContinuity.check(statements).isEmpty, "\(StatementContinuity.check(statements))")
    #expect(statements[1].header.sequenceNumber == 2 && statements[1].entries.count == 1)
  }

  @Test("camt.053.001.08 from a Chinese bank: Sts/Cd, Pty/Nm, BICFI, a domestic account, UTF-8 names, charges records, UETR")
  func camt053Version8() throws {
    let statements = try CamtReader.statements(.data(Self.sample("camt053-v08-cn.xml")))
    let statement = try #require(statements.first)
    #expect(statement.header.messageID == "ICBC20261203000001")
    #expect(statement.header.sequenceNumber == 337 && statement.header.legalSequenceNumber == 337)
    #expect(statement.header.account.identification == "1001234567890001")
    #expect(statement.header.account.servicerBIC == "ICBKCNBJ")
    #expect(statement.balance("PRCD")?.date == "2026-12-02", "a DtTm balance date keeps its date")
    #expect(statement.balance("CLAV")?.amountMinor == 9_199_500)
    let entry = try #require(statement.entries.first)
    #expect(entry.reference == "1" && entry.status == "BOOK" && entry.bankTransactionCode == "PMNT/ICDT/DMCT")
    let details = try #require(entry.details.first)
    #expect(details.endToEndID == "BL1796300000001")
    #expect(details.uetr == "5f7c2e1a-9b0d-4c3e-8f21-6d4a1b2c3d4e")
    #expect(details.amountMinor == 800_000 && details.chargesMinor == 500)
    #expect(details.counterpartyName == "江苏恒瑞物流有限公司")
    #expect(details.counterpartyAccount == "3201550104000087761" && details.counterpartyBIC == "PCBCCNBJ")
    #expect(details.remittance == ["货款 INV-2026-0107"] && details.creditorReference == "RF18539007547034")
    #expect(StatementContinuity.check(statements).isEmpty)
  }

  @Test("camt.054 notifications and camt.052 intraday reports")
  func camt054And052() throws {
    let notification = try #require(try CamtReader.statements(.data(Self.sample("camt054-v04.xml"))).first)
    #expect(notification.header.format == .camt054 && notification.header.statementID == "NTF-0042-1")
    #expect(notification.balances.isEmpty)
    let credit = try #require(notification.entries.first)
    #expect(credit.direction == .credit && credit.amountMinor == 123_456 && credit.currency == "GBP")
    #expect(credit.details.first?.counterpartyName == "Acme Trading Ltd")
    #expect(credit.details.first?.counterpartyAccount == "GB33BUKB20201555555555")

    let report = try #require(try CamtReader.statements(.data(Self.sample("camt052-v06.xml"))).first)
    #expect(report.header.format == .camt052)
    #expect(report.balance("ITBD")?.amountMinor == -500_000, "a debit balance is negative")
    #expect(report.entries.first?.status == "PDNG" && report.entries.first?.valueDate == "2026-12-04")
  }

  @Test("MT940 with the FIN envelope, CRLF, trailing spaces, two messages, slash codes, German sub-fields, a reversal, a funds code")
  func mt940() throws {
    let statements = try MT940Reader.statements(.file(Self.path("mt940-two-messages.sta")))
    #expect(statements.count == 2)
    let icbc = statements[0]
    #expect(icbc.header.format == .mt940 && icbc.header.statementID == "STMT-20261203")
    #expect(icbc.header.account.servicerBIC == "ICBKCNBJ" && icbc.header.account.other == "1001234567890001")
    #expect(icbc.header.account.currency == "CNY")
    #expect(icbc.header.sequenceNumber == 12 && icbc.header.page == 1)
    #expect(icbc.balance("OPBD") == StatementBalance(type: "OPBD", amountMinor: 10_000_000, currency: "CNY", date: "2026-12-02"))
    #expect(icbc.balance("CLBD")?.amountMinor == 9_355_000 && icbc.balance("CLAV")?.amountMinor == 9_355_000)
    #expect(icbc.entries.count == 3)
    let payment = icbc.entries[0]
    #expect(payment.direction == .debit && payment.amountMinor == 800_000 && payment.currency == "CNY")
    #expect(payment.valueDate == "2026-12-03" && payment.bookingDate == "2026-12-03")
    #expect(payment.customerReference == "BL1796300000001" && payment.accountServicerReference == "ICBC-REF-0001")
    #expect(payment.bankTransactionCode == "NTRF" && payment.additionalInfo == "Freight payment")
    let details = try #require(payment.details.first)
    #expect(details.endToEndID == "BL1796300000001")
    #expect(details.remittance == ["INV-2026-0107"])
    #expect(details.counterpartyName == "Jiangsu Hengrui Logistics", "a continuation line joins its field")
    #expect(details.counterpartyAccount == "3201550104000087761")
    let collection = icbc.entries[1]
    #expect(collection.amountMinor == 150_000 && collection.direction == .credit, "'1500,' has no decimals")
    #expect(collection.customerReference.isEmpty, "NONREF is no reference")
    #expect(collection.details.first?.remittance == ["Collection from customer Shanghai Huaxin"])
    let reversal = icbc.entries[2]
    #expect(reversal.reversal && reversal.direction == .credit, "RD reverses a debit: booked as a credit")
    #expect(reversal.details.first?.returnReason == "AC04")

    let german = statements[1]
    #expect(german.header.account.iban == "DE89370400440532013000")
    #expect(german.header.sequenceNumber == 5)
    let debit = try #require(german.entries.first)
    #expect(debit.direction == .debit && debit.amountMinor == 25_000, "D with funds code R")
    #expect(debit.details.first?.endToEndID == "E2E-4711")
    #expect(debit.details.first?.remittance == ["Rechnung 2026-11 Kunde 99"])
    #expect(debit.details.first?.counterpartyBIC == "COBADEFFXXX")
    #expect(debit.details.first?.counterpartyName == "Stadtwerke Musterstadt")
    #expect(StatementContinuity.check(statements).isEmpty, "\(StatementContinuity.check(statements))")
  }

  @Test("MT942 interim reports without the envelope and LF line ends; the floor limit names the currency")
  func mt942() throws {
    let report = try #require(try MT940Reader.statements(.data(Self.sample("mt942.sta"))).first)
    #expect(report.header.format == .mt942)
    #expect(report.entries.count == 1 && report.entries.first?.details.first?.endToEndID == "BL99")
    #expect(report.entries.first?.currency == "CNY", "an MT942 without balances takes the currency from :34F:")
  }

  @Test("pain.002: group, payment information and transaction statuses with reason codes; versions .03 and .10")
  func pain002() throws {
    let report = try Pain002Reader.read(.data(Self.sample("pain002-v03.xml")))
    #expect(report.messageID == "STS-0001" && report.originalMessageID == "PAIN-0001" && report.groupStatus == "PART")
    #expect(report.paymentInformation.map(\.status) == ["PART"])
    #expect(report.transactions.map(\.endToEndID) == ["BL1", "BL2"])
    #expect(report.transactions.map(\.status) == ["ACSC", "RJCT"])
    #expect(report.transactions[1].reasons == [.init(code: "AC04", additionalInfo: "Account closed")])
    #expect(report.transactions[1].paymentInformationID == "PAIN-0001-1" && report.transactions[1].instructionID == "I-2")

    let rejected = try Pain002Reader.read(.data(Self.sample("pain002-v10-group-reject.xml")))
    #expect(rejected.groupStatus == "RJCT" && rejected.groupReasons.first?.code == "FF01")
    #expect(rejected.transactions.isEmpty)
  }

  static func transfer(_ index: Int, account: String = "1001234567890001", date: String = "2026-12-04") -> CreditTransferMessage.Transfer {
    CreditTransferMessage.Transfer(
      instructionID: "I-\(index)", endToEndID: "BL17963000000\(index)", amountMinor: Int64(100_000 + index), currency: "CNY",
      debtorAccount: account, debtorName: "Shanghai Huaxin Trading Co., Ltd.", debtorAgentBIC: "ICBKCNBJ", executionDate: date,
      creditorName: index == 1 ? "江苏恒瑞物流 <Logistics> & Co\u{0007}" : "Creditor \(index)", creditorAccount: "3201 5501 0400 0087 761",
      creditorAgentBIC: "PCBCCNBJ", creditorCountry: "CN", remittance: "INV-\(index)", creditorReference: index == 3 ? "RF18539007547034" : "")
  }

  @Test("pain.001 .03 and .09 written and read back field for field: one PmtInf per account and date, control sums, escaping")
  func pain001RoundTrip() throws {
    let transfers = [
      Self.transfer(1), Self.transfer(2, date: "2026-12-05"), Self.transfer(3), Self.transfer(4, account: "DE89370400440532013000"),
    ]
    for version in CreditTransferMessage.Version.allCases {
      let message = CreditTransferMessage(
        version: version, messageID: "BLMSG-20261203-0001", createdAt: "2026-12-03T09:30:00Z", initiatingPartyName: "Shanghai Huaxin",
        transfers: transfers)
      let bytes = try Pain001Writer.write(message)
      #expect(try Pain001Writer.write(message) == bytes, "the same message, the same bytes (a re-send)")
      let text = String(decoding: bytes, as: UTF8.self)
      #expect(text.components(separatedBy: "<PmtInf>").count - 1 == 3, "account+date groups: (CN, 4th), (CN, 5th), (DE, 4th)")
      #expect(text.contains(version == .v09 ? "<ReqdExctnDt><Dt>2026-12-04</Dt></ReqdExctnDt>" : "<ReqdExctnDt>2026-12-04</ReqdExctnDt>"))
      #expect(text.contains(version == .v09 ? "<BICFI>PCBCCNBJ</BICFI>" : "<BIC>PCBCCNBJ</BIC>"))
      #expect(text.contains("<CtrlSum>4000.10</CtrlSum>"))
      #expect(text.contains("&lt;Logistics&gt; &amp; Co"))
      #expect(!text.contains("\u{0007}"), "control characters are not written")
      #expect(StatementFiles.detect(Data(bytes)) == .pain001)

      let read = try Pain001Reader.read(.data(Data(bytes)))
      #expect(read.version == (version == .v09 ? 9 : 3))
      #expect(read.messageID == message.messageID && read.createdAt == message.createdAt && read.numberOfTransactions == 4)
      #expect(read.controlSum == "4000.10")
      #expect(read.transfers.map(\.endToEndID).sorted() == transfers.map(\.endToEndID).sorted())
      for original in transfers {
        let back = try #require(read.transfers.first { $0.endToEndID == original.endToEndID })
        #expect(back.instructionID == original.instructionID)
        #expect(back.amountMinor == original.amountMinor && back.currency == original.currency)
        #expect(back.executionDate == original.executionDate)
        #expect(back.debtorAccount == original.debtorAccount && back.debtorAgentBIC == original.debtorAgentBIC)
        #expect(back.creditorAccount == original.creditorAccount.filter { $0 != " " })
        #expect(back.creditorAgentBIC == original.creditorAgentBIC && back.creditorCountry == "CN")
        #expect(back.creditorName == (original.endToEndID.hasSuffix("1") ? "江苏恒瑞物流 <Logistics> & Co" : original.creditorName))
        if original.creditorReference.isEmpty {
          #expect(back.remittance == original.remittance)
        } else {
          #expect(back.creditorReference == original.creditorReference && back.remittance.isEmpty)
        }
      }
    }
    // A control sum that does not add up is refused.
    let written = String(decoding: try Pain001Writer.write(.init(
      version: .v03, messageID: "M", createdAt: "2026-12-03T09:30:00Z", initiatingPartyName: "X", transfers: [Self.transfer(1)])), as: UTF8.self)
    let tampered = written.replacingOccurrences(of: "<CtrlSum>1000.01</CtrlSum><InitgPty>", with: "<CtrlSum>1000.02</CtrlSum><InitgPty>")
    #expect(tampered != written)
    #expect(Self.refusal(tampered) { _ = try Pain001Reader.read($0) }?.location.hasSuffix("GrpHdr/CtrlSum") == true)
    // The Latin character set for banks that take no more.
    let latin = CreditTransferMessage(
      version: .v03, messageID: "M", createdAt: "2026-12-03T09:30:00Z", initiatingPartyName: "X", characterSet: .latin,
      transfers: [Self.transfer(1)])
    let back = try Pain001Reader.read(.data(Data(try Pain001Writer.write(latin))))
    #expect(back.transfers.first?.creditorName == "...... .Logistics. . Co")
  }

  @Test("pain.001 refuses what a bank would: bad identifiers, dates, amounts, no transfers")
  func pain001Refusals() {
    func problem(_ change: (inout CreditTransferMessage.Transfer) -> Void) -> Pain001Writer.Problem? {
      var transfer = Self.transfer(1)
      change(&transfer)
      do {
        _ = try Pain001Writer.write(.init(version: .v09, messageID: "M", createdAt: "2026-12-03T00:00:00Z", initiatingPartyName: "", transfers: [transfer]))
        return nil
      } catch {
        return error
      }
    }
    #expect(problem { $0.endToEndID = String(repeating: "E", count: 36) }?.description.contains("end_to_end_id") == true)
    #expect(problem { $0.instructionID = "with space" }?.description.contains("instruction_id") == true)
    #expect(problem { $0.executionDate = "2026-02-30" }?.description.contains("execution_date") == true)
    #expect(problem { $0.amountMinor = 0 }?.description.contains("amount") == true)
    #expect(problem { $0.currency = "cny" }?.description.contains("currency") == true)
    // Nothing is cut that would send money elsewhere: long accounts are refused, not truncated.
    #expect(problem { $0.creditorAccount = String(repeating: "1", count: 35) }?.description.contains("creditor_account") == true)
    #expect(problem { $0.creditorAgentBIC = "PCBC" }?.description.contains("creditor_agent_bic") == true)
    #expect(problem { $0.creditorCountry = "China" }?.description.contains("creditor_country") == true)
    #expect(problem { $0.creditorReference = String(repeating: "R", count: 36) }?.description.contains("creditor_reference") == true)
    #expect(throws: Pain001Writer.Problem.invalidMessage(field: "message_id", reason: "must be 1 to 35 printable ASCII characters")) {
      _ = try Pain001Writer.write(.init(version: .v03, messageID: "a b", createdAt: "2026-12-03T00:00:00Z", initiatingPartyName: "", transfers: [Self.transfer(1)]))
    }
    #expect(throws: Pain001Writer.Problem.noTransfers) {
      _ = try Pain001Writer.write(.init(version: .v03, messageID: "M", createdAt: "", initiatingPartyName: "", transfers: []))
    }
  }

  @Test("the kind of a file comes from its content")
  func detection() throws {
    #expect(StatementFiles.detect(try Self.sample("camt053-v02-prefixed.xml")) == .camt053)
    #expect(StatementFiles.detect(try Self.sample("camt054-v04.xml")) == .camt054)
    #expect(StatementFiles.detect(try Self.sample("camt052-v06.xml")) == .camt052)
    #expect(StatementFiles.detect(try Self.sample("pain002-v03.xml")) == .pain002)
    #expect(StatementFiles.detect(try Self.sample("mt940-two-messages.sta")) == .mt940)
    #expect(StatementFiles.detect(try Self.sample("mt942.sta")) == .mt940)
    #expect(StatementFiles.detect(Data("hello".utf8)) == nil)
    var events = 0
    #expect(try StatementFiles.read(.file(Self.path("mt940-two-messages.sta"))) { _ in events += 1 } == .mt940)
    #expect(events == 2 + 4 + 2)
    #expect(throws: FormatError.self) { try StatementFiles.read(.data(try Self.sample("pain002-v03.xml"))) { _ in } }
  }

  @Test("a statement that does not add up, or does not follow on, is reported")
  func continuityBreaks() throws {
    var statements = try CamtReader.statements(.data(Self.sample("camt053-v02-prefixed.xml")))
    statements[0].entries[0].amountMinor += 1
    statements[1].header.sequenceNumber = 4
    statements[1].header.balances[0].amountMinor = 1
    let kinds = StatementContinuity.check(statements).map(\.kind)
    #expect(kinds.contains(.entriesDoNotSum))
    // A statement that cannot be checked says so.
    var missing = try CamtReader.statements(.data(Self.sample("camt053-v08-cn.xml")))
    missing[0].header.balances.removeAll { $0.type == "CLBD" }
    #expect(StatementContinuity.check(missing).map(\.kind) == [.unverifiable])
    #expect(kinds.contains(.sequenceGap))
    #expect(kinds.contains(.openingNotPreviousClosing))
  }

  @Test("refused with the line, the element and the reason: bombs, deep nesting, wrong namespaces, truncation, bad amounts and dates")
  func refusals() throws {
    let camt = { (source: FormatSource) throws in _ = try CamtReader.statements(source) }
    let bomb = """
      <?xml version="1.0"?>
      <!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
      <Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">&lol2;</Document>
      """
    let entity = try #require(Self.refusal(bomb, camt))
    #expect(entity.line == 2 && entity.reason.contains("document type declaration"), "\(entity)")

    let deep = "<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:camt.053.001.02\"><BkToCstmrStmt><Stmt>"
      + String(repeating: "<a>", count: 10_000)
    #expect(Self.refusal(deep, camt)?.reason.contains("nest deeper than 64") == true)

    let pain = "<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.001.001.03\"><CstmrCdtTrfInitn/></Document>"
    #expect(Self.refusal(pain, camt)?.reason.contains("not an ISO 20022 camt") == true)

    // More statements in one file than any bank sends (an import answer listing them all
    // would outgrow a client's message limit).
    let many = "<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:camt.053.001.02\"><BkToCstmrStmt><GrpHdr><MsgId>M</MsgId></GrpHdr>"
      + String(repeating: "<Stmt><Id>S</Id><Acct><Id><Othr><Id>1</Id></Othr></Id><Ccy>CNY</Ccy></Acct></Stmt>", count: FormatLimits.maxStatementsPerFile + 1)
      + "</BkToCstmrStmt></Document>"
    let tooMany = try #require(Self.refusal(many, camt))
    #expect(tooMany.reason.contains("more than \(FormatLimits.maxStatementsPerFile) statements"), "\(tooMany)")

    let text = String(decoding: try Self.sample("camt053-v08-cn.xml"), as: UTF8.self)
    let truncated = try #require(Self.refusal(String(text.prefix(900)), camt))
    #expect(truncated.reason.contains("not well-formed") || truncated.reason.contains("truncated"), "\(truncated)")

    let decimals = try #require(Self.refusal(text.replacingOccurrences(of: "8005.00", with: "8005.001"), camt))
    #expect(decimals.reason.contains("not an amount in CNY (at most 2 decimals)") && decimals.location.hasSuffix("Ntry/Amt"), "\(decimals)")
    #expect(decimals.line == 15)
    let date = try #require(Self.refusal(text.replacingOccurrences(of: "<BookgDt><Dt>2026-12-03", with: "<BookgDt><Dt>2026-13-03"), camt))
    #expect(date.reason.contains("'2026-13-03' is not a date"))
    let indicator = try #require(Self.refusal(text.replacingOccurrences(of: "<CdtDbtInd>DBIT</CdtDbtInd>\n<Sts>", with: "<Sts>"), camt))
    #expect(indicator.reason.contains("needs CdtDbtInd"), "a missing indicator is not read as a credit: \(indicator)")
    let longName = try #require(Self.refusal(text.replacingOccurrences(of: "<NtryRef>1</NtryRef>", with: "<\(String(repeating: "N", count: 65))/>"), camt))
    #expect(longName.reason.contains("element name longer than 64"))
    let currency = try #require(Self.refusal(text.replacingOccurrences(of: "<Amt Ccy=\"CNY\">8005.00", with: "<Amt>8005.00"), camt))
    #expect(currency.reason.contains("no ISO 4217 currency"))

    let mt = { (source: FormatSource) throws in _ = try MT940Reader.statements(source) }
    #expect(Self.refusal(":20:X\n:60F:C261302EUR1,00\n", mt)?.reason.contains("not a date") == true)
    #expect(Self.refusal(":20:X\n:60F:C261202EUR1,001\n", mt)?.reason.contains("not an amount in EUR") == true)
    #expect(Self.refusal(":25:X\n", mt)?.reason.contains("before the :20:") == true)
    #expect(Self.refusal(":20:X\n:60F:C261202EUR1,00\n:61:261203X1,00NTRF\n", mt)?.location == ":61:")
    #expect(Self.refusal("hello\n", mt)?.reason.contains("outside any field") == true)
    #expect(Self.refusal("\n\n", mt)?.reason.contains("no MT940") == true)
    // Not UTF-8, or declared otherwise: refused before libxml2 sees it.
    var latin1 = Array(text.utf8)
    latin1[400] = 0xE9
    let notUTF8 = #expect(throws: FormatError.self) { _ = try CamtReader.statements(.data(Data(latin1))) }
    #expect(notUTF8?.reason.contains("not UTF-8") == true && notUTF8?.line == 9, "\(String(describing: notUTF8))")
    let declared = text.replacingOccurrences(of: "encoding=\"UTF-8\"", with: "encoding=\"GB18030\"")
    #expect(Self.refusal(declared, camt)?.reason.contains("declares encoding 'gb18030'") == true)
    let long = ":20:X\n:86:" + String(repeating: "A", count: FormatLimits.maxTextBytes + 1) + "\n"
    #expect(Self.refusal(long, mt)?.reason.contains("longer than") == true)
  }
}
