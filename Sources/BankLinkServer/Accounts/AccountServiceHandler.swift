import BankLinkBanks
import BankLinkCore
import BankLinkProto
import Foundation
import GRPCCore
import Logging
import SwiftProtobuf

/// `banklink.v1.AccountService`: real-time queries served from the LMDB cache.
struct AccountServiceHandler: Banklink_V1_AccountService.SimpleServiceProtocol {
  let cache: AccountCache
  let connector: any AccountInformationConnector
  let logger: Logger
  let now: @Sendable () -> Instant

  func listAccounts(
    request: Banklink_V1_ListAccountsRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ListAccountsResponse {
    let pageSize = try pageSize(request.pageSize)
    let after =
      request.pageToken.isEmpty ? nil : try PageToken.key(request.pageToken, .accounts, maxBytes: Limits.maxAccountIDLength)
    if !request.currencyCode.isEmpty, CurrencyCode(request.currencyCode) == nil {
      throw APIError.invalidArgument("currency_code", "must be an ISO 4217 code such as CNY")
    }
    let accounts = try withStore { try self.cache.accounts() }.filter { account in
      (after.map { account.id > $0 } ?? true)
        && (request.bankBic.isEmpty || account.bankBIC == request.bankBic)
        && (request.currencyCode.isEmpty || account.currency.code == request.currencyCode)
    }
    var response = Banklink_V1_ListAccountsResponse()
    response.accounts = accounts.prefix(pageSize).map(Banklink_V1_Account.init)
    if accounts.count > pageSize, let last = response.accounts.last {
      response.nextPageToken = PageToken.encode(.accounts, after: last.accountID)
    }
    return response
  }

  func getBalance(request: Banklink_V1_GetBalanceRequest, context: ServerContext) async throws -> Banklink_V1_Balance {
    guard request.refresh else { return try self.cachedBalance(request) }
    let accountID = try validAccountID(request.accountID)
    guard let (account, cached, reserved) = try withStore({ try self.cache.accountAndBalance(accountID) }) else {
      throw APIError.notFound("account", accountID)
    }
    let deadline = self.refreshDeadline()
    let live: LedgerBalance
    do throws(BankError) {
      live = try await self.connector.fetchBalance(accountID: accountID, deadline: deadline)
      // What the bank said is checked like any synced balance: the account asked for, in its
      // currency, in range.
      if let problem = BankDataLimits.balanceProblem(live, accountID: accountID, currency: account.currency, now: self.now()) {
        self.logger.error("bad balance from the bank on refresh; not used", metadata: ["account": "\(accountID)", "problem": "\(problem)"])
        throw BankError(.malformed, problem)
      }
    } catch {
      self.logger.notice(
        "live balance refresh failed; answering from cache",
        metadata: ["account": "\(accountID)", "error": "\(error)"]
      )
      guard let cached else {
        throw APIError.unavailable(
          "the bank did not answer usefully (\(LogText.prefix(error.message))) and no balance of \(accountID) is cached yet",
          reason: "BANK_UNAVAILABLE"
        )
      }
      return try self.balance(account, cached.balance, reserved: reserved, source: .cache, stale: true)
    }
    do {
      try await self.cache.store(balance: live, syncedAt: self.now())
    } catch {
      // The live answer is still correct; the cache catches up on the next sync.
      self.logger.warning("could not cache a refreshed balance", metadata: ["account": "\(accountID)", "error": "\(error)"])
    }
    // Read again after the bank call: payments created meanwhile reserve funds, and the
    // sync may have stored a newer balance (and released what it includes) — answer that one.
    guard let (_, current, reservedNow) = try withStore({ try self.cache.accountAndBalance(accountID) }) else {
      throw APIError.notFound("account", accountID)
    }
    if let current, current.balance.asOf > live.asOf {
      return try self.balance(account, current.balance, reserved: reservedNow, source: .cache, stale: false)
    }
    return try self.balance(account, live, reserved: max(reserved, reservedNow), source: .bank, stale: false)
  }

  /// `GetBalance` without `refresh`: answered from the cache alone, synchronously (a read
  /// transaction), so the unary fast path (``UnaryFastPath``) serves it on the event loop too.
  func cachedBalance(_ request: Banklink_V1_GetBalanceRequest) throws -> Banklink_V1_Balance {
    let accountID = try validAccountID(request.accountID)
    guard let (account, cached, reserved) = try withStore({ try self.cache.accountAndBalance(accountID) }) else {
      throw APIError.notFound("account", accountID)
    }
    guard let cached else {
      throw APIError.unavailable(
        "no balance of \(accountID) has been synced from the bank yet; retry shortly or ask with refresh=true",
        reason: "NOT_SYNCED"
      )
    }
    let age = self.now().milliseconds(since: cached.balance.asOf)
    return try self.balance(
      account, cached.balance, reserved: reserved, source: .cache, stale: age > Limits.balanceStaleAfterMilliseconds)
  }

  func listTransactions(
    request: Banklink_V1_ListTransactionsRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ListTransactionsResponse {
    let accountID = try validAccountID(request.accountID)
    let pageSize = try pageSize(request.pageSize)
    let direction: UInt8
    switch request.direction {
    case .unspecified: direction = 0
    case .debit: direction = 1
    case .credit: direction = 2
    case .UNRECOGNIZED(let value):
      throw APIError.invalidArgument("direction", "unknown direction \(value)")
    }
    var start = Instant(millisecondsSinceEpoch: 0)
    if request.hasStartTime {
      guard let value = Instant(request.startTime) else { throw APIError.invalidArgument("start_time", "not a valid timestamp") }
      start = value
    }
    var end: Instant?
    if request.hasEndTime {
      guard let value = Instant(request.endTime) else { throw APIError.invalidArgument("end_time", "not a valid timestamp") }
      end = value
    }
    if let end, end <= start {
      throw APIError.invalidArgument("end_time", "must be after start_time")
    }
    guard try withStore({ try self.cache.account(accountID) }) != nil else {
      throw APIError.notFound("account", accountID)
    }

    var token: TransactionPageToken?
    if !request.pageToken.isEmpty {
      let decoded = try TransactionPageToken(encoded: request.pageToken)
      guard decoded.accountID == accountID, decoded.start == start, decoded.direction == direction,
        end == nil || end == decoded.end
      else {
        throw APIError.invalidArgument(
          "page_token", "was issued for a different query; repeat account_id, start_time, end_time and direction")
      }
      token = decoded
    }
    // The first page freezes an open end at "now": later pages keep to the same range.
    let frozenEnd = token?.end ?? end ?? self.now().adding(milliseconds: 1)

    let page = try withStore {
      try self.cache.transactions(
        accountID: accountID,
        start: start,
        end: frozenEnd,
        direction: direction == 0 ? nil : (direction == 1 ? .debit : .credit),
        after: token?.after,
        limit: pageSize
      )
    }
    var response = Banklink_V1_ListTransactionsResponse()
    response.transactions = page.transactions.map { Banklink_V1_Transaction($0.1) }
    if page.more, let last = page.transactions.last {
      response.nextPageToken = TransactionPageToken(
        accountID: accountID, start: start, end: frozenEnd, direction: direction, after: last.0
      ).encoded
    }
    return response
  }

  // MARK: Helpers

  private func balance(
    _ account: Account, _ balance: LedgerBalance, reserved: Int64, source: Banklink_V1_BalanceSource, stale: Bool
  ) throws -> Banklink_V1_Balance {
    var response = Banklink_V1_Balance()
    response.accountID = account.id
    response.ledger = Banklink_V1_Money(balance.ledger)
    // Available = ledger − what this daemon's payments in flight have reserved.
    let available = try withStore { try Reservations.available(ledger: balance.ledger.minorUnits, reserved: reserved) }
    response.available = Banklink_V1_Money(Money(minorUnits: available, currency: balance.ledger.currency))
    response.asOf = balance.asOf.timestamp
    response.staleness = Google_Protobuf_Duration(milliseconds: max(0, self.now().milliseconds(since: balance.asOf)))
    response.stale = stale
    response.source = source
    return response
  }

  /// How long a live refresh may take: the call's deadline less time to answer from the cache
  /// (a fifth of what is left, at least `refreshAnswerReserveMilliseconds`), or a fixed bound
  /// when the call has no deadline.
  private func refreshDeadline() -> ContinuousClock.Instant {
    let now = ContinuousClock.now
    let bound = now.advanced(by: .milliseconds(Limits.maxRefreshWaitMilliseconds))
    guard let callDeadline = RequestDeadline.current else { return bound }
    let reserve = max(.milliseconds(Limits.refreshAnswerReserveMilliseconds), (callDeadline - now) / 5)
    return min(bound, callDeadline.advanced(by: .zero - reserve))
  }
}

func validAccountID(_ id: String, field: String = "account_id") throws -> String {
  guard !id.isEmpty else { throw APIError.invalidArgument(field, "is required") }
  guard PaymentValidation.isAccountID(id) else { throw APIError.invalidArgument(field, PaymentValidation.accountIDRule) }
  return id
}

func pageSize(_ requested: Int32) throws -> Int {
  guard requested >= 0 else { throw APIError.invalidArgument("page_size", "must not be negative") }
  if requested == 0 { return Limits.defaultPageSize }
  return min(Int(requested), Limits.maxPageSize)
}
