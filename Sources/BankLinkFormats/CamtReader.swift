import Foundation

/// Reads ISO 20022 camt.052 (account report), camt.053 (statement) and camt.054 (debit/credit
/// notification), versions .001.02 to .001.13: the elements every version shares are read by
/// their path, so a version's renamings (`BIC`/`BICFI`, `Cdtr/Nm`/`Cdtr/Pty/Nm`, `Sts`/`Sts/Cd`,
/// `AmtDtls/TxAmt/Amt`/`Amt`) are each listed. Elements not listed are skipped, never guessed.
public enum CamtReader {
  /// camt message versions read (the middle number of `camt.053.001.NN`).
  public static let versions = 2...13

  /// Reads the document and reports its statements as events, in file order; returns the
  /// format. Throws ``FormatError`` at the first problem (events already reported stand; a
  /// caller that stores must wait for the end to commit).
  @discardableResult
  public static func read(_ source: FormatSource, _ onEvent: @escaping (StatementEvent) throws -> Void) throws -> StatementFormat {
    let state = CamtState(onEvent: onEvent)
    try XMLWalker.walk(
      source, format: "camt", onStart: { element in try state.start(element) }, onEnd: { element, text in try state.end(element, text) })
    guard let format = state.format else {
      throw FormatError(format: "camt", line: 0, location: "", reason: "no camt.052, camt.053 or camt.054 message in the file")
    }
    return format
  }

  /// Every statement of a document held in memory.
  public static func statements(_ source: FormatSource) throws -> [BankStatement] {
    var collector = StatementCollector()
    try Self.read(source) { collector.take($0) }
    return collector.statements
  }
}

private final class CamtState {
  let onEvent: (StatementEvent) throws -> Void
  var format: StatementFormat?
  var messageID = ""
  var messageCreated = ""
  var header: StatementHeader?
  var headerSent = false
  var trailer = StatementTrailer()
  var balance: StatementBalance?
  var balanceDirection: CreditDebit = .credit
  var balanceDirectionSeen = false
  var entryDirectionSeen = false
  var entry: StatementEntry?
  var details: TransactionDetails?
  var creditorName = "", debtorName = "", creditorAccount = "", debtorAccount = "", creditorBIC = "", debtorBIC = ""
  var domain = "", family = "", subFamily = "", proprietaryCode = ""

  init(onEvent: @escaping (StatementEvent) throws -> Void) { self.onEvent = onEvent }

  static let containers: [String: StatementFormat] = [
    "BkToCstmrStmt": .camt053, "BkToCstmrAcctRpt": .camt052, "BkToCstmrDbtCdtNtfctn": .camt054,
  ]
  static let statementElements: Set<String> = ["Stmt", "Rpt", "Ntfctn"]

  func fail(_ element: XMLWalker.Element, _ reason: String) -> FormatError {
    FormatError(format: self.format?.rawValue ?? "camt", line: 0, location: element.path.joined(separator: "/"), reason: reason)
  }

  /// The path below the statement element (`Ntry/Amt`), or nil outside a statement.
  func relative(_ path: [String]) -> ArraySlice<String>? {
    guard path.count > 3, Self.statementElements.contains(path[2]) else { return nil }
    return path[3...]
  }

  func start(_ element: XMLWalker.Element) throws {
    let path = element.path
    switch path.count {
    case 1:
      guard path[0] == "Document" else { throw self.fail(element, "the root element is \(path[0]), not Document") }
      try self.checkNamespace(element)
      return
    case 2:
      guard let format = Self.containers[path[1]] else {
        throw self.fail(element, "not a camt.052, camt.053 or camt.054 message (\(path[1]))")
      }
      self.format = format
      let expected = format.rawValue
      guard element.namespace.hasPrefix("urn:iso:std:iso:20022:tech:xsd:\(expected).") else {
        throw self.fail(element, "\(path[1]) belongs to \(expected), but the namespace is '\(element.namespace)'")
      }
      return
    case 3:
      if Self.statementElements.contains(path[2]), let format = self.format {
        var header = StatementHeader(format: format)
        header.messageID = self.messageID
        header.createdAt = self.messageCreated
        self.header = header
        self.headerSent = false
        self.trailer = StatementTrailer()
      }
      return
    default:
      break
    }
    guard let relative = self.relative(path) else { return }
    switch relative.count {
    case 1:
      if relative.last == "Bal" {
        self.balance = StatementBalance(type: "", amountMinor: 0, currency: "", date: "")
        self.balanceDirection = .credit
        self.balanceDirectionSeen = false
      } else if relative.last == "Ntry" {
        try self.sendHeader()
        self.entry = StatementEntry()
        self.entry?.status = ""
        self.entryDirectionSeen = false
        (self.domain, self.family, self.subFamily, self.proprietaryCode) = ("", "", "", "")
      }
    case 3 where relative.elementsEqual(["Ntry", "NtryDtls", "TxDtls"]):
      self.details = TransactionDetails()
      (self.creditorName, self.debtorName, self.creditorAccount, self.debtorAccount, self.creditorBIC, self.debtorBIC) =
        ("", "", "", "", "", "")
    default:
      break
    }
  }

  func checkNamespace(_ element: XMLWalker.Element) throws {
    let namespace = element.namespace
    let prefix = "urn:iso:std:iso:20022:tech:xsd:camt.05"
    guard namespace.hasPrefix(prefix) else {
      throw self.fail(element, "the namespace '\(namespace)' is not an ISO 20022 camt.052/053/054 namespace")
    }
    // camt.05N.001.VV
    let tail = namespace.dropFirst(prefix.count)
    let parts = tail.split(separator: ".")
    guard parts.count == 3, ["2", "3", "4"].contains(parts[0]), parts[1] == "001", let version = Int(parts[2]),
      CamtReader.versions.contains(version)
    else {
      throw self.fail(element, "camt message version '\(tail)' is not read (versions 001.02 to 001.13)")
    }
  }

  func sendHeader() throws {
    guard !self.headerSent, let header = self.header else { return }
    self.headerSent = true
    try self.onEvent(.begin(header))
  }

  func amount(_ element: XMLWalker.Element, _ text: String) throws -> (Int64, String) {
    guard let currency = element.attributes["Ccy"], FormatValues.isCurrency(currency) else {
      throw self.fail(element, "the amount has no ISO 4217 currency (Ccy)")
    }
    guard let minor = FormatValues.minorUnits(Substring(text), currency: currency) else {
      throw self.fail(
        element, "'\(FormatValues.clip(text, maxBytes: 40))' is not an amount in \(currency) (at most \(FormatValues.exponent(of: currency)) decimals)")
    }
    return (minor, currency)
  }

  func date(_ element: XMLWalker.Element, _ text: String) throws -> String {
    guard let date = FormatValues.isoDate(text) else { throw self.fail(element, "'\(FormatValues.clip(text, maxBytes: 40))' is not a date") }
    return date
  }

  func number(_ element: XMLWalker.Element, _ text: String) throws -> Int {
    guard let value = Int(text), value >= 0, value <= FormatLimits.maxSequenceNumber else {
      throw self.fail(element, "'\(FormatValues.clip(text, maxBytes: 40))' is not a number of at most \(FormatLimits.maxSequenceNumber)")
    }
    return value
  }

  func direction(_ element: XMLWalker.Element, _ text: String) throws -> CreditDebit {
    guard let direction = CreditDebit(rawValue: text) else { throw self.fail(element, "'\(FormatValues.clip(text, maxBytes: 40))' is not CRDT or DBIT") }
    return direction
  }

  func end(_ element: XMLWalker.Element, _ text: String) throws {
    let path = element.path
    if path.count == 4, path[2] == "GrpHdr" {
      switch path[3] {
      case "MsgId": self.messageID = text
      case "CreDtTm": self.messageCreated = text
      default: break
      }
      return
    }
    if path.count == 3, Self.statementElements.contains(path[2]) {
      try self.sendHeader()
      try self.onEvent(.end(self.trailer))
      self.header = nil
      return
    }
    guard let relative = self.relative(path) else { return }
    // One String for the matching below: switching on a String compares bytes; on a Substring
    // it compares Characters (a profile showed that as a fifth of the parse).
    let key = String(element.key(from: 3))
    if relative.first == "Ntry" {
      try self.endEntryElement(element, key, text)
      return
    }
    if relative.first == "Bal" {
      try self.endBalanceElement(element, key, text)
      return
    }
    guard !self.headerSent else {
      if key == "AddtlStmtInf" || key == "AddtlRptInf" || key == "AddtlNtfctnInf" { self.trailer.additionalInfo = text }
      return
    }
    switch key {
    case "Id": self.header?.statementID = text
    case "ElctrncSeqNb": self.header?.sequenceNumber = try self.number(element, text)
    case "LglSeqNb": self.header?.legalSequenceNumber = try self.number(element, text)
    case "Pgntn/PgNb": self.header?.page = try self.number(element, text)
    case "CreDtTm": self.header?.createdAt = text
    case "FrToDt/FrDtTm": self.header?.fromDateTime = text
    case "FrToDt/ToDtTm": self.header?.toDateTime = text
    case "Acct/Id/IBAN": self.header?.account.iban = text
    case "Acct/Id/Othr/Id": self.header?.account.other = text
    case "Acct/Ccy":
      guard FormatValues.isCurrency(text) else { throw self.fail(element, "'\(text)' is not an ISO 4217 currency") }
      self.header?.account.currency = text
    case "Acct/Svcr/FinInstnId/BIC", "Acct/Svcr/FinInstnId/BICFI": self.header?.account.servicerBIC = text
    default: break
    }
  }

  func endBalanceElement(_ element: XMLWalker.Element, _ key: String, _ text: String) throws {
    switch key {
    case "Bal/Tp/CdOrPrtry/Cd": self.balance?.type = text
    case "Bal/Tp/CdOrPrtry/Prtry": if self.balance?.type.isEmpty == true { self.balance?.type = text }
    case "Bal/Amt":
      let (minor, currency) = try self.amount(element, text)
      self.balance?.amountMinor = minor
      self.balance?.currency = currency
    case "Bal/CdtDbtInd":
      self.balanceDirection = try self.direction(element, text)
      self.balanceDirectionSeen = true
    case "Bal/Dt/Dt", "Bal/Dt/DtTm": self.balance?.date = try self.date(element, text)
    case "Bal":
      guard var balance = self.balance, !balance.type.isEmpty, !balance.currency.isEmpty else {
        throw self.fail(element, "a balance needs a type and an amount")
      }
      // A missing indicator must not read as a credit: it would flip a debit balance's sign.
      guard self.balanceDirectionSeen else { throw self.fail(element, "a balance needs CdtDbtInd (CRDT or DBIT)") }
      if self.balanceDirection == .debit { balance.amountMinor = -balance.amountMinor }
      self.header?.balances.append(balance)
      self.balance = nil
    default: break
    }
  }

  static let detailsPrefix = Array("Ntry/NtryDtls/TxDtls/".utf8)

  func endEntryElement(_ element: XMLWalker.Element, _ key: String, _ text: String) throws {
    if key.utf8.starts(with: Self.detailsPrefix) {
      try self.endDetailsElement(element, String(key.utf8.dropFirst(Self.detailsPrefix.count))!, text)
      return
    }
    switch key {
    case "Ntry/NtryRef": self.entry?.reference = text
    case "Ntry/Amt":
      let (minor, currency) = try self.amount(element, text)
      self.entry?.amountMinor = minor
      self.entry?.currency = currency
    case "Ntry/CdtDbtInd":
      self.entry?.direction = try self.direction(element, text)
      self.entryDirectionSeen = true
    case "Ntry/RvslInd": self.entry?.reversal = text == "true" || text == "1"
    case "Ntry/Sts", "Ntry/Sts/Cd", "Ntry/Sts/Prtry": if !text.isEmpty { self.entry?.status = text }
    case "Ntry/BookgDt/Dt", "Ntry/BookgDt/DtTm": self.entry?.bookingDate = try self.date(element, text)
    case "Ntry/ValDt/Dt", "Ntry/ValDt/DtTm": self.entry?.valueDate = try self.date(element, text)
    case "Ntry/AcctSvcrRef": self.entry?.accountServicerReference = text
    case "Ntry/BkTxCd/Domn/Cd": self.domain = text
    case "Ntry/BkTxCd/Domn/Fmly/Cd": self.family = text
    case "Ntry/BkTxCd/Domn/Fmly/SubFmlyCd": self.subFamily = text
    case "Ntry/BkTxCd/Prtry/Cd": self.proprietaryCode = text
    case "Ntry/AddtlNtryInf": self.entry?.additionalInfo = text
    case "Ntry/NtryDtls/Btch/NbOfTxs": self.entry?.batchCount = try self.number(element, text)
    case "Ntry/NtryDtls/TxDtls":
      guard var details = self.details else { return }
      let debit = self.entry?.direction == .debit
      details.counterpartyName = debit ? self.creditorName : self.debtorName
      details.counterpartyAccount = debit ? self.creditorAccount : self.debtorAccount
      details.counterpartyBIC = debit ? self.creditorBIC : self.debtorBIC
      if (self.entry?.details.count ?? 0) < FormatLimits.maxDetailsPerEntry { self.entry?.details.append(details) }
      self.details = nil
    case "Ntry":
      guard var entry = self.entry else { return }
      guard !entry.currency.isEmpty else { throw self.fail(element, "an entry needs an amount (Amt)") }
      guard self.entryDirectionSeen else { throw self.fail(element, "an entry needs CdtDbtInd (CRDT or DBIT)") }
      if entry.status.isEmpty { throw self.fail(element, "an entry needs a status (Sts)") }
      if !self.domain.isEmpty {
        entry.bankTransactionCode = [self.domain, self.family, self.subFamily].filter { !$0.isEmpty }.joined(separator: "/")
      } else if !self.proprietaryCode.isEmpty {
        entry.bankTransactionCode = "PRTRY:" + self.proprietaryCode
      }
      self.entry = nil
      try self.onEvent(.entry(entry))
    default: break
    }
  }

  func endDetailsElement(_ element: XMLWalker.Element, _ key: String, _ text: String) throws {
    switch key {
    case "Refs/MsgId": self.details?.messageID = text
    case "Refs/AcctSvcrRef": self.details?.accountServicerReference = text
    case "Refs/PmtInfId": self.details?.paymentInformationID = text
    case "Refs/InstrId": self.details?.instructionID = text
    case "Refs/EndToEndId": self.details?.endToEndID = text
    case "Refs/UETR": self.details?.uetr = text
    case "Refs/TxId": self.details?.transactionID = text
    case "Amt", "AmtDtls/TxAmt/Amt":
      let (minor, currency) = try self.amount(element, text)
      self.details?.amountMinor = minor
      self.details?.currency = currency
    case "AmtDtls/InstdAmt/Amt":
      if self.details?.amountMinor == nil {
        let (minor, currency) = try self.amount(element, text)
        self.details?.amountMinor = minor
        self.details?.currency = currency
      }
    case "RltdPties/Cdtr/Nm", "RltdPties/Cdtr/Pty/Nm": self.creditorName = text
    case "RltdPties/Dbtr/Nm", "RltdPties/Dbtr/Pty/Nm": self.debtorName = text
    case "RltdPties/CdtrAcct/Id/IBAN", "RltdPties/CdtrAcct/Id/Othr/Id": self.creditorAccount = text
    case "RltdPties/DbtrAcct/Id/IBAN", "RltdPties/DbtrAcct/Id/Othr/Id": self.debtorAccount = text
    case "RltdAgts/CdtrAgt/FinInstnId/BIC", "RltdAgts/CdtrAgt/FinInstnId/BICFI": self.creditorBIC = text
    case "RltdAgts/DbtrAgt/FinInstnId/BIC", "RltdAgts/DbtrAgt/FinInstnId/BICFI": self.debtorBIC = text
    case "RmtInf/Ustrd":
      if (self.details?.remittance.count ?? 0) < FormatLimits.maxRemittanceLines { self.details?.remittance.append(text) }
    case "RmtInf/Strd/CdtrRefInf/Ref": self.details?.creditorReference = text
    case "RtrInf/Rsn/Cd", "RtrInf/Rsn/Prtry": self.details?.returnReason = text
    case "Chrgs/Rcrd/Amt", "Chrgs/Amt":
      let (minor, _) = try self.amount(element, text)
      let (sum, overflow) = (self.details?.chargesMinor ?? 0).addingReportingOverflow(minor)
      guard !overflow else { throw self.fail(element, "charges overflow") }
      self.details?.chargesMinor = sum
    case "AddtlTxInf": self.details?.additionalInfo = text
    default: break
    }
  }
}
