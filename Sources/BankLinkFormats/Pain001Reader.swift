/// Reads pain.001.001.03 to .001.11 credit transfer initiations: what an ERP exports for a
/// payment run (SAP, Oracle, Kingdee and Yonyou all write .03 or .09), and what
/// ``Pain001Writer`` writes (read back in tests). The transfers come out flat, each with its
/// `PmtInf`'s debtor and date.
public enum Pain001Reader {
  public static let versions = 3...11

  public struct Message: Sendable, Hashable {
    public var version = 0
    public var messageID = ""
    public var createdAt = ""
    public var numberOfTransactions = 0
    /// The group header's control sum as written (a decimal), empty when absent.
    public var controlSum = ""
    public var initiatingPartyName = ""
    public var transfers: [Transfer] = []
  }

  public struct Transfer: Sendable, Hashable {
    public var paymentInformationID = ""
    public var instructionID = ""
    public var endToEndID = ""
    public var amountMinor: Int64 = 0
    public var currency = ""
    public var executionDate = ""
    public var debtorName = ""
    public var debtorAccount = ""
    public var debtorAgentBIC = ""
    public var creditorName = ""
    public var creditorAccount = ""
    public var creditorAgentBIC = ""
    public var creditorCountry = ""
    public var remittance = ""
    public var creditorReference = ""
  }

  public static func read(_ source: FormatSource) throws -> Message {
    let state = Pain001State()
    try XMLWalker.walk(source, format: "pain.001", onStart: { try state.start($0) }, onEnd: { try state.end($0, $1) })
    guard state.message.version != 0 else {
      throw FormatError(format: "pain.001", line: 0, location: "", reason: "no CstmrCdtTrfInitn message in the file")
    }
    let message = state.message
    guard !message.messageID.isEmpty else {
      throw FormatError(format: "pain.001", line: 0, location: "Document/CstmrCdtTrfInitn/GrpHdr/MsgId", reason: "is required")
    }
    guard message.numberOfTransactions == message.transfers.count else {
      throw FormatError(
        format: "pain.001", line: 0, location: "Document/CstmrCdtTrfInitn/GrpHdr/NbOfTxs",
        reason: "says \(message.numberOfTransactions) transactions, the message holds \(message.transfers.count)")
    }
    // The control sum, when given, must be the amounts' sum (checked in one currency; a message
    // in several has no single sum to compare).
    if !message.controlSum.isEmpty, let currency = message.transfers.first?.currency,
      message.transfers.allSatisfy({ $0.currency == currency })
    {
      var sum: Int64 = 0
      var overflow = false
      for transfer in message.transfers where !overflow { (sum, overflow) = sum.addingReportingOverflow(transfer.amountMinor) }
      guard !overflow, FormatValues.minorUnits(Substring(message.controlSum), currency: currency) == sum else {
        throw FormatError(
          format: "pain.001", line: 0, location: "Document/CstmrCdtTrfInitn/GrpHdr/CtrlSum",
          reason: "\(message.controlSum) is not the sum of the \(message.transfers.count) amounts (\(FormatValues.decimal(sum, currency: currency)) \(currency))")
      }
    }
    return message
  }
}

private final class Pain001State {
  var message = Pain001Reader.Message()
  var group = Pain001Reader.Transfer()
  var transfer: Pain001Reader.Transfer?

  func fail(_ element: XMLWalker.Element, _ reason: String) -> FormatError {
    FormatError(format: "pain.001", line: 0, location: element.path.joined(separator: "/"), reason: reason)
  }

  func start(_ element: XMLWalker.Element) throws {
    let path = element.path
    switch path.count {
    case 1:
      guard path[0] == "Document" else { throw self.fail(element, "the root element is \(path[0]), not Document") }
      let prefix = "urn:iso:std:iso:20022:tech:xsd:pain.001.001."
      guard element.namespace.hasPrefix(prefix), let version = Int(element.namespace.dropFirst(prefix.count)),
        Pain001Reader.versions.contains(version)
      else {
        throw self.fail(element, "the namespace '\(element.namespace)' is not pain.001.001.03 to .11")
      }
      self.message.version = version
    case 2:
      guard path[1] == "CstmrCdtTrfInitn" else { throw self.fail(element, "not a pain.001 message (\(path[1]))") }
    case 3 where path[2] == "PmtInf":
      self.group = Pain001Reader.Transfer()
    case 4 where path[2] == "PmtInf" && path[3] == "CdtTrfTxInf":
      guard self.message.transfers.count < Pain001Writer.maxTransfers else {
        throw self.fail(element, "more than \(Pain001Writer.maxTransfers) transfers in one message")
      }
      self.transfer = self.group
    default: break
    }
  }

  func end(_ element: XMLWalker.Element, _ text: String) throws {
    let path = element.path
    guard path.count >= 4 else { return }
    let key = String(element.key(from: 2))
    switch key {
    case "GrpHdr/MsgId": self.message.messageID = text
    case "GrpHdr/CreDtTm": self.message.createdAt = text
    case "GrpHdr/NbOfTxs":
      guard let count = Int(text), count >= 0 else { throw self.fail(element, "'\(text)' is not a number") }
      self.message.numberOfTransactions = count
    case "GrpHdr/CtrlSum": self.message.controlSum = text
    case "GrpHdr/InitgPty/Nm": self.message.initiatingPartyName = text
    case "PmtInf/PmtInfId": self.group.paymentInformationID = text
    case "PmtInf/ReqdExctnDt", "PmtInf/ReqdExctnDt/Dt", "PmtInf/ReqdExctnDt/DtTm":
      guard !text.isEmpty else { return }
      guard let date = FormatValues.isoDate(text) else { throw self.fail(element, "'\(FormatValues.clip(text, maxBytes: 40))' is not a date") }
      self.group.executionDate = date
    case "PmtInf/Dbtr/Nm": self.group.debtorName = text
    case "PmtInf/DbtrAcct/Id/IBAN", "PmtInf/DbtrAcct/Id/Othr/Id": self.group.debtorAccount = text
    case "PmtInf/DbtrAgt/FinInstnId/BIC", "PmtInf/DbtrAgt/FinInstnId/BICFI": self.group.debtorAgentBIC = text
    case "PmtInf/CdtTrfTxInf/PmtId/InstrId": self.transfer?.instructionID = text
    case "PmtInf/CdtTrfTxInf/PmtId/EndToEndId": self.transfer?.endToEndID = text
    case "PmtInf/CdtTrfTxInf/Amt/InstdAmt":
      guard let currency = element.attributes["Ccy"], FormatValues.isCurrency(currency) else {
        throw self.fail(element, "the amount has no ISO 4217 currency (Ccy)")
      }
      guard let minor = FormatValues.minorUnits(Substring(text), currency: currency), minor > 0 else {
        throw self.fail(element, "'\(FormatValues.clip(text, maxBytes: 40))' is not a positive amount in \(currency)")
      }
      self.transfer?.amountMinor = minor
      self.transfer?.currency = currency
    case "PmtInf/CdtTrfTxInf/CdtrAgt/FinInstnId/BIC", "PmtInf/CdtTrfTxInf/CdtrAgt/FinInstnId/BICFI": self.transfer?.creditorAgentBIC = text
    case "PmtInf/CdtTrfTxInf/Cdtr/Nm": self.transfer?.creditorName = text
    case "PmtInf/CdtTrfTxInf/Cdtr/PstlAdr/Ctry": self.transfer?.creditorCountry = text
    case "PmtInf/CdtTrfTxInf/CdtrAcct/Id/IBAN", "PmtInf/CdtTrfTxInf/CdtrAcct/Id/Othr/Id": self.transfer?.creditorAccount = text
    case "PmtInf/CdtTrfTxInf/RmtInf/Ustrd":
      guard let remittance = self.transfer?.remittance, remittance.utf8.count < FormatLimits.maxTextBytes else { return }
      self.transfer?.remittance = FormatValues.clip(remittance.isEmpty ? text : remittance + " " + text)
    case "PmtInf/CdtTrfTxInf/RmtInf/Strd/CdtrRefInf/Ref": self.transfer?.creditorReference = text
    case "PmtInf/CdtTrfTxInf":
      guard let transfer = self.transfer else { return }
      guard transfer.amountMinor > 0 else { throw self.fail(element, "a transfer needs an amount (Amt/InstdAmt)") }
      guard !transfer.endToEndID.isEmpty else { throw self.fail(element, "a transfer needs an EndToEndId") }
      self.message.transfers.append(transfer)
      self.transfer = nil
    default: break
    }
  }
}
