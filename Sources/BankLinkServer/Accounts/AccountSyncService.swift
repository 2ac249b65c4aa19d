import BankLinkBanks
import BankLinkCore
import BankLinkStore
import Logging
import ServiceLifecycle
import Synchronization

/// Keeps the ``AccountCache`` in sync with the bank in the background: accounts, balances and
/// new booked transactions, incrementally from the stored feed cursor (so a restart resumes
/// where it stopped and re-delivered entries are not stored twice). A failing bank is retried
/// with exponential backoff while the cache keeps serving what it has.
public final class AccountSyncService: Service {
  public struct Configuration: Sendable {
    /// Pause between successful sync rounds.
    public var intervalMilliseconds: Int64
    /// Account id → the available balance (minor units) below which a `balance_threshold`
    /// alert is raised (`alerts.balance_floors`).
    public var balanceFloors: [String: Int64]

    public init(intervalMilliseconds: Int64 = 1_000, balanceFloors: [String: Int64] = [:]) {
      self.intervalMilliseconds = intervalMilliseconds
      self.balanceFloors = balanceFloors
    }
  }

  /// What the last rounds did, for health and tests.
  public struct Status: Sendable, Hashable {
    public var rounds = 0
    public var failedRounds = 0
    public var lastSuccess: Instant?
    public var lastError: String?
  }

  let connector: any AccountInformationConnector
  let cache: AccountCache
  let configuration: Configuration
  let logger: Logger
  let now: @Sendable () -> Instant
  /// Called once, after the first round in which every account and balance was synced: from
  /// then on payments can be reserved against every account (before it, an account whose
  /// balance was never synced answers UNAVAILABLE). The daemon reports it to systemd.
  let onFirstCompleteRound: (@Sendable (_ accounts: Int) -> Void)?
  private let state = Mutex(Status())

  public init(
    connector: any AccountInformationConnector,
    cache: AccountCache,
    configuration: Configuration,
    logger: Logger,
    now: @escaping @Sendable () -> Instant,
    onFirstCompleteRound: (@Sendable (_ accounts: Int) -> Void)? = nil
  ) {
    self.connector = connector
    self.cache = cache
    self.configuration = configuration
    self.logger = logger
    self.now = now
    self.onFirstCompleteRound = onFirstCompleteRound
  }

  public var status: Status { self.state.withLock { $0 } }

  /// Per-account failure counts and when each failing account may be tried again: one failing
  /// account backs off on its own while the others keep syncing every round.
  private let accountBackoff = Mutex([String: (failures: Int, retryAt: ContinuousClock.Instant)]())

  public func run() async throws {
    let backoff = RetryBackoff(baseMilliseconds: self.configuration.intervalMilliseconds)
    var failures = 0
    var availability = BankAvailability(unavailableSince: try? self.cache.store.withReadTransaction { try BankAvailability.stored(in: $0) })
    while !Task.isCancelled && !Task.isShuttingDownGracefully {
      let delay: Int64
      do {
        try await self.syncOnce()
        failures = 0
        delay = self.configuration.intervalMilliseconds
        await self.observe(&availability, reachable: true)
        await self.checkFloorsLogging()
      } catch {
        // One account failing means the bank answered; only a failed account list counts
        // against the bank's availability.
        await self.observe(&availability, reachable: error is AccountSyncError)
        failures += 1
        delay = backoff.delay(afterFailures: failures)
        self.logger.warning(
          "account sync failed; serving from cache",
          metadata: ["error": "\(error)", "consecutive_failures": "\(failures)", "retry_in_ms": "\(delay)"]
        )
      }
      try? await cancelWhenGracefulShutdown {
        try await Task.sleep(for: .milliseconds(delay))
      }
    }
  }

  /// One full round: the account list, then each account's new transactions and balance. Each
  /// account is synced on its own: a failing one (bank error, bad data) is recorded, backs off
  /// and does not stop the accounts after it. Throws when the account list itself fails, or,
  /// after every account was tried, the first account failure (the round counts as failed).
  public func syncOnce() async throws {
    do {
      let accounts = try await self.connector.listAccounts(deadline: Self.deadline())
      let listed = Array(accounts.prefix(BankDataLimits.maxAccounts))
      if accounts.count > listed.count {
        self.logger.error(
          "the bank listed more accounts than the daemon takes; the rest are ignored",
          metadata: ["listed": "\(accounts.count)", "limit": "\(BankDataLimits.maxAccounts)"])
      }
      self.log(try await self.cache.store(accounts: listed, at: self.now()))
      var firstFailure: (any Error)?
      for account in listed where BankDataLimits.accountProblem(account) == nil {
        guard self.isDue(account.id) else { continue }
        do {
          try await self.syncTransactions(account.id)
          let balance = try await self.connector.fetchBalance(accountID: account.id, deadline: Self.deadline())
          try await self.cache.store(balance: balance, syncedAt: self.now())
          self.accountBackoff.withLock { _ = $0.removeValue(forKey: account.id) }
        } catch {
          firstFailure = firstFailure ?? AccountSyncError(accountID: account.id, underlying: error)
          self.recordFailure(account.id, error)
          ConnectorErrors.count(error, operation: "sync_account")
        }
      }
      if let firstFailure { throw firstFailure }
      let first = self.state.withLock {
        let first = $0.lastSuccess == nil
        $0.rounds += 1
        $0.lastSuccess = self.now()
        $0.lastError = nil
        return first
      }
      if first { self.onFirstCompleteRound?(listed.count) }
    } catch {
      self.state.withLock {
        $0.rounds += 1
        $0.failedRounds += 1
        $0.lastError = "\(error)"
      }
      // Per-account failures were counted as they happened; this is the account list's.
      if !(error is AccountSyncError) { ConnectorErrors.count(error, operation: "sync_accounts") }
      throw error
    }
  }

  /// Counts the round and, on an edge of the hysteresis, raises the episode's alert: critical
  /// once the bank was unreachable for ``Limits/bankUnavailableAfterFailedRounds`` rounds in a
  /// row, info once it answered again for ``Limits/bankAvailableAfterRounds``. The episode's
  /// start is stored with its alert, so a restart during an outage does not raise it again.
  private func observe(_ availability: inout BankAvailability, reachable: Bool) async {
    guard let edge = availability.record(reachable: reachable, at: self.now()) else { return }
    let now = self.now()
    do {
      try await self.cache.store.write { txn in
        switch edge {
        case .becameUnavailable(let since):
          try txn.put(BankAvailability.key, BankAvailability.encode(since), in: .meta)
          try AlertLog.raise(
            &txn, at: now, severity: .critical, kind: .bankUnavailable,
            message: "the bank has not answered for \(Limits.bankUnavailableAfterFailedRounds) sync rounds in a row (since \(since.isoTimestamp)); balances are served from the cache",
            details: ["since": since.isoTimestamp])
        case .becameAvailable(let since):
          _ = try txn.delete(BankAvailability.key, in: .meta)
          try AlertLog.raise(
            &txn, at: now, severity: .info, kind: .bankUnavailable,
            message: "the bank answers again; it was unreachable from \(since.isoTimestamp) for \((now.millisecondsSinceEpoch - since.millisecondsSinceEpoch) / 1000) s",
            details: ["since": since.isoTimestamp, "recovered": "true"])
        }
      }
    } catch {
      self.logger.error("could not record the bank's availability alert", metadata: ["error": "\(error)"])
      availability.undo(edge)
    }
  }

  private func checkFloorsLogging() async {
    do {
      try await self.checkBalanceFloors()
    } catch {
      self.logger.error("could not check the balance floors", metadata: ["error": "\(error)"])
    }
  }

  /// Compares each account with a floor against its available balance (ledger − reserved)
  /// and raises an alert on each crossing: `balance_threshold` (warning) when it falls below,
  /// and (info) once it is back at ``Limits/balanceFloorRecoveryPercent`` above — one alert per
  /// episode, not one per round, however long it stays below. The breach is stored with its
  /// alert, so a restart does not raise it again. Runs after every sync round; reservations made
  /// between rounds are seen at the next one.
  public func checkBalanceFloors() async throws {
    let now = self.now()
    for (accountID, floor) in self.configuration.balanceFloors.sorted(by: { $0.key < $1.key }) {
      guard let (account, cached, reserved) = try self.cache.accountAndBalance(accountID), let cached else { continue }
      let available = cached.balance.ledger.minorUnits - reserved
      let key = Array("floor_breach/\(accountID)".utf8)
      let breached = try self.cache.store.withReadTransaction { try $0.get(key, in: .meta) != nil }
      let recovery = floor + floor / 100 * Int64(Limits.balanceFloorRecoveryPercent)
      let currency = account.currency
      let shown = (available: Money(minorUnits: available, currency: currency).description, floor: Money(minorUnits: floor, currency: currency).description)
      if !breached && available < floor {
        try await self.cache.store.write { txn in
          guard try txn.get(key, in: .meta) == nil else { return }
          try txn.put(key, [1], in: .meta)
          try AlertLog.raise(
            &txn, at: now, severity: .warning, kind: .balanceThreshold, accountID: accountID,
            message: "available \(shown.available) on \(accountID) is below its floor of \(shown.floor)",
            details: ["available_minor": String(available), "floor_minor": String(floor)])
        }
      } else if breached && available >= recovery {
        try await self.cache.store.write { txn in
          guard try txn.delete(key, in: .meta) else { return }
          try AlertLog.raise(
            &txn, at: now, severity: .info, kind: .balanceThreshold, accountID: accountID,
            message: "available \(shown.available) on \(accountID) is back above its floor of \(shown.floor)",
            details: ["available_minor": String(available), "floor_minor": String(floor), "recovered": "true"])
        }
      }
    }
  }

  private func isDue(_ accountID: String) -> Bool {
    self.accountBackoff.withLock { entries in
      guard let entry = entries[accountID] else { return true }
      return entry.retryAt <= .now
    }
  }

  private func recordFailure(_ accountID: String, _ error: any Error) {
    let backoff = RetryBackoff(baseMilliseconds: self.configuration.intervalMilliseconds)
    let (failures, delay) = self.accountBackoff.withLock { entries in
      let failures = (entries[accountID]?.failures ?? 0) + 1
      let delay = backoff.delay(afterFailures: failures)
      entries[accountID] = (failures, .now.advanced(by: .milliseconds(delay)))
      return (failures, delay)
    }
    self.logger.warning(
      "account sync failed for one account; the others go on",
      metadata: ["account": "\(accountID)", "error": "\(error)", "consecutive_failures": "\(failures)", "retry_in_ms": "\(delay)"])
  }

  private func log(_ anomalies: [BankAnomaly]) {
    for anomaly in anomalies {
      self.logger.error("bad data from the bank, recorded and skipped", metadata: ["subject": "\(LogText.prefix(anomaly.subject))", "anomaly": "\(anomaly.description)"])
    }
  }

  private func syncTransactions(_ accountID: String) async throws {
    var cursor = try self.cache.syncCursor(accountID)
    // Bounded per round so one account with a long backlog cannot starve the others.
    for _ in 0..<Limits.maxSyncPagesPerRound {
      let page = try await self.connector.fetchTransactions(
        accountID: accountID,
        after: cursor,
        limit: Limits.syncBatchSize,
        deadline: Self.deadline()
      )
      guard page.transactions.count <= Limits.syncBatchSize else {
        throw BankError(.malformed, "the bank returned \(page.transactions.count) transactions for a page of \(Limits.syncBatchSize)")
      }
      self.log(try await self.cache.apply(page, accountID: accountID, syncedAt: self.now()).anomalies)
      if page.nextCursor == cursor && page.transactions.isEmpty { return }
      cursor = page.nextCursor
      if !page.hasMore { return }
    }
  }

  static func deadline() -> ContinuousClock.Instant {
    .now.advanced(by: .milliseconds(Limits.syncCallTimeoutMilliseconds))
  }
}

/// One account's sync failed (the others went on).
public struct AccountSyncError: Error, CustomStringConvertible {
  public var accountID: String
  public var underlying: any Error

  public var description: String { "account \(self.accountID): \(self.underlying)" }
}

/// Exponential backoff shared by the background services that talk to the bank: the base
/// interval doubled per consecutive failure, capped at ``Limits/maxSyncBackoffMilliseconds``.
struct RetryBackoff {
  var baseMilliseconds: Int64

  func delay(afterFailures failures: Int) -> Int64 {
    guard failures > 0 else { return self.baseMilliseconds }
    let shifted = self.baseMilliseconds << Int64(min(failures, 10))
    return min(max(shifted, self.baseMilliseconds), Limits.maxSyncBackoffMilliseconds)
  }
}

/// The bank's availability as the sync rounds see it, with hysteresis: one episode, one alert at
/// each end.
struct BankAvailability {
  enum Edge: Sendable {
    case becameUnavailable(since: Instant)
    case becameAvailable(since: Instant)
  }

  static let key = Array("bank_unavailable_since".utf8)

  /// When the current outage began (its first failed round); nil while the bank is available.
  var unavailableSince: Instant?
  private var failedInARow = 0
  private var firstFailure: Instant?
  private var answeredInARow = 0

  init(unavailableSince: Instant?) {
    self.unavailableSince = unavailableSince
  }

  mutating func record(reachable: Bool, at now: Instant) -> Edge? {
    if reachable {
      self.failedInARow = 0
      self.firstFailure = nil
      guard let since = self.unavailableSince else { return nil }
      self.answeredInARow += 1
      guard self.answeredInARow >= Limits.bankAvailableAfterRounds else { return nil }
      self.unavailableSince = nil
      self.answeredInARow = 0
      return .becameAvailable(since: since)
    }
    self.answeredInARow = 0
    self.failedInARow += 1
    if self.firstFailure == nil { self.firstFailure = now }
    guard self.unavailableSince == nil, self.failedInARow >= Limits.bankUnavailableAfterFailedRounds else { return nil }
    let since = self.firstFailure ?? now
    self.unavailableSince = since
    return .becameUnavailable(since: since)
  }

  /// The edge could not be recorded: back to before it, so the next round tries again.
  mutating func undo(_ edge: Edge) {
    switch edge {
    case .becameUnavailable: self.unavailableSince = nil
    case .becameAvailable(let since):
      self.unavailableSince = since
      self.answeredInARow = Limits.bankAvailableAfterRounds - 1
    }
  }

  static func encode(_ since: Instant) -> [UInt8] {
    var writer = RecordWriter(capacity: 8)
    writer.write(since.millisecondsSinceEpoch)
    return writer.bytes
  }

  static func stored(in txn: some ReadableTransaction) throws -> Instant? {
    guard let bytes = try txn.get(Self.key, in: .meta) else { return nil }
    var reader = RecordReader(bytes)
    return Instant(millisecondsSinceEpoch: try reader.readInt64())
  }
}
