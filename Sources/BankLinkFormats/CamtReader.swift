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
    try XMLWalker.walk(source, format: "camt", table: CamtState.table, handler: state)
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

/// What the reader does with each element it knows (``CamtState/table`` lists their paths).
private enum CamtAction: Int32 {
  case document = 1, container053, container052, container054, groupMessageID, groupCreated, statement
  case statementID, sequenceNumber, legalSequenceNumber, page, created, fromDateTime, toDateTime
  case accountIBAN, accountOther, accountCurrency, accountServicerBIC, additionalStatementInfo
  case balance, balanceTypeCode, balanceTypeProprietary, balanceAmount, balanceDirection, balanceDate
  case entry, entryReference, entryAmount, entryDirection, entryReversal, entryStatus, entryBookingDate, entryValueDate
  case entryServicerReference, domain, family, subFamily, proprietaryCode, entryAdditionalInfo, batchCount
  case details, messageID, servicerReference, paymentInformationID, instructionID, endToEndID, uetr, transactionID
  case amount, instructedAmount, creditorName, debtorName, creditorAccount, debtorAccount, creditorBIC, debtorBIC
  case remittance, creditorReference, returnReason, charges, additionalTransactionInfo
}

private final class CamtState: XMLTableHandler {
  let onEvent: (StatementEvent) throws -> Void
  var format: StatementFormat?
  var messageID = ""
  var messageCreated = ""
  var header: StatementHeader?
  var headerSent = false
  /// Statements (reports, notifications) begun so far: at most ``FormatLimits/maxStatementsPerFile``.
  var statements = 0
  var trailer = StatementTrailer()
  var balance: StatementBalance?
  var balanceDirection: CreditDebit = .credit
  var balanceDirectionSeen = false
  var entryDirectionSeen = false
  /// The entry and the transaction being read, built in place (an optional here would be
  /// copied out and back for every field set) while `entryOpen` / `detailsOpen`.
  var entry = StatementEntry()
  var entryOpen = false
  var details = TransactionDetails()
  var detailsOpen = false
  /// The currency of the amount element open now (its `Ccy` attribute).
  var amountCurrency: String?
  var creditorName = "", debtorName = "", creditorAccount = "", debtorAccount = "", creditorBIC = "", debtorBIC = ""
  var domain = "", family = "", subFamily = "", proprietaryCode = ""

  init(onEvent: @escaping (StatementEvent) throws -> Void) { self.onEvent = onEvent }

  /// Every path read, for all three messages and every version: a version's renamings
  /// (`BIC`/`BICFI`, `Cdtr/Nm`/`Cdtr/Pty/Nm`, `Sts`/`Sts/Cd`, `AmtDtls/TxAmt/Amt`/`Amt`) are
  /// each listed.
  static let table: XMLPathTable = {
    typealias Entry = XMLPathTable.Entry
    let message = "Document/BkToCstmrStmt|BkToCstmrAcctRpt|BkToCstmrDbtCdtNtfctn"
    let statement = message + "/Stmt|Rpt|Ntfctn"
    let entry = statement + "/Ntry"
    let details = entry + "/NtryDtls/TxDtls"
    func at(_ base: String, _ entries: [(String, CamtAction)]) -> [Entry] {
      entries.map { Entry(base + "/" + $0.0, $0.1.rawValue) }
    }
    var entries: [Entry] = [
      Entry("Document", CamtAction.document.rawValue, text: false),
      Entry("Document/BkToCstmrStmt", CamtAction.container053.rawValue, text: false),
      Entry("Document/BkToCstmrAcctRpt", CamtAction.container052.rawValue, text: false),
      Entry("Document/BkToCstmrDbtCdtNtfctn", CamtAction.container054.rawValue, text: false),
      Entry(statement, CamtAction.statement.rawValue, text: false),
      Entry(statement + "/Bal", CamtAction.balance.rawValue, text: false),
      Entry(entry, CamtAction.entry.rawValue, text: false),
      Entry(details, CamtAction.details.rawValue, text: false),
    ]
    entries += at(message, [("GrpHdr/MsgId", .groupMessageID), ("GrpHdr/CreDtTm", .groupCreated)])
    entries += at(
      statement,
      [
        ("Id", .statementID), ("ElctrncSeqNb", .sequenceNumber), ("LglSeqNb", .legalSequenceNumber), ("Pgntn/PgNb", .page),
        ("CreDtTm", .created), ("FrToDt/FrDtTm", .fromDateTime), ("FrToDt/ToDtTm", .toDateTime), ("Acct/Id/IBAN", .accountIBAN),
        ("Acct/Id/Othr/Id", .accountOther), ("Acct/Ccy", .accountCurrency), ("Acct/Svcr/FinInstnId/BIC|BICFI", .accountServicerBIC),
        ("AddtlStmtInf|AddtlRptInf|AddtlNtfctnInf", .additionalStatementInfo),
        ("Bal/Tp/CdOrPrtry/Cd", .balanceTypeCode), ("Bal/Tp/CdOrPrtry/Prtry", .balanceTypeProprietary), ("Bal/Amt", .balanceAmount),
        ("Bal/CdtDbtInd", .balanceDirection), ("Bal/Dt/Dt|DtTm", .balanceDate),
      ])
    entries += at(
      entry,
      [
        ("NtryRef", .entryReference), ("Amt", .entryAmount), ("CdtDbtInd", .entryDirection), ("RvslInd", .entryReversal),
        ("Sts", .entryStatus), ("Sts/Cd|Prtry", .entryStatus), ("BookgDt/Dt|DtTm", .entryBookingDate),
        ("ValDt/Dt|DtTm", .entryValueDate), ("AcctSvcrRef", .entryServicerReference), ("BkTxCd/Domn/Cd", .domain),
        ("BkTxCd/Domn/Fmly/Cd", .family), ("BkTxCd/Domn/Fmly/SubFmlyCd", .subFamily), ("BkTxCd/Prtry/Cd", .proprietaryCode),
        ("AddtlNtryInf", .entryAdditionalInfo), ("NtryDtls/Btch/NbOfTxs", .batchCount),
      ])
    entries += at(
      details,
      [
        ("Refs/MsgId", .messageID), ("Refs/AcctSvcrRef", .servicerReference), ("Refs/PmtInfId", .paymentInformationID),
        ("Refs/InstrId", .instructionID), ("Refs/EndToEndId", .endToEndID), ("Refs/UETR", .uetr), ("Refs/TxId", .transactionID),
        ("Amt", .amount), ("AmtDtls/TxAmt/Amt", .amount), ("AmtDtls/InstdAmt/Amt", .instructedAmount),
        ("RltdPties/Cdtr/Nm", .creditorName), ("RltdPties/Cdtr/Pty/Nm", .creditorName),
        ("RltdPties/Dbtr/Nm", .debtorName), ("RltdPties/Dbtr/Pty/Nm", .debtorName),
        ("RltdPties/CdtrAcct/Id/IBAN", .creditorAccount), ("RltdPties/CdtrAcct/Id/Othr/Id", .creditorAccount),
        ("RltdPties/DbtrAcct/Id/IBAN", .debtorAccount), ("RltdPties/DbtrAcct/Id/Othr/Id", .debtorAccount),
        ("RltdAgts/CdtrAgt/FinInstnId/BIC|BICFI", .creditorBIC), ("RltdAgts/DbtrAgt/FinInstnId/BIC|BICFI", .debtorBIC),
        ("RmtInf/Ustrd", .remittance), ("RmtInf/Strd/CdtrRefInf/Ref", .creditorReference), ("RtrInf/Rsn/Cd|Prtry", .returnReason),
        ("Chrgs/Rcrd/Amt", .charges), ("Chrgs/Amt", .charges), ("AddtlTxInf", .additionalTransactionInfo),
      ])
    return XMLPathTable(entries)
  }()

  /// A refusal; the walker adds the line and the element's path.
  func fail(_ reason: String) -> FormatError {
    FormatError(format: self.format?.rawValue ?? "camt", line: 0, location: "", reason: reason)
  }

  func start(_ action: Int32, _ element: XMLOpening) throws {
    guard let action = CamtAction(rawValue: action) else {
      // Outside the table at depth 1 or 2: the wrong document.
      if element.depth == 1 { throw self.fail("the root element is \(element.name), not Document") }
      throw self.fail("not a camt.052, camt.053 or camt.054 message (\(element.name))")
    }
    switch action {
    case .document: try self.checkNamespace(element.namespace)
    case .container053, .container052, .container054:
      let format: StatementFormat = action == .container053 ? .camt053 : action == .container052 ? .camt052 : .camt054
      self.format = format
      let namespace = element.namespace
      guard namespace.hasPrefix("urn:iso:std:iso:20022:tech:xsd:\(format.rawValue).") else {
        throw self.fail("\(element.name) belongs to \(format.rawValue), but the namespace is '\(namespace)'")
      }
    case .statement:
      guard let format = self.format else { return }
      self.statements += 1
      guard self.statements <= FormatLimits.maxStatementsPerFile else {
        throw self.fail("more than \(FormatLimits.maxStatementsPerFile) statements in one file")
      }
      var header = StatementHeader(format: format)
      header.messageID = self.messageID
      header.createdAt = self.messageCreated
      self.header = header
      self.headerSent = false
      self.trailer = StatementTrailer()
    case .balance:
      self.balance = StatementBalance(type: "", amountMinor: 0, currency: "", date: "")
      self.balanceDirection = .credit
      self.balanceDirectionSeen = false
    case .entry:
      try self.sendHeader()
      self.entry = StatementEntry()
      self.entry.status = ""
      self.entryOpen = true
      self.entryDirectionSeen = false
      (self.domain, self.family, self.subFamily, self.proprietaryCode) = ("", "", "", "")
    case .details:
      self.details = TransactionDetails()
      self.detailsOpen = true
      (self.creditorName, self.debtorName, self.creditorAccount, self.debtorAccount, self.creditorBIC, self.debtorBIC) =
        ("", "", "", "", "", "")
    case .balanceAmount, .entryAmount, .amount, .instructedAmount, .charges:
      self.amountCurrency = element.attribute("Ccy")
    default: break
    }
  }

  func checkNamespace(_ namespace: String) throws {
    let prefix = "urn:iso:std:iso:20022:tech:xsd:camt.05"
    guard namespace.hasPrefix(prefix) else {
      throw self.fail("the namespace '\(namespace)' is not an ISO 20022 camt.052/053/054 namespace")
    }
    // camt.05N.001.VV
    let tail = namespace.dropFirst(prefix.count)
    let parts = tail.split(separator: ".")
    guard parts.count == 3, ["2", "3", "4"].contains(parts[0]), parts[1] == "001", let version = Int(parts[2]),
      CamtReader.versions.contains(version)
    else {
      throw self.fail("camt message version '\(tail)' is not read (versions 001.02 to 001.13)")
    }
  }

  func sendHeader() throws {
    guard !self.headerSent, let header = self.header else { return }
    self.headerSent = true
    try self.onEvent(.begin(header))
  }

  func amount(_ text: String) throws -> (Int64, String) {
    guard let currency = self.amountCurrency, FormatValues.isCurrency(currency) else {
      throw self.fail("the amount has no ISO 4217 currency (Ccy)")
    }
    guard let minor = FormatValues.minorUnits(Substring(text), currency: currency) else {
      throw self.fail("'\(FormatValues.clip(text, maxBytes: 40))' is not an amount in \(currency) (at most \(FormatValues.exponent(of: currency)) decimals)")
    }
    return (minor, currency)
  }

  func date(_ text: String) throws -> String {
    guard let date = FormatValues.isoDate(text) else { throw self.fail("'\(FormatValues.clip(text, maxBytes: 40))' is not a date") }
    return date
  }

  func number(_ text: String) throws -> Int {
    guard let value = Int(text), value >= 0, value <= FormatLimits.maxSequenceNumber else {
      throw self.fail("'\(FormatValues.clip(text, maxBytes: 40))' is not a number of at most \(FormatLimits.maxSequenceNumber)")
    }
    return value
  }

  func direction(_ text: String) throws -> CreditDebit {
    guard let direction = CreditDebit(rawValue: text) else { throw self.fail("'\(FormatValues.clip(text, maxBytes: 40))' is not CRDT or DBIT") }
    return direction
  }

  func end(_ action: Int32, _ text: String) throws {
    guard let action = CamtAction(rawValue: action) else { return }
    switch action {
    case .document, .container053, .container052, .container054: break
    case .groupMessageID: self.messageID = text
    case .groupCreated: self.messageCreated = text
    case .statement:
      guard self.header != nil else { return }
      try self.sendHeader()
      try self.onEvent(.end(self.trailer))
      self.header = nil
    // The statement's own elements come before its entries in every version; once the header
    // has gone out with the first entry, a late one is not applied to it.
    case .statementID: if !self.headerSent { self.header?.statementID = text }
    case .sequenceNumber: if !self.headerSent { self.header?.sequenceNumber = try self.number(text) }
    case .legalSequenceNumber: if !self.headerSent { self.header?.legalSequenceNumber = try self.number(text) }
    case .page: if !self.headerSent { self.header?.page = try self.number(text) }
    case .created: if !self.headerSent { self.header?.createdAt = text }
    case .fromDateTime: if !self.headerSent { self.header?.fromDateTime = text }
    case .toDateTime: if !self.headerSent { self.header?.toDateTime = text }
    case .accountIBAN: if !self.headerSent { self.header?.account.iban = text }
    case .accountOther: if !self.headerSent { self.header?.account.other = text }
    case .accountCurrency:
      guard FormatValues.isCurrency(text) else { throw self.fail("'\(FormatValues.clip(text, maxBytes: 40))' is not an ISO 4217 currency") }
      if !self.headerSent { self.header?.account.currency = text }
    case .accountServicerBIC: if !self.headerSent { self.header?.account.servicerBIC = text }
    case .additionalStatementInfo: self.trailer.additionalInfo = text
    case .balanceTypeCode: self.balance?.type = text
    case .balanceTypeProprietary: if self.balance?.type.isEmpty == true { self.balance?.type = text }
    case .balanceAmount:
      let (minor, currency) = try self.amount(text)
      self.balance?.amountMinor = minor
      self.balance?.currency = currency
    case .balanceDirection:
      self.balanceDirection = try self.direction(text)
      self.balanceDirectionSeen = true
    case .balanceDate: self.balance?.date = try self.date(text)
    case .balance:
      guard var balance = self.balance, !balance.type.isEmpty, !balance.currency.isEmpty else {
        throw self.fail("a balance needs a type and an amount")
      }
      // A missing indicator must not read as a credit: it would flip a debit balance's sign.
      guard self.balanceDirectionSeen else { throw self.fail("a balance needs CdtDbtInd (CRDT or DBIT)") }
      if self.balanceDirection == .debit { balance.amountMinor = -balance.amountMinor }
      if !self.headerSent { self.header?.balances.append(balance) }
      self.balance = nil
    case .entryReference: self.entry.reference = text
    case .entryAmount:
      let (minor, currency) = try self.amount(text)
      self.entry.amountMinor = minor
      self.entry.currency = currency
    case .entryDirection:
      self.entry.direction = try self.direction(text)
      self.entryDirectionSeen = true
    case .entryReversal: self.entry.reversal = text == "true" || text == "1"
    case .entryStatus: if !text.isEmpty { self.entry.status = text }
    case .entryBookingDate: self.entry.bookingDate = try self.date(text)
    case .entryValueDate: self.entry.valueDate = try self.date(text)
    case .entryServicerReference: self.entry.accountServicerReference = text
    case .domain: self.domain = text
    case .family: self.family = text
    case .subFamily: self.subFamily = text
    case .proprietaryCode: self.proprietaryCode = text
    case .entryAdditionalInfo: self.entry.additionalInfo = text
    case .batchCount: self.entry.batchCount = try self.number(text)
    case .details:
      guard self.detailsOpen else { return }
      self.detailsOpen = false
      // Taken, not copied: the entry gets the only reference to its strings.
      var details = TransactionDetails()
      swap(&details, &self.details)
      let debit = self.entry.direction == .debit
      details.counterpartyName = debit ? self.creditorName : self.debtorName
      details.counterpartyAccount = debit ? self.creditorAccount : self.debtorAccount
      details.counterpartyBIC = debit ? self.creditorBIC : self.debtorBIC
      if self.entry.details.count < FormatLimits.maxDetailsPerEntry { self.entry.details.append(details) }
    case .entry:
      guard self.entryOpen else { return }
      self.entryOpen = false
      var entry = StatementEntry()
      swap(&entry, &self.entry)
      guard !entry.currency.isEmpty else { throw self.fail("an entry needs an amount (Amt)") }
      guard self.entryDirectionSeen else { throw self.fail("an entry needs CdtDbtInd (CRDT or DBIT)") }
      if entry.status.isEmpty { throw self.fail("an entry needs a status (Sts)") }
      if !self.domain.isEmpty {
        var code = self.domain
        if !self.family.isEmpty { code += "/" + self.family }
        if !self.subFamily.isEmpty { code += "/" + self.subFamily }
        entry.bankTransactionCode = code
      } else if !self.proprietaryCode.isEmpty {
        entry.bankTransactionCode = "PRTRY:" + self.proprietaryCode
      }
      try self.onEvent(.entry(entry))
    case .messageID: self.details.messageID = text
    case .servicerReference: self.details.accountServicerReference = text
    case .paymentInformationID: self.details.paymentInformationID = text
    case .instructionID: self.details.instructionID = text
    case .endToEndID: self.details.endToEndID = text
    case .uetr: self.details.uetr = text
    case .transactionID: self.details.transactionID = text
    case .amount:
      let (minor, currency) = try self.amount(text)
      self.details.amountMinor = minor
      self.details.currency = currency
    case .instructedAmount:
      if self.details.amountMinor == nil {
        let (minor, currency) = try self.amount(text)
        self.details.amountMinor = minor
        self.details.currency = currency
      }
    case .creditorName: self.creditorName = text
    case .debtorName: self.debtorName = text
    case .creditorAccount: self.creditorAccount = text
    case .debtorAccount: self.debtorAccount = text
    case .creditorBIC: self.creditorBIC = text
    case .debtorBIC: self.debtorBIC = text
    case .remittance:
      if self.details.remittance.count < FormatLimits.maxRemittanceLines { self.details.remittance.append(text) }
    case .creditorReference: self.details.creditorReference = text
    case .returnReason: self.details.returnReason = text
    case .charges:
      let (minor, _) = try self.amount(text)
      let (sum, overflow) = self.details.chargesMinor.addingReportingOverflow(minor)
      guard !overflow else { throw self.fail("charges overflow") }
      self.details.chargesMinor = sum
    case .additionalTransactionInfo: self.details.additionalInfo = text
    }
  }
}
