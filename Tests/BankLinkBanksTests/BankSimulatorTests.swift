import BankLinkBanks
import BankLinkCore
import BankLinkTestSupport
import Testing

@Suite("Bank simulator")
struct BankSimulatorTests {
  static let start = Instant(millisecondsSinceEpoch: 1_793_000_000_000)

  static func open(_ directory: String, seed: UInt64 = 7, days: Int = 5) throws -> BankSimulator {
    try BankSimulator(configuration: .init(directory: directory, seed: seed, historyDays: days, mapSizeMiB: 64)) { start }
  }

  static func all(_ simulator: BankSimulator, _ account: String) async throws -> [BookedTransaction] {
    var cursor: String?
    var entries: [BookedTransaction] = []
    while true {
      let page = try await simulator.fetchTransactions(
        accountID: account, after: cursor, limit: 250, deadline: .now.advanced(by: .seconds(5)))
      entries += page.transactions
      cursor = page.nextCursor
      if !page.hasMore { return entries }
    }
  }

  @Test("two banks or more, six accounts in CNY, USD, EUR and HKD, with thousands of seeded entries")
  func catalogue() async throws {
    try await withTemporaryDirectory { directory in
      let simulator = try Self.open(directory.path, days: 60)
      let accounts = try await simulator.listAccounts(deadline: .now.advanced(by: .seconds(5)))
      #expect(accounts.count >= 6)
      #expect(Set(accounts.map(\.bankBIC)).count >= 2)
      #expect(Set(accounts.map(\.currency.code)).isSuperset(of: ["CNY", "USD", "EUR", "HKD"]))
      var total = 0
      for account in accounts {
        let entries = try await Self.all(simulator, account.id)
        total += entries.count
        // The ledger is the opening balance plus every booked entry, and never negative.
        let balance = try await simulator.fetchBalance(accountID: account.id, deadline: .now.advanced(by: .seconds(5)))
        let opening = try #require(BankSimulator.openingBalance(of: account.id))
        #expect(balance.ledger.minorUnits == opening + entries.reduce(0) { $0 + $1.signedMinorUnits })
        #expect(balance.ledger.minorUnits > 0)
        #expect(entries.allSatisfy { $0.amount.currency == account.currency && $0.amount.minorUnits > 0 })
        #expect(zip(entries, entries.dropFirst()).allSatisfy { $0.bookingTime <= $1.bookingTime })
      }
      #expect(total > 5_000)
    }
  }

  @Test("the same seed gives the same history; another seed a different one")
  func deterministic() async throws {
    try await withTemporaryDirectory { directory in
      let a = try await Self.all(try Self.open(directory.appending("a"), seed: 42), "icbc-cny-001")
      let b = try await Self.all(try Self.open(directory.appending("b"), seed: 42), "icbc-cny-001")
      let c = try await Self.all(try Self.open(directory.appending("c"), seed: 43), "icbc-cny-001")
      #expect(a == b)
      #expect(a != c)
    }
  }

  @Test("state is durable: reopening keeps history and booked activity")
  func durable() async throws {
    try await withTemporaryDirectory { directory in
      let booked: [BookedTransaction]
      do {
        let simulator = try Self.open(directory.path)
        var entries: [BookedTransaction] = []
        for step in 1...20 { entries += try await simulator.advance(now: Self.start.adding(milliseconds: Int64(step) * 1000)) }
        booked = entries
      }
      #expect(!booked.isEmpty)
      let reopened = try Self.open(directory.path)
      let last = try #require(booked.last)
      let entries = try await Self.all(reopened, last.accountID)
      #expect(entries.contains(last))
    }
  }

  @Test("faults: outage, errors and latency beyond the deadline are typed errors")
  func faults() async throws {
    try await withTemporaryDirectory { directory in
      let simulator = try Self.open(directory.path)
      simulator.setFaults(.init(outage: true))
      let outage = await #expect(throws: BankError.self) {
        try await simulator.fetchBalance(accountID: "icbc-cny-001", deadline: .now.advanced(by: .seconds(1)))
      }
      #expect(outage?.code == .unavailable)

      simulator.setFaults(.init(errorRate: 1))
      let failure = await #expect(throws: BankError.self) { try await simulator.listAccounts(deadline: .now.advanced(by: .seconds(1))) }
      #expect(failure?.code == .unavailable)

      simulator.setFaults(.init(latencyMilliseconds: 5_000))
      let clock = ContinuousClock()
      let started = clock.now
      let slow = await #expect(throws: BankError.self) {
        try await simulator.fetchBalance(accountID: "icbc-cny-001", deadline: .now.advanced(by: .milliseconds(100)))
      }
      #expect(slow?.code == .timeout)
      #expect(clock.now - started < .seconds(4), "a timed-out call must return at its deadline, not after the latency")

      simulator.setFaults(.none)
      let unknown = await #expect(throws: BankError.self) {
        try await simulator.fetchBalance(accountID: "nope", deadline: .now.advanced(by: .seconds(1)))
      }
      #expect(unknown?.code == .notFound)
    }
  }
}
