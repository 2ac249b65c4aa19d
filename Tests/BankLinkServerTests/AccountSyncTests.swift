import BankLinkBanks
import BankLinkCore
import BankLinkServer
import BankLinkStore
import BankLinkTestSupport
import Logging
import Testing

@Suite("Account sync")
struct AccountSyncTests {
  static let logger = Logger(label: "sync-test")

  static func sync(_ directory: TemporaryDirectory, _ simulator: BankSimulator) throws -> (AccountCache, AccountSyncService) {
    let store = try Store(configuration: .init(directory: directory.appending("cache"), mapSizeMiB: 64))
    let cache = AccountCache(store: store)
    return (cache, AccountSyncService(connector: simulator, cache: cache, configuration: .init(), logger: logger, now: WallClock.now))
  }

  @Test("sync resumes after a restart without duplicating transactions")
  func resumesWithoutDuplicates() async throws {
    try await withTemporaryDirectory { directory in
      let simulator = try BankSimulator(
        configuration: .init(directory: directory.appending("bank"), historyDays: 3, mapSizeMiB: 64), clock: WallClock.now)
      let account = "icbc-cny-002"
      let firstCount: Int
      do {
        let (cache, sync) = try Self.sync(directory, simulator)
        try await sync.syncOnce()
        firstCount = try cache.transactionCount(accountID: account)
        #expect(firstCount > 0)
      }
      // "Restart": a new store and sync service over the same cache directory.
      let (cache, sync) = try Self.sync(directory, simulator)
      try await sync.syncOnce()
      #expect(try cache.transactionCount(accountID: account) == firstCount)

      let booked = try await simulator.book(
        accountID: account, amountMinorUnits: 500, direction: .debit, at: WallClock.now(),
        counterparty: Counterparty(name: "X", accountNumber: "1", bankBIC: "ICBKCNBJ", bankName: "ICBC"), description: "new")
      try await sync.syncOnce()
      #expect(try cache.transactionCount(accountID: account) == firstCount + 1)

      // A page delivered twice (e.g. the bank re-sends after a timeout) is stored once.
      let page = TransactionFeedPage(transactions: [booked], nextCursor: try #require(try cache.syncCursor(account)), hasMore: false)
      #expect(try await cache.apply(page, accountID: account, syncedAt: WallClock.now()).inserted == 0)
      #expect(try cache.transactionCount(accountID: account) == firstCount + 1)

      // The cached balance equals the bank's.
      let bank = try await simulator.fetchBalance(accountID: account, deadline: .now.advanced(by: .seconds(5)))
      #expect(try cache.balance(account)?.balance.ledger == bank.ledger)
    }
  }

  @Test("a bank outage fails the round but leaves the cache serving what it had")
  func outageKeepsCache() async throws {
    try await withTemporaryDirectory { directory in
      let simulator = try BankSimulator(
        configuration: .init(directory: directory.appending("bank"), historyDays: 2, mapSizeMiB: 64), clock: WallClock.now)
      let (cache, sync) = try Self.sync(directory, simulator)
      try await sync.syncOnce()
      let before = try #require(try cache.balance("db-eur-001"))
      simulator.setFaults(.init(outage: true))
      await #expect(throws: BankError.self) { try await sync.syncOnce() }
      #expect(sync.status.failedRounds == 1)
      #expect(try cache.balance("db-eur-001") == before)
      #expect(try cache.accounts().count == 6)
    }
  }
}
