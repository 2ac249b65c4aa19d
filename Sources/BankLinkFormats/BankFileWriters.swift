/// Writers for the files a bank sends: pain.002 status reports and camt.053 statements /
/// camt.054 notifications. The daemon never sends these; the embedded simulator's file mode
/// writes them to play the bank on the other side of the host-to-host directories, and tests
/// read them back with ``Pain002Reader`` and ``CamtReader``.
public enum Pain002Writer {
  /// One transaction's status in a report.
  public struct Status: Sendable, Hashable {
    public var originalEndToEndID: String
    /// ACTC, ACSP, ACSC, RJCT, …
    public var status: String
    public var reasonCode: String
    public var reasonText: String

    public init(originalEndToEndID: String, status: String, reasonCode: String = "", reasonText: String = "") {
      self.originalEndToEndID = originalEndToEndID
      self.status = status
      self.reasonCode = reasonCode
      self.reasonText = reasonText
    }
  }

  /// A pain.002.001.03 customer payment status report with one `OrgnlPmtInfAndSts` holding a
  /// `TxInfAndSts` per status. `originalMessageID` is the pain.001 the statuses answer (several
  /// messages' statuses may share a report: then it names the first).
  public static func write(
    messageID: String, createdAt: String, originalMessageID: String, statuses: [Status]
  ) throws(Pain001Writer.Problem) -> [UInt8] {
    guard !statuses.isEmpty else { throw .noTransfers }
    guard Pain001Writer.isIdentifier(messageID) else {
      throw .invalidMessage(field: "message_id", reason: "must be 1 to \(Pain001Writer.maxIdentifierLength) printable ASCII characters")
    }
    var xml = XMLText(characterSet: .latin)
    xml.raw("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
    xml.raw("<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.002.001.03\">")
    xml.open("CstmrPmtStsRpt")
    xml.open("GrpHdr")
    xml.element("MsgId", identifier: messageID)
    xml.element("CreDtTm", identifier: createdAt)
    xml.close("GrpHdr")
    xml.open("OrgnlGrpInfAndSts")
    xml.element("OrgnlMsgId", identifier: originalMessageID.isEmpty ? "NOTPROVIDED" : originalMessageID)
    xml.element("OrgnlMsgNmId", identifier: "pain.001.001.03")
    xml.close("OrgnlGrpInfAndSts")
    xml.open("OrgnlPmtInfAndSts")
    xml.element("OrgnlPmtInfId", identifier: originalMessageID.isEmpty ? "NOTPROVIDED" : originalMessageID)
    for (index, status) in statuses.enumerated() {
      guard Pain001Writer.isIdentifier(status.originalEndToEndID), Pain001Writer.isIdentifier(status.status) else {
        throw .invalid(transfer: index, field: "end_to_end_id", reason: "must be 1 to 35 printable ASCII characters")
      }
      xml.open("TxInfAndSts")
      xml.element("OrgnlEndToEndId", identifier: status.originalEndToEndID)
      xml.element("TxSts", identifier: status.status)
      if !status.reasonCode.isEmpty || !status.reasonText.isEmpty {
        xml.open("StsRsnInf")
        if !status.reasonCode.isEmpty {
          xml.open("Rsn")
          xml.element("Cd", identifier: status.reasonCode)
          xml.close("Rsn")
        }
        if !status.reasonText.isEmpty { xml.element("AddtlInf", text: status.reasonText) }
        xml.close("StsRsnInf")
      }
      xml.close("TxInfAndSts")
    }
    xml.close("OrgnlPmtInfAndSts")
    xml.close("CstmrPmtStsRpt")
    xml.raw("</Document>\n")
    return xml.bytes
  }
}

public enum CamtWriter {
  /// camt.053 (a statement with opening and closing balances) or camt.054 (a notification of
  /// entries, no balances).
  public enum Kind: Sendable, Hashable {
    case statement053
    case notification054
  }

  /// Writes one statement or notification, version .001.02. `statement.balances` are written
  /// as given (type, signed amount, date); each entry with its first transaction's details.
  public static func write(_ statement: BankStatement, kind: Kind) throws(Pain001Writer.Problem) -> [UInt8] {
    let header = statement.header
    guard Pain001Writer.isIdentifier(header.messageID), Pain001Writer.isIdentifier(header.statementID) else {
      throw .invalidMessage(field: "message_id", reason: "message and statement ids must be 1 to 35 printable ASCII characters")
    }
    let (document, container, element) =
      kind == .statement053
      ? ("camt.053.001.02", "BkToCstmrStmt", "Stmt") : ("camt.054.001.02", "BkToCstmrDbtCdtNtfctn", "Ntfctn")
    var xml = XMLText(characterSet: .unicode)
    xml.raw("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
    xml.raw("<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:\(document)\">")
    xml.open(container)
    xml.open("GrpHdr")
    xml.element("MsgId", identifier: header.messageID)
    xml.element("CreDtTm", identifier: header.createdAt)
    xml.close("GrpHdr")
    xml.open(element)
    xml.element("Id", identifier: header.statementID)
    if let sequence = header.sequenceNumber { xml.element("ElctrncSeqNb", identifier: String(sequence)) }
    xml.element("CreDtTm", identifier: header.createdAt)
    if !header.fromDateTime.isEmpty, !header.toDateTime.isEmpty {
      xml.open("FrToDt")
      xml.element("FrDtTm", identifier: header.fromDateTime)
      xml.element("ToDtTm", identifier: header.toDateTime)
      xml.close("FrToDt")
    }
    xml.open("Acct")
    xml.open("Id")
    if !header.account.iban.isEmpty {
      xml.element("IBAN", identifier: header.account.iban)
    } else {
      xml.open("Othr")
      xml.element("Id", identifier: header.account.other)
      xml.close("Othr")
    }
    xml.close("Id")
    xml.element("Ccy", identifier: header.account.currency)
    if !header.account.servicerBIC.isEmpty {
      xml.open("Svcr")
      xml.open("FinInstnId")
      xml.element("BIC", identifier: header.account.servicerBIC)
      xml.close("FinInstnId")
      xml.close("Svcr")
    }
    xml.close("Acct")
    for balance in statement.balances where kind == .statement053 {
      xml.open("Bal")
      xml.raw("<Tp><CdOrPrtry>")
      xml.element("Cd", identifier: balance.type)
      xml.raw("</CdOrPrtry></Tp>")
      Self.amount(&xml, "Amt", abs(balance.amountMinor), balance.currency)
      xml.element("CdtDbtInd", identifier: balance.amountMinor < 0 ? "DBIT" : "CRDT")
      xml.raw("<Dt>")
      xml.element("Dt", identifier: balance.date)
      xml.raw("</Dt>")
      xml.close("Bal")
    }
    for entry in statement.entries {
      xml.open("Ntry")
      if !entry.reference.isEmpty { xml.element("NtryRef", identifier: entry.reference) }
      Self.amount(&xml, "Amt", entry.amountMinor, entry.currency)
      xml.element("CdtDbtInd", identifier: entry.direction.rawValue)
      if entry.reversal { xml.element("RvslInd", identifier: "true") }
      xml.element("Sts", identifier: entry.status)
      xml.raw("<BookgDt>")
      xml.element("Dt", identifier: entry.bookingDate)
      xml.raw("</BookgDt><ValDt>")
      xml.element("Dt", identifier: entry.valueDate.isEmpty ? entry.bookingDate : entry.valueDate)
      xml.raw("</ValDt>")
      if !entry.accountServicerReference.isEmpty { xml.element("AcctSvcrRef", identifier: entry.accountServicerReference) }
      xml.raw("<BkTxCd><Domn><Cd>PMNT</Cd><Fmly>")
      xml.element("Cd", identifier: entry.direction == .debit ? "ICDT" : "RCDT")
      xml.raw("<SubFmlyCd>ESCT</SubFmlyCd></Fmly></Domn></BkTxCd>")
      if let details = entry.details.first {
        xml.raw("<NtryDtls><TxDtls>")
        xml.open("Refs")
        if !details.accountServicerReference.isEmpty { xml.element("AcctSvcrRef", identifier: details.accountServicerReference) }
        xml.element("EndToEndId", identifier: details.endToEndID.isEmpty ? "NOTPROVIDED" : details.endToEndID)
        xml.close("Refs")
        if !details.counterpartyName.isEmpty || !details.counterpartyAccount.isEmpty {
          let (party, account) = entry.direction == .debit ? ("Cdtr", "CdtrAcct") : ("Dbtr", "DbtrAcct")
          xml.open("RltdPties")
          if !details.counterpartyName.isEmpty {
            xml.open(party)
            xml.element("Nm", text: details.counterpartyName)
            xml.close(party)
          }
          let compact = details.counterpartyAccount.filter { $0 != " " }
          if Pain001Writer.isIdentifier(compact, maxLength: Pain001Writer.maxAccountLength) { xml.account(account, compact) }
          xml.close("RltdPties")
        }
        if Pain001Writer.isBIC(details.counterpartyBIC) {
          let agent = entry.direction == .debit ? "CdtrAgt" : "DbtrAgt"
          xml.raw("<RltdAgts><\(agent)><FinInstnId>")
          xml.element("BIC", identifier: details.counterpartyBIC)
          xml.raw("</FinInstnId></\(agent)></RltdAgts>")
        }
        if let line = details.remittance.first, !line.isEmpty {
          xml.open("RmtInf")
          xml.element("Ustrd", text: line)
          xml.close("RmtInf")
        }
        xml.raw("</TxDtls></NtryDtls>")
      }
      if !entry.additionalInfo.isEmpty { xml.element("AddtlNtryInf", text: entry.additionalInfo) }
      xml.close("Ntry")
    }
    xml.close(element)
    xml.close(container)
    xml.raw("</Document>\n")
    return xml.bytes
  }

  static func amount(_ xml: inout XMLText, _ name: String, _ minor: Int64, _ currency: String) {
    xml.raw("<\(name) Ccy=\"")
    xml.escaped(currency)
    xml.raw("\">\(Pain001Writer.decimal(minor, currency: currency))</\(name)>")
  }
}
