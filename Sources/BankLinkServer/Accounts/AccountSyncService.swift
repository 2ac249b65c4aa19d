import BankLinkBanks
import BankLinkCore
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

    public init(intervalMilliseconds: Int64 = 1_000) {
      self.intervalMilliseconds = intervalMilliseconds
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
  private let state = Mutex(Status())

  public init(
    connector: any AccountInformationConnector,
    cache: AccountCache,
    configuration: Configuration,
    logger: Logger,
    now: @escaping @Sendable () -> Instant
  ) {
    self.connector = connector
    self.cache = cache
    self.configuration = configuration
    self.logger = logger
    self.now = now
  }

  public var status: Status { self.state.withLock { $0 } }

  public func run() async throws {
    var failures = 0
    while !Task.isCancelled && !Task.isShuttingDownGracefully {
      let delay: Int64
      do {
        try await self.syncOnce()
        failures = 0
        delay = self.configuration.intervalMilliseconds
      } catch {
        failures += 1
        let backoff = self.configuration.intervalMilliseconds << min(failures, 10)
        delay = min(backoff, Limits.maxSyncBackoffMilliseconds)
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

  /// One full round: the account list, then each account's new transactions and balance.
  /// Throws the first bank or store error; what was stored before it stays stored.
  public func syncOnce() async throws {
    do {
      let accounts = try await self.connector.listAccounts(deadline: Self.deadline())
      try await self.cache.store(accounts: accounts)
      for account in accounts {
        try await self.syncTransactions(account.id)
        let balance = try await self.connector.fetchBalance(accountID: account.id, deadline: Self.deadline())
        try await self.cache.store(balance: balance, syncedAt: self.now())
      }
      self.state.withLock {
        $0.rounds += 1
        $0.lastSuccess = self.now()
        $0.lastError = nil
      }
    } catch {
      self.state.withLock {
        $0.rounds += 1
        $0.failedRounds += 1
        $0.lastError = "\(error)"
      }
      throw error
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
      try await self.cache.apply(page, accountID: accountID, syncedAt: self.now())
      cursor = page.nextCursor
      if !page.hasMore { return }
    }
  }

  static func deadline() -> ContinuousClock.Instant {
    .now.advanced(by: .milliseconds(Limits.syncCallTimeoutMilliseconds))
  }
}
