import BankLinkCore

/// Why a bank call failed. Connectors map every transport and protocol failure onto these codes
/// so callers decide on retry, fallback or alert without knowing the bank.
public struct BankError: Error, Sendable, Hashable, CustomStringConvertible {
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    private enum Wrapped: Hashable, Sendable { case unavailable, rejected, timeout, malformed, notFound }
    private let wrapped: Wrapped
    private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

    /// The bank (or the line to it) is down; retry later with backoff.
    public static let unavailable = Code(.unavailable)
    /// The bank refused the request; retrying the same request will not help.
    public static let rejected = Code(.rejected)
    /// No answer before the deadline; the outcome is unknown (for submissions: retry with the
    /// same message id, the bank deduplicates).
    public static let timeout = Code(.timeout)
    /// The bank answered with something that could not be understood.
    public static let malformed = Code(.malformed)
    /// The account or object is unknown to the bank.
    public static let notFound = Code(.notFound)

    public var description: String {
      switch self.wrapped {
      case .unavailable: "unavailable"
      case .rejected: "rejected"
      case .timeout: "timeout"
      case .malformed: "malformed"
      case .notFound: "not found"
      }
    }
  }

  public var code: Code
  public var message: String

  public init(_ code: Code, _ message: String) {
    self.code = code
    self.message = message
  }

  public var description: String { "bank \(self.code): \(self.message)" }
}

/// One page of an account's booked transactions from a bank's feed.
public struct TransactionFeedPage: Sendable, Hashable {
  /// In the bank's booking order.
  public var transactions: [BookedTransaction]
  /// Opaque position after the last transaction; pass it to the next fetch. Stored by the cache
  /// so sync resumes where it stopped across restarts.
  public var nextCursor: String
  /// True when more transactions are available right away.
  public var hasMore: Bool

  public init(transactions: [BookedTransaction], nextCursor: String, hasMore: Bool) {
    self.transactions = transactions
    self.nextCursor = nextCursor
    self.hasMore = hasMore
  }
}

/// Account information: what the bank says about accounts, balances and booked entries.
///
/// Every call takes a deadline and must return or throw by then (``BankError/Code/timeout``);
/// banks are slow and fail, and a caller must never hang on one.
public protocol AccountInformationConnector: Sendable {
  /// The accounts the enterprise holds at the bank(s) behind this connector.
  func listAccounts(deadline: ContinuousClock.Instant) async throws(BankError) -> [Account]

  /// The current booked balance of one account.
  func fetchBalance(accountID: String, deadline: ContinuousClock.Instant) async throws(BankError) -> LedgerBalance

  /// Booked transactions after `cursor` (nil: from the start of the available history), at most
  /// `limit` of them, in booking order.
  func fetchTransactions(
    accountID: String,
    after cursor: String?,
    limit: Int,
    deadline: ContinuousClock.Instant
  ) async throws(BankError) -> TransactionFeedPage
}

/// A credit transfer instruction as sent to the bank (the content of one pain.001
/// CdtTrfTxInf within a message).
public struct PaymentSubmission: Sendable, Hashable {
  /// Message id (pain.001 GrpHdr/MsgId): the same on every retry of the same submission.
  public var messageID: String
  /// EndToEndId: unique per payment, carried to the beneficiary and back on statements.
  public var endToEndID: String
  public var debtorAccountID: String
  public var amount: Money
  public var creditor: Counterparty
  public var creditorCountry: String
  public var remittanceInformation: String
  /// ISO 8601 requested execution date.
  public var requestedExecutionDate: String

  public init(
    messageID: String, endToEndID: String, debtorAccountID: String, amount: Money, creditor: Counterparty,
    creditorCountry: String, remittanceInformation: String, requestedExecutionDate: String
  ) {
    self.messageID = messageID
    self.endToEndID = endToEndID
    self.debtorAccountID = debtorAccountID
    self.amount = amount
    self.creditor = creditor
    self.creditorCountry = creditorCountry
    self.remittanceInformation = remittanceInformation
    self.requestedExecutionDate = requestedExecutionDate
  }
}

/// The bank's acknowledgement that it holds a submission (not that it will pay it).
public struct SubmissionAcknowledgement: Sendable, Hashable {
  public var messageID: String
  public var endToEndID: String
  /// True when the bank had already received this message id / EndToEndId.
  public var duplicate: Bool
  public var receivedAt: Instant

  public init(messageID: String, endToEndID: String, duplicate: Bool, receivedAt: Instant) {
    self.messageID = messageID
    self.endToEndID = endToEndID
    self.duplicate = duplicate
    self.receivedAt = receivedAt
  }
}

/// A payment status report (pain.002 transaction status), possibly duplicated or out of order.
public struct PaymentStatusReport: Sendable, Hashable {
  public var endToEndID: String
  /// ISO 20022 ExternalPaymentTransactionStatus1Code: ACTC, ACSP, ACSC, RJCT, …
  public var statusCode: String
  /// ISO 20022 status reason code (e.g. AC04, AM04) for RJCT.
  public var reasonCode: String
  public var reasonText: String
  public var time: Instant

  public init(endToEndID: String, statusCode: String, reasonCode: String = "", reasonText: String = "", time: Instant) {
    self.endToEndID = endToEndID
    self.statusCode = statusCode
    self.reasonCode = reasonCode
    self.reasonText = reasonText
    self.time = time
  }
}

/// A batch of status reports from the bank's feed.
public struct StatusReportPage: Sendable, Hashable {
  public var reports: [PaymentStatusReport]
  public var nextCursor: String
  public var hasMore: Bool

  public init(reports: [PaymentStatusReport], nextCursor: String, hasMore: Bool) {
    self.reports = reports
    self.nextCursor = nextCursor
    self.hasMore = hasMore
  }
}

/// A bank statement file as received (camt.053, camt.054 or MT940 bytes).
public struct StatementFile: Sendable, Hashable {
  public enum Format: String, Sendable, Hashable { case camt053, camt054, mt940 }
  public var format: Format
  public var accountID: String
  public var content: [UInt8]

  public init(format: Format, accountID: String, content: [UInt8]) {
    self.format = format
    self.accountID = accountID
    self.content = content
  }
}

/// Payment initiation: submitting instructions and receiving what the bank says about them.
public protocol PaymentInitiationConnector: Sendable {
  /// Hands instructions to the bank in one message (a pain.001 carrying one credit transfer per
  /// submission, as bank-direct channels take them) and returns one acknowledgement per
  /// submission, in order. Safe to retry with the same message ids and EndToEndIds: the bank
  /// deduplicates and answers `duplicate: true`. `.rejected` refuses the whole message; a single
  /// transaction's rejection arrives later as a status report (RJCT).
  func submitPayments(_ submissions: [PaymentSubmission], deadline: ContinuousClock.Instant) async throws(BankError)
    -> [SubmissionAcknowledgement]

  /// Status reports after `cursor` (nil: from the first), at most `limit`. Reports may repeat
  /// and arrive in any order; consumers apply them idempotently.
  func fetchStatusReports(after cursor: String?, limit: Int, deadline: ContinuousClock.Instant) async throws(BankError)
    -> StatusReportPage
}

extension PaymentInitiationConnector {
  /// One instruction in a message of its own.
  public func submitPayment(_ submission: PaymentSubmission, deadline: ContinuousClock.Instant) async throws(BankError)
    -> SubmissionAcknowledgement
  {
    let acknowledgements = try await self.submitPayments([submission], deadline: deadline)
    guard acknowledgements.count == 1, let acknowledgement = acknowledgements.first else {
      throw BankError(.malformed, "the bank acknowledged \(acknowledgements.count) transactions of 1")
    }
    return acknowledgement
  }
}

/// Statements for reconciliation (camt.053/054, MT940 files).
public protocol StatementConnector: Sendable {
  /// Statement files for an account and booking date (ISO 8601).
  func fetchStatements(accountID: String, date: String, deadline: ContinuousClock.Instant) async throws(BankError)
    -> [StatementFile]
}

/// What the daemon needs of a bank today: account information and payment initiation.
/// (Statements join when reconciliation is built.)
public typealias BankConnector = AccountInformationConnector & PaymentInitiationConnector
