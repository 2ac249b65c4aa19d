import BankLinkCore

/// What the daemon accepts from a bank, checked at the boundary before anything is stored.
///
/// A bank is an outside party: its ids become LMDB keys (at most 511 bytes, and empty keys are
/// refused), its texts are returned to clients, and its pages drive loops. An item that breaks
/// these limits is skipped and recorded as an anomaly (audit and an error-level log line) while
/// the feed's cursor moves past it, so one bad entry can neither stall a sync nor be lost
/// silently.
public enum BankDataLimits {
  /// ISO 20022 `EndToEndId` is Max35Text.
  public static let maxEndToEndIDBytes = 35
  /// A bank's transaction id (camt.053 `AcctSvcrRef`/`NtryRef` are Max35Text; room for banks
  /// that concatenate several references).
  public static let maxTransactionIDBytes = 128
  /// A bank feed cursor (opaque; stored as a value, bounded so a bank cannot grow our records).
  public static let maxCursorBytes = 1_024
  /// Free text from the bank (counterparty names, descriptions, references): ISO 20022's
  /// longest common text type is Max140Text; 4 bytes a character in UTF-8, with room to spare.
  public static let maxTextBytes = 1_024
  /// Status report reason text kept with the payment.
  public static let maxReasonBytes = 256
  /// Status and reason codes (ISO 20022 codes are 4 characters).
  public static let maxStatusCodeBytes = 8
  /// Status report pages read in one submitter round: bounds the loop when a bank keeps
  /// answering `hasMore` (× `Limits.syncBatchSize` reports).
  public static let maxStatusPagesPerRound = 40
  /// Accounts taken from one `listAccounts` answer.
  public static let maxAccounts = 10_000
  /// How far ahead of the daemon's clock a bank's balance `as_of` may be (clock skew). A balance
  /// dated later would keep every real balance after it out of the cache and count debits booked
  /// before its date as included.
  public static let maxClockSkewMilliseconds: Int64 = 5 * 60_000

  /// Nil when `endToEndID` can key a lookup; otherwise why not.
  public static func endToEndIDProblem(_ endToEndID: String) -> String? {
    if endToEndID.isEmpty { return "has no EndToEndId" }
    if endToEndID.utf8.count > maxEndToEndIDBytes {
      return "has an EndToEndId of \(endToEndID.utf8.count) bytes (at most \(maxEndToEndIDBytes))"
    }
    return nil
  }

  /// Nil when a booked transaction from the feed of `accountID` (in `currency`) can be stored.
  public static func transactionProblem(_ transaction: BookedTransaction, accountID: String, currency: CurrencyCode?) -> String? {
    if transaction.id.isEmpty { return "transaction without an id" }
    if transaction.id.utf8.count > maxTransactionIDBytes {
      return "transaction id of \(transaction.id.utf8.count) bytes (at most \(maxTransactionIDBytes))"
    }
    if transaction.accountID != accountID { return "transaction of account \(LogText.prefix(transaction.accountID)) in the feed of \(accountID)" }
    if let currency, transaction.amount.currency != currency {
      return "transaction in \(transaction.amount.currency) on a \(currency) account"
    }
    if transaction.amount.minorUnits <= 0 || transaction.amount.minorUnits > Limits.maxBankAmountMinorUnits {
      return "transaction amount \(transaction.amount.minorUnits) outside 1...\(Limits.maxBankAmountMinorUnits) minor units"
    }
    if !transaction.endToEndID.isEmpty, transaction.endToEndID.utf8.count > maxEndToEndIDBytes {
      return "EndToEndId of \(transaction.endToEndID.utf8.count) bytes (at most \(maxEndToEndIDBytes))"
    }
    let texts = [
      transaction.counterparty.name, transaction.counterparty.accountNumber, transaction.counterparty.bankBIC,
      transaction.counterparty.bankName, transaction.bankReference, transaction.description, transaction.valueDate,
    ]
    if let long = texts.first(where: { $0.utf8.count > maxTextBytes }) {
      return "a text field of \(long.utf8.count) bytes (at most \(maxTextBytes))"
    }
    return nil
  }

  /// Nil when an account from `listAccounts` can be cached.
  public static func accountProblem(_ account: Account) -> String? {
    if !PaymentValidation.isAccountID(account.id) { return "account id \(PaymentValidation.accountIDRule)" }
    let texts = [account.number, account.iban, account.displayName, account.bankBIC, account.bankName]
    if let long = texts.first(where: { $0.utf8.count > maxTextBytes }) {
      return "a text field of \(long.utf8.count) bytes (at most \(maxTextBytes))"
    }
    return nil
  }

  /// Nil when `balance`, asked for `accountID` held in `currency`, can be cached.
  public static func balanceProblem(_ balance: LedgerBalance, accountID: String, currency: CurrencyCode, now: Instant) -> String? {
    if balance.asOf.millisecondsSinceEpoch > now.millisecondsSinceEpoch + maxClockSkewMilliseconds {
      return "balance dated \(balance.asOf.millisecondsSinceEpoch - now.millisecondsSinceEpoch) ms ahead of this clock (at most \(maxClockSkewMilliseconds))"
    }
    if balance.accountID != accountID { return "balance of \(LogText.prefix(balance.accountID)) returned for \(accountID)" }
    if balance.ledger.currency != currency { return "balance in \(balance.ledger.currency) for a \(currency) account" }
    if balance.ledger.minorUnits.magnitude > UInt64(Limits.maxBankAmountMinorUnits) {
      return "balance \(balance.ledger.minorUnits) beyond ±\(Limits.maxBankAmountMinorUnits) minor units"
    }
    return nil
  }
}
