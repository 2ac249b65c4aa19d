import BankLinkCore
import BankLinkStore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The embedded bank simulator: the default connector, running inside banklinkd.
///
/// It simulates three banks holding six enterprise accounts in CNY, USD, HKD and EUR with a
/// seeded, deterministic history (thousands of booked entries with realistic counterparties and
/// references), balances that keep moving (``advance(now:)``, driven by ``SimulatorActivity``),
/// and configurable latency and faults. Like a real bank it keeps its own durable state, in an
/// LMDB environment of its own, separate from the daemon's cache.
public final class BankSimulator: AccountInformationConnector {
  public struct Faults: Sendable, Hashable {
    /// Added to every call.
    public var latencyMilliseconds: Int
    /// Uniform extra latency in `0...jitterMilliseconds`.
    public var jitterMilliseconds: Int
    /// Share of calls (0...1) failing with `unavailable`.
    public var errorRate: Double
    /// Share of calls (0...1) that never answer (they fail with `timeout` at their deadline).
    public var timeoutRate: Double
    /// Every call fails with `unavailable` while true.
    public var outage: Bool
    /// Share of submitted payments (0...1) the bank rejects (RJCT) instead of settling.
    public var rejectionRate: Double
    /// Share of status reports (0...1) the bank sends twice.
    public var duplicateReportRate: Double
    /// Send the settlement report (ACSC) before the acceptance report (ACTC).
    public var reorderReports: Bool
    /// The bank refuses, as a whole and without recording it, any payment message carrying one
    /// of these EndToEndIds (as a real bank refuses a file that fails its validation).
    public var refusedEndToEndIDs: Set<String>
    /// Balance and transaction calls for these accounts fail with `unavailable` (one account's
    /// line to the bank is down while the others work).
    public var failingAccountIDs: Set<String>
    /// A message carrying a payment the bank already holds is refused as a whole ("DU01
    /// duplicate message"), as some banks do, instead of being acknowledged as a duplicate.
    public var refuseDuplicateMessages: Bool

    public init(
      latencyMilliseconds: Int = 0, jitterMilliseconds: Int = 0, errorRate: Double = 0, timeoutRate: Double = 0,
      outage: Bool = false, rejectionRate: Double = 0, duplicateReportRate: Double = 0, reorderReports: Bool = false,
      refusedEndToEndIDs: Set<String> = [], failingAccountIDs: Set<String> = [], refuseDuplicateMessages: Bool = false
    ) {
      self.refuseDuplicateMessages = refuseDuplicateMessages
      self.refusedEndToEndIDs = refusedEndToEndIDs
      self.failingAccountIDs = failingAccountIDs
      self.latencyMilliseconds = latencyMilliseconds
      self.jitterMilliseconds = jitterMilliseconds
      self.errorRate = errorRate
      self.timeoutRate = timeoutRate
      self.outage = outage
      self.rejectionRate = rejectionRate
      self.duplicateReportRate = duplicateReportRate
      self.reorderReports = reorderReports
    }

    public static let none = Faults()
  }

  public struct Configuration: Sendable {
    /// Directory of the simulator's own LMDB environment.
    public var directory: String
    /// Seed of the generated history and activity.
    public var seed: UInt64
    /// Days of history generated on first start.
    public var historyDays: Int
    public var faults: Faults
    public var mapSizeMiB: Int
    /// How long after receipt the bank settles (or rejects) a submitted payment.
    public var settlementDelayMilliseconds: Int64
    /// CPUs for the writer thread of the simulator's environment (the daemon passes
    /// `storage.writer_cpus`: the simulated bank's synced commits stay off the event loops too).
    public var writerCPUs: [Int]

    public init(
      directory: String, seed: UInt64 = 20_261_127, historyDays: Int = 60, faults: Faults = .none, mapSizeMiB: Int = 512,
      settlementDelayMilliseconds: Int64 = 2_000, writerCPUs: [Int] = []
    ) {
      self.directory = directory
      self.seed = seed
      self.historyDays = historyDays
      self.faults = faults
      self.mapSizeMiB = mapSizeMiB
      self.settlementDelayMilliseconds = settlementDelayMilliseconds
      self.writerCPUs = writerCPUs
    }
  }

  static let accountsDB = Database("sim_accounts")
  static let ledgerDB = Database("sim_ledger")
  static let entriesDB = Database("sim_entries")
  static let schemaVersion: UInt32 = 1
  static let seededKey = Array("seeded_at".utf8)

  let store: Store
  private let faults: Mutex<Faults>
  let random: Mutex<SplitMix64>
  /// Payment messages received since start (tests: how the submitter batches).
  let messages = Mutex(0)
  let clock: @Sendable () -> Instant
  public let configuration: Configuration

  /// Opens the simulator's state, generating the seeded history on first start. The history
  /// ends at the clock's time of that first start; later starts reuse the stored state.
  public init(configuration: Configuration, clock: @escaping @Sendable () -> Instant) throws {
    self.configuration = configuration
    self.clock = clock
    let now = clock()
    self.store = try Store(
      configuration: .init(
        directory: configuration.directory,
        mapSizeMiB: configuration.mapSizeMiB,
        schemaVersion: BankSimulator.schemaVersion,
        databases: [
          BankSimulator.accountsDB, BankSimulator.ledgerDB, BankSimulator.entriesDB, BankSimulator.submissionsDB,
          BankSimulator.messageIDsDB, BankSimulator.pendingDB, BankSimulator.reportsDB,
        ],
        writerCPUs: configuration.writerCPUs
      )
    )
    self.faults = Mutex(configuration.faults)
    self.random = Mutex(SplitMix64(seed: configuration.seed ^ UInt64(bitPattern: now.millisecondsSinceEpoch)))
    let seeded = try self.store.withReadTransaction { txn in try txn.get(BankSimulator.seededKey, in: .meta) != nil }
    if !seeded {
      try self.seed(historyEnd: now)
    }
  }

  /// The accounts the simulated banks hold (the same on every start).
  public static var catalogueAccounts: [Account] { SimulatorCatalogue.accounts.map(\.account) }

  /// The opening ledger balance (minor units) of a simulated account at the start of its
  /// history, or nil for an account the simulator does not hold.
  public static func openingBalance(of accountID: String) -> Int64? {
    SimulatorCatalogue.accounts.first { $0.account.id == accountID }?.openingMinorUnits
  }

  // MARK: Fault injection

  public var currentFaults: Faults { self.faults.withLock { $0 } }

  /// Changes latency and faults at run time (tests, demos).
  public func setFaults(_ faults: Faults) {
    self.faults.withLock { $0 = faults }
  }

  /// Applies latency and faults, then runs `body` (a read or write of the bank's own state).
  func perform<Result>(
    deadline: ContinuousClock.Instant,
    _ body: () async throws -> Result
  ) async throws(BankError) -> Result {
    let faults = self.faults.withLock { $0 }
    if faults.outage { throw BankError(.unavailable, "simulated outage") }
    let (roll, jitter) = self.random.withLock { random in
      (Double.random(in: 0..<1, using: &random), faults.jitterMilliseconds > 0 ? Int.random(in: 0...faults.jitterMilliseconds, using: &random) : 0)
    }
    if roll < faults.errorRate { throw BankError(.unavailable, "simulated failure") }
    if roll < faults.errorRate + faults.timeoutRate {
      try? await Task.sleep(until: deadline, clock: .continuous)
      throw BankError(.timeout, "simulated bank did not answer before the deadline")
    }
    let latency = Duration.milliseconds(faults.latencyMilliseconds + jitter)
    if latency > .zero {
      if ContinuousClock.now.advanced(by: latency) > deadline {
        try? await Task.sleep(until: deadline, clock: .continuous)
        throw BankError(.timeout, "simulated bank latency exceeds the deadline")
      }
      try? await Task.sleep(for: latency)
    }
    if Task.isCancelled { throw BankError(.timeout, "call cancelled") }
    do {
      return try await body()
    } catch let error as BankError {
      throw error
    } catch {
      throw BankError(.unavailable, "simulator storage failed: \(error)")
    }
  }

  // MARK: AccountInformationConnector

  public func listAccounts(deadline: ContinuousClock.Instant) async throws(BankError) -> [Account] {
    try await self.perform(deadline: deadline) { try self.storedAccounts() }
  }

  public func fetchBalance(accountID: String, deadline: ContinuousClock.Instant) async throws(BankError) -> LedgerBalance {
    if self.currentFaults.failingAccountIDs.contains(accountID) {
      throw BankError(.unavailable, "simulated failure of account \(accountID)")
    }
    let balance = try await self.perform(deadline: deadline) { try self.ledger(accountID) }
    guard let balance else { throw BankError(.notFound, "no account \(accountID) at the simulated bank") }
    return balance
  }

  public func fetchTransactions(
    accountID: String,
    after cursor: String?,
    limit: Int,
    deadline: ContinuousClock.Instant
  ) async throws(BankError) -> TransactionFeedPage {
    if self.currentFaults.failingAccountIDs.contains(accountID) {
      throw BankError(.unavailable, "simulated failure of account \(accountID)")
    }
    let start: UInt64
    if let cursor {
      guard let value = UInt64(cursor) else { throw BankError(.rejected, "cursor '\(cursor)' is not one the bank issued") }
      start = value
    } else {
      start = 0
    }
    let limit = max(1, limit)
    let page = try await self.perform(deadline: deadline) { () throws -> TransactionFeedPage? in
      try self.store.withReadTransaction { txn -> TransactionFeedPage? in
        guard try txn.get(Array(accountID.utf8), in: BankSimulator.accountsDB) != nil else { return nil }
        let prefix = BankSimulator.entryPrefix(accountID)
        var transactions: [BookedTransaction] = []
        var next = start
        var hasMore = false
        try txn.scan(BankSimulator.entriesDB, from: BankSimulator.entryKey(accountID, start)) { key, value in
          guard key.starts(with: prefix) else { return false }
          if transactions.count == limit {
            hasMore = true
            return false
          }
          transactions.append(try BookedTransaction(record: value))
          next = BankSimulator.sequence(of: key) + 1
          return true
        }
        return TransactionFeedPage(transactions: transactions, nextCursor: String(next), hasMore: hasMore)
      }
    }
    guard let page else { throw BankError(.notFound, "no account \(accountID) at the simulated bank") }
    return page
  }

  // MARK: Activity

  /// Books new entries as a real bank would during the day: for each account, with some
  /// probability, one or two incoming or outgoing entries at `now`. Returns what was booked.
  @discardableResult
  public func advance(now: Instant) async throws -> [BookedTransaction] {
    var decisions: [(SimulatorCatalogue.SimulatedAccount, Int, UInt64)] = []
    self.random.withLock { random in
      for simulated in SimulatorCatalogue.accounts {
        let count = Int.random(in: 0...100, using: &random) < 35 ? Int.random(in: 1...2, using: &random) : 0
        decisions.append((simulated, count, random.next()))
      }
    }
    let chosen = decisions
    let booked = try await self.store.write { txn in
      var booked: [BookedTransaction] = []
      for (simulated, count, seed) in chosen where count > 0 {
        var random = SplitMix64(seed: seed)
        booked += try BankSimulator.book(simulated, count: count, at: [Instant](repeating: now, count: count), random: &random, txn: &txn)
      }
      return booked
    }
    return booked + (try await self.processSubmissions(now: now))
  }

  /// Books one specific entry (tests: a known transaction to look for).
  @discardableResult
  public func book(
    accountID: String,
    amountMinorUnits: Int64,
    direction: Direction,
    at time: Instant,
    counterparty: Counterparty,
    description: String
  ) async throws -> BookedTransaction {
    try await self.store.write { txn in
      guard let simulated = SimulatorCatalogue.accounts.first(where: { $0.account.id == accountID }) else {
        throw BankError(.notFound, "no account \(accountID)")
      }
      let state = try BankSimulator.ledgerState(accountID, txn: txn)
      let entry = BookedTransaction(
        id: "\(accountID)-\(state.nextSequence)", accountID: accountID,
        amount: Money(minorUnits: amountMinorUnits, currency: simulated.account.currency), direction: direction,
        bookingTime: time, valueDate: time.isoDate, counterparty: counterparty, endToEndID: "",
        bankReference: BankSimulator.reference(simulated, time, state.nextSequence), description: description
      )
      try BankSimulator.append(entry, state: state, txn: &txn)
      return entry
    }
  }

  // MARK: Storage

  struct LedgerState {
    var minorUnits: Int64
    var asOf: Instant
    var nextSequence: UInt64
  }

  static func entryPrefix(_ accountID: String) -> [UInt8] { Array(accountID.utf8) + [0] }

  static func entryKey(_ accountID: String, _ sequence: UInt64) -> [UInt8] {
    var writer = RecordWriter(capacity: accountID.utf8.count + 9)
    writer.writeRaw(entryPrefix(accountID))
    writer.write(sequence)
    return writer.bytes
  }

  static func sequence(of key: [UInt8]) -> UInt64 {
    key.suffix(8).reduce(0) { ($0 << 8) | UInt64($1) }
  }

  static func ledgerState(_ accountID: String, txn: WriteTransaction) throws -> LedgerState {
    guard let bytes = try txn.get(Array(accountID.utf8), in: ledgerDB) else {
      throw BankError(.notFound, "no ledger for \(accountID)")
    }
    var reader = RecordReader(bytes)
    let state = LedgerState(
      minorUnits: try reader.readInt64(),
      asOf: Instant(millisecondsSinceEpoch: try reader.readInt64()),
      nextSequence: try reader.readUInt64()
    )
    try reader.finish()
    return state
  }

  static func writeLedger(_ accountID: String, _ state: LedgerState, txn: inout WriteTransaction) throws {
    var writer = RecordWriter(capacity: 24)
    writer.write(state.minorUnits)
    writer.write(state.asOf.millisecondsSinceEpoch)
    writer.write(state.nextSequence)
    try txn.put(Array(accountID.utf8), writer.bytes, in: ledgerDB)
  }

  static func append(_ entry: BookedTransaction, state: LedgerState, txn: inout WriteTransaction) throws {
    var state = state
    try txn.put(entryKey(entry.accountID, state.nextSequence), entry.record, in: entriesDB)
    state.minorUnits += entry.signedMinorUnits
    state.asOf = max(state.asOf, entry.bookingTime)
    state.nextSequence += 1
    try writeLedger(entry.accountID, state, txn: &txn)
  }

  private func storedAccounts() throws -> [Account] {
    try self.store.withReadTransaction { txn in
      var accounts: [Account] = []
      try txn.scan(BankSimulator.accountsDB) { _, value in
        accounts.append(try Account(record: value))
        return true
      }
      return accounts
    }
  }

  private func ledger(_ accountID: String) throws -> LedgerBalance? {
    try self.store.withReadTransaction { txn -> LedgerBalance? in
      guard let accountBytes = try txn.get(Array(accountID.utf8), in: BankSimulator.accountsDB),
        let ledgerBytes = try txn.get(Array(accountID.utf8), in: BankSimulator.ledgerDB)
      else { return nil }
      let account = try Account(record: accountBytes)
      var reader = RecordReader(ledgerBytes)
      let minorUnits = try reader.readInt64()
      let lastBooking = Instant(millisecondsSinceEpoch: try reader.readInt64())
      // A bank states its balance as of the moment it answers; never earlier than an entry the
      // balance includes (entries can be booked ahead of the clock, e.g. by tests).
      return LedgerBalance(
        accountID: accountID, ledger: Money(minorUnits: minorUnits, currency: account.currency),
        asOf: max(self.clock(), lastBooking))
    }
  }

  /// Writes the catalogue and a deterministic history of `historyDays` ending at `historyEnd`.
  private func seed(historyEnd: Instant) throws {
    let days = Int64(max(0, self.configuration.historyDays))
    let historyStart = historyEnd.adding(milliseconds: -days * 86_400_000)
    try self.store.withWriteTransaction { txn in
      for simulated in SimulatorCatalogue.accounts {
        let id = simulated.account.id
        try txn.put(Array(id.utf8), simulated.account.record, in: BankSimulator.accountsDB)
        try BankSimulator.writeLedger(
          id, LedgerState(minorUnits: simulated.openingMinorUnits, asOf: historyStart, nextSequence: 0), txn: &txn)
        var random = SplitMix64(seed: self.configuration.seed ^ SplitMix64.hash(id))
        for day in 0..<days {
          let dayStart = historyStart.adding(milliseconds: day * 86_400_000)
          let count = Int.random(in: simulated.entriesPerDay / 2...simulated.entriesPerDay * 3 / 2, using: &random)
          // Banking hours 08:00-18:00 of the simulated day, in booking order.
          let times = (0..<count).map { _ in
            dayStart.adding(milliseconds: 8 * 3_600_000 + Int64.random(in: 0..<36_000_000, using: &random))
          }.sorted()
          try BankSimulator.book(simulated, count: count, at: times, random: &random, txn: &txn)
        }
      }
      var writer = RecordWriter()
      writer.write(historyEnd.millisecondsSinceEpoch)
      try txn.put(BankSimulator.seededKey, writer.bytes, in: .meta)
    }
  }

  @discardableResult
  static func book(
    _ simulated: SimulatorCatalogue.SimulatedAccount,
    count: Int,
    at times: [Instant],
    random: inout SplitMix64,
    txn: inout WriteTransaction
  ) throws -> [BookedTransaction] {
    let account = simulated.account
    let pool = SimulatorCatalogue.counterparties[account.currency.code] ?? SimulatorCatalogue.counterparties["CNY"]!
    var booked: [BookedTransaction] = []
    for index in 0..<count {
      let state = try ledgerState(account.id, txn: txn)
      // Log-uniform amounts: many small entries, a few large ones.
      let low = Double(simulated.amountRange.lowerBound)
      let high = Double(simulated.amountRange.upperBound)
      var amount = Int64(low * pow(high / low, Double.random(in: 0...1, using: &random)))
      // Keep the account solvent: outgoing entries only while the balance covers them twice.
      let wantsDebit = Int.random(in: 0..<100, using: &random) < 48
      let direction: Direction = wantsDebit && state.minorUnits > amount * 2 ? .debit : .credit
      amount = max(1, amount)
      let counterparty = pool[Int.random(in: 0..<pool.count, using: &random)]
      let narratives = direction == .credit ? SimulatorCatalogue.creditNarratives : SimulatorCatalogue.debitNarratives
      let narrative = narratives[Int.random(in: 0..<narratives.count, using: &random)]
      let invoice = "INV-\(times[index].isoDate.prefix(4))-\(String(random.next() % 1_000_000))"
      let endToEndID = direction == .debit ? "E2E\(String(random.next() % 10_000_000_000, radix: 16).uppercased())" : ""
      let entry = BookedTransaction(
        id: "\(account.id)-\(state.nextSequence)", accountID: account.id,
        amount: Money(minorUnits: amount, currency: account.currency), direction: direction,
        bookingTime: max(times[index], state.asOf), valueDate: times[index].isoDate, counterparty: counterparty,
        endToEndID: endToEndID, bankReference: reference(simulated, times[index], state.nextSequence),
        description: "\(narrative) \(invoice)"
      )
      try append(entry, state: state, txn: &txn)
      booked.append(entry)
    }
    return booked
  }

  static func reference(_ simulated: SimulatorCatalogue.SimulatedAccount, _ time: Instant, _ sequence: UInt64) -> String {
    "\(simulated.referencePrefix)\(time.isoDate.replacingDashes)\(String(sequence + 1_000_000))"
  }
}

extension String {
  fileprivate var replacingDashes: String { String(self.filter { $0 != "-" }) }
}

