/// Bank statements as the formats describe them: what a camt.052/053/054 or an MT940/942 says,
/// nothing inferred. Amounts are integer minor units of the stated currency (never floating
/// point); dates are ISO 8601 calendar dates (`2026-12-03`) as the file gives them.

/// Which kind of file a statement came from.
public enum StatementFormat: String, Sendable, Hashable, Codable, CaseIterable {
  /// ISO 20022 BankToCustomerAccountReport (intraday).
  case camt052 = "camt.052"
  /// ISO 20022 BankToCustomerStatement (end of day).
  case camt053 = "camt.053"
  /// ISO 20022 BankToCustomerDebitCreditNotification.
  case camt054 = "camt.054"
  /// SWIFT MT940 customer statement.
  case mt940 = "MT940"
  /// SWIFT MT942 interim transaction report.
  case mt942 = "MT942"
}

public enum CreditDebit: String, Sendable, Hashable, Codable {
  case credit = "CRDT"
  case debit = "DBIT"
}

/// The account a statement is about.
public struct StatementAccount: Sendable, Hashable, Codable {
  public var iban = ""
  /// Any other identification (a domestic account number, or MT940's `:25:` as given).
  public var other = ""
  public var currency = ""
  /// The account servicer (the bank), when the file names it.
  public var servicerBIC = ""

  public init(iban: String = "", other: String = "", currency: String = "", servicerBIC: String = "") {
    self.iban = iban
    self.other = other
    self.currency = currency
    self.servicerBIC = servicerBIC
  }

  /// The identification to look the account up by: the IBAN, else the other one.
  public var identification: String { self.iban.isEmpty ? self.other : self.iban }
}

/// A balance: signed minor units (negative when the file says debit).
public struct StatementBalance: Sendable, Hashable, Codable {
  /// ISO 20022 balance type code: OPBD (opening booked), CLBD (closing booked), PRCD (previous
  /// closing), CLAV (closing available), ITBD (interim booked), FWAV (forward available), …;
  /// MT940's tags map to these (`:60F:` OPBD, `:62F:` CLBD, `:60M:`/`:62M:` ITBD, `:64:` CLAV,
  /// `:65:` FWAV).
  public var type: String
  public var amountMinor: Int64
  public var currency: String
  public var date: String

  public init(type: String, amountMinor: Int64, currency: String, date: String) {
    self.type = type
    self.amountMinor = amountMinor
    self.currency = currency
    self.date = date
  }
}

/// One transaction inside an entry (an entry booked for a batch has several).
public struct TransactionDetails: Sendable, Hashable, Codable {
  public var messageID = ""
  public var accountServicerReference = ""
  public var paymentInformationID = ""
  public var instructionID = ""
  public var endToEndID = ""
  public var uetr = ""
  public var transactionID = ""
  /// The transaction's own amount when the file gives one (an entry for a batch sums them).
  public var amountMinor: Int64?
  public var currency = ""
  /// The other side: the creditor of a debit, the debtor of a credit.
  public var counterpartyName = ""
  public var counterpartyAccount = ""
  public var counterpartyBIC = ""
  /// Unstructured remittance lines, in order.
  public var remittance: [String] = []
  /// Structured creditor reference (ISO 11649 RF…, or a national one).
  public var creditorReference = ""
  /// Return reason code (ISO 20022 external code: AC04, MS03, …) when the entry is a return.
  public var returnReason = ""
  /// Charges booked with this transaction, minor units of `currency`.
  public var chargesMinor: Int64 = 0
  public var additionalInfo = ""

  public init() {}
}

/// One entry (camt `Ntry`, MT940 `:61:` with its `:86:`).
public struct StatementEntry: Sendable, Hashable, Codable {
  public var reference = ""
  /// Positive minor units; the direction says which way.
  public var amountMinor: Int64 = 0
  public var currency = ""
  public var direction: CreditDebit = .credit
  /// The entry reverses an earlier one (camt `RvslInd`, MT940 `RC`/`RD`).
  public var reversal = false
  /// BOOK, PDNG or INFO (MT940 entries are booked).
  public var status = "BOOK"
  public var bookingDate = ""
  public var valueDate = ""
  /// The bank's own reference for the entry (camt `AcctSvcrRef`, MT940's `//` reference).
  public var accountServicerReference = ""
  /// Bank transaction code: `DOMAIN/FAMILY/SUBFAMILY` (ISO), else the proprietary code
  /// (`PRTRY:…`), else MT940's type (`NTRF`).
  public var bankTransactionCode = ""
  /// The client's reference on MT940 `:61:` (often the EndToEndId), camt `NtryRef` otherwise empty.
  public var customerReference = ""
  public var additionalInfo = ""
  /// Transactions the bank says the entry holds (camt `Btch/NbOfTxs`), when it says.
  public var batchCount: Int?
  public var details: [TransactionDetails] = []

  public init() {}

  /// The amount with its sign: credits positive, debits negative.
  public var signedAmountMinor: Int64 { self.direction == .credit ? self.amountMinor : -self.amountMinor }
}

/// What a statement says before its entries.
public struct StatementHeader: Sendable, Hashable, Codable {
  public var format: StatementFormat
  /// The message's id (camt `GrpHdr/MsgId`, MT940 `:20:`).
  public var messageID = ""
  /// The statement's own id (camt `Stmt/Id`, MT940 `:20:`).
  public var statementID = ""
  /// camt `ElctrncSeqNb`, MT940 `:28C:`'s statement number.
  public var sequenceNumber: Int?
  /// camt `LglSeqNb`.
  public var legalSequenceNumber: Int?
  /// MT940 `:28C:`'s page (sequence within the statement), camt `Pgntn/PgNb`.
  public var page: Int?
  public var createdAt = ""
  public var fromDateTime = ""
  public var toDateTime = ""
  public var account = StatementAccount()
  /// Balances given before the entries (camt: all of them; MT940: the opening one).
  public var balances: [StatementBalance] = []

  public init(format: StatementFormat) { self.format = format }
}

/// What a statement says after its entries.
public struct StatementTrailer: Sendable, Hashable, Codable {
  /// Balances given after the entries (MT940's closing ones; empty for camt).
  public var balances: [StatementBalance] = []
  public var additionalInfo = ""

  public init() {}
}

/// A reader's output, in file order: a statement's header, its entries, its end — so a file of
/// a million entries is handled in bounded memory.
public enum StatementEvent: Sendable, Hashable {
  case begin(StatementHeader)
  case entry(StatementEntry)
  case end(StatementTrailer)
}

/// A whole statement, for files small enough to hold (tests, `banklink statements parse`).
public struct BankStatement: Sendable, Hashable, Codable {
  public var header: StatementHeader
  public var entries: [StatementEntry] = []
  public var trailer = StatementTrailer()

  public init(header: StatementHeader) { self.header = header }

  /// Every balance, header's and trailer's.
  public var balances: [StatementBalance] { self.header.balances + self.trailer.balances }

  public func balance(_ types: String...) -> StatementBalance? {
    for type in types { if let found = self.balances.first(where: { $0.type == type }) { return found } }
    return nil
  }
}

/// Collects a reader's events into whole statements.
public struct StatementCollector: Sendable {
  public private(set) var statements: [BankStatement] = []

  public init() {}

  public mutating func take(_ event: StatementEvent) {
    switch event {
    case .begin(let header): self.statements.append(BankStatement(header: header))
    case .entry(let entry): self.statements[self.statements.count - 1].entries.append(entry)
    case .end(let trailer): self.statements[self.statements.count - 1].trailer = trailer
    }
  }
}
