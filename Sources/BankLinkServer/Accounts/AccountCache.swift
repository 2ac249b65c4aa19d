import BankLinkBanks
import BankLinkCore
import BankLinkStore

/// The daemon's LMDB cache of accounts, balances and booked transactions, kept in sync with the
/// banks by ``AccountSyncService`` and read by the account queries.
///
/// Key layout:
/// - `accounts`: account id → ``Account`` record
/// - `balances`: account id → ledger, currency, bank `as_of`, local `synced_at`
/// - `transactions`: account id, 0x00, booking time (8 bytes, order-preserving), arrival
///   sequence (8 bytes) → ``BookedTransaction`` record. Range scans by account and time.
/// - `transaction_ids`: bank transaction id → key in `transactions` (deduplication)
/// - `sync_cursors`: account id → bank feed cursor, next arrival sequence, last sync time
public struct AccountCache: Sendable {
  public let store: Store

  public init(store: Store) {
    self.store = store
  }

  /// A cached balance with its freshness.
  public struct CachedBalance: Sendable, Hashable {
    public var balance: LedgerBalance
    /// When the daemon last heard this balance from the bank.
    public var syncedAt: Instant
  }

  /// Position of a transaction in the `transactions` index: booking time, then arrival.
  public struct Position: Sendable, Hashable, Comparable {
    public var bookingTime: Instant
    public var sequence: UInt64

    public static func < (lhs: Position, rhs: Position) -> Bool {
      (lhs.bookingTime, lhs.sequence) < (rhs.bookingTime, rhs.sequence)
    }
  }

  struct SyncState {
    var cursor: String?
    var nextSequence: UInt64
    var lastSync: Instant
  }

  // MARK: Keys

  static func accountKey(_ id: String) -> [UInt8] { Array(id.utf8) }

  static func transactionPrefix(_ accountID: String) -> [UInt8] { Array(accountID.utf8) + [0] }

  static func transactionKey(_ accountID: String, _ position: Position) -> [UInt8] {
    var writer = RecordWriter(capacity: accountID.utf8.count + 17)
    writer.writeRaw(transactionPrefix(accountID))
    writer.write(position.bookingTime.millisecondsSinceEpoch)
    writer.write(position.sequence)
    return writer.bytes
  }

  static func position(fromKey key: [UInt8]) throws -> Position {
    var reader = RecordReader(Array(key.suffix(16)))
    return Position(
      bookingTime: Instant(millisecondsSinceEpoch: try reader.readInt64()),
      sequence: try reader.readUInt64()
    )
  }

  // MARK: Accounts

  /// Replaces the cached data of each account given (accounts the bank no longer lists stay).
  /// An account that breaks ``BankDataLimits`` is skipped and recorded; the anomalies are
  /// returned for the caller to log.
  @discardableResult
  public func store(accounts: [Account], at now: Instant) async throws -> [BankAnomaly] {
    try await self.store.write { txn in
      var anomalies: [BankAnomaly] = []
      for account in accounts {
        if let problem = BankDataLimits.accountProblem(account) {
          let anomaly = BankAnomaly(subject: account.id, description: "account list: \(problem); skipped")
          try anomaly.record(&txn, at: now)
          anomalies.append(anomaly)
          continue
        }
        try txn.put(Self.accountKey(account.id), account.record, in: .accounts)
      }
      return anomalies
    }
  }

  /// All cached accounts, ordered by id.
  public func accounts() throws -> [Account] {
    try self.store.withReadTransaction { txn in
      var accounts: [Account] = []
      try txn.scan(.accounts) { _, value in
        accounts.append(try Account(record: value))
        return true
      }
      return accounts
    }
  }

  public func account(_ id: String) throws -> Account? {
    try self.store.withReadTransaction { txn in
      try txn.get(Self.accountKey(id), in: .accounts).map(Account.init(record:))
    }
  }

  // MARK: Balances

  /// What a balance write did.
  public enum BalanceWrite: Sendable, Hashable {
    /// Stored; reservations of settled payments whose debit it includes were released with it.
    case stored
    /// The cache already holds a balance as of a later time: kept (a refresh that lost a race
    /// with the sync, or a bank answering out of order).
    case keptNewer
  }

  /// Stores a balance the bank reported, with the release of every settled payment's
  /// reservation whose debit it includes, in one transaction (see ``Reservations``). Never
  /// replaces a balance with a later as-of time. A balance that is not the account's (other
  /// account, other currency, absurd amount) is refused with ``BankError/Code/malformed``.
  @discardableResult
  public func store(balance: LedgerBalance, syncedAt: Instant) async throws -> BalanceWrite {
    let record = Self.encodeBalance(balance, syncedAt: syncedAt)
    return try await self.store.write { txn in
      guard let accountBytes = try txn.get(Self.accountKey(balance.accountID), in: .accounts) else {
        throw BankError(.malformed, "balance for \(LogText.prefix(balance.accountID)), an account the bank did not list")
      }
      let account = try Account(record: accountBytes)
      if let problem = BankDataLimits.balanceProblem(balance, accountID: account.id, currency: account.currency, now: syncedAt) {
        throw BankError(.malformed, problem)
      }
      if let current = try Self.cachedBalance(balance.accountID, { try txn.get($0, in: .balances) }),
        current.balance.asOf > balance.asOf
      {
        return .keptNewer
      }
      try txn.put(Self.accountKey(balance.accountID), record, in: .balances)
      try Reservations.releaseIncluded(accountID: balance.accountID, asOf: balance.asOf, txn: &txn)
      return .stored
    }
  }

  static let balanceRecordFormat: UInt8 = 1

  static func encodeBalance(_ balance: LedgerBalance, syncedAt: Instant) -> [UInt8] {
    var writer = RecordWriter(capacity: 40)
    writer.write(Self.balanceRecordFormat)
    writer.write(balance.ledger.minorUnits)
    writer.write(balance.ledger.currency.code)
    writer.write(balance.asOf.millisecondsSinceEpoch)
    writer.write(syncedAt.millisecondsSinceEpoch)
    return writer.bytes
  }

  /// The cached balance of `accountID` read through `get` (a read or a write transaction).
  static func cachedBalance(_ accountID: String, _ get: ([UInt8]) throws -> [UInt8]?) throws -> CachedBalance? {
    try get(Self.accountKey(accountID)).map { try Self.decodeBalance(accountID, $0) }
  }

  public func balance(_ accountID: String) throws -> CachedBalance? {
    try self.store.withReadTransaction { txn in
      try txn.get(Self.accountKey(accountID), in: .balances).map { try Self.decodeBalance(accountID, $0) }
    }
  }

  /// The account, its cached balance and the minor units reserved by its payments in flight,
  /// in one snapshot (the GetBalance hot path).
  public func accountAndBalance(_ accountID: String) throws -> (Account, CachedBalance?, reserved: Int64)? {
    try self.store.withReadTransaction { txn -> (Account, CachedBalance?, reserved: Int64)? in
      guard let accountBytes = try txn.get(Self.accountKey(accountID), in: .accounts) else { return nil }
      let balance = try txn.get(Self.accountKey(accountID), in: .balances).map { try Self.decodeBalance(accountID, $0) }
      let reserved = try Reservations.reserved(accountID) { try txn.get($0, in: .reservations) }
      return (try Account(record: accountBytes), balance, reserved)
    }
  }

  static func decodeBalance(_ accountID: String, _ bytes: [UInt8]) throws -> CachedBalance {
    var reader = RecordReader(bytes)
    guard try reader.readUInt8() == Self.balanceRecordFormat else {
      throw StoreError(code: .corrupted, message: "unknown balance record format")
    }
    let minorUnits = try reader.readInt64()
    guard let currency = CurrencyCode(try reader.readString()) else {
      throw StoreError(code: .corrupted, message: "balance of \(accountID) has an invalid currency")
    }
    let asOf = Instant(millisecondsSinceEpoch: try reader.readInt64())
    let syncedAt = Instant(millisecondsSinceEpoch: try reader.readInt64())
    try reader.finish()
    return CachedBalance(
      balance: LedgerBalance(accountID: accountID, ledger: Money(minorUnits: minorUnits, currency: currency), asOf: asOf),
      syncedAt: syncedAt
    )
  }

  // MARK: Transactions

  func syncState(_ accountID: String, txn: WriteTransaction) throws -> SyncState {
    try Self.decodeSyncState(try txn.get(Self.accountKey(accountID), in: .syncCursors))
  }

  static func decodeSyncState(_ bytes: [UInt8]?) throws -> SyncState {
    guard let bytes else { return SyncState(cursor: nil, nextSequence: 0, lastSync: Instant(millisecondsSinceEpoch: 0)) }
    var reader = RecordReader(bytes)
    let hasCursor = try reader.readUInt8() == 1
    let cursor = try reader.readString()
    let state = SyncState(
      cursor: hasCursor ? cursor : nil,
      nextSequence: try reader.readUInt64(),
      lastSync: Instant(millisecondsSinceEpoch: try reader.readInt64())
    )
    try reader.finish()
    return state
  }

  /// The bank feed cursor to resume from (nil: from the start of the bank's history).
  public func syncCursor(_ accountID: String) throws -> String? {
    try self.store.withReadTransaction { txn in
      try Self.decodeSyncState(try txn.get(Self.accountKey(accountID), in: .syncCursors)).cursor
    }
  }

  /// What storing a feed page did.
  public struct AppliedPage: Sendable, Hashable {
    /// Entries that were new.
    public var inserted = 0
    /// Entries skipped because they break ``BankDataLimits`` (recorded in the audit).
    public var anomalies: [BankAnomaly] = []
  }

  /// Stores a page of the bank's feed and the cursor after it in one transaction, skipping
  /// entries already cached (a re-delivered page after a crash or a retry) and recording, then
  /// skipping, entries that break ``BankDataLimits``: the cursor always moves past the page.
  @discardableResult
  public func apply(_ page: TransactionFeedPage, accountID: String, syncedAt: Instant) async throws -> AppliedPage {
    guard page.nextCursor.utf8.count <= BankDataLimits.maxCursorBytes else {
      let problem = "feed cursor of \(page.nextCursor.utf8.count) bytes exceeds \(BankDataLimits.maxCursorBytes)"
      let anomaly = BankAnomaly(
        subject: accountID, description: "transactions of \(accountID): \(problem); the feed cannot move on until the bank sends a shorter one")
      try await self.store.write { txn in try anomaly.recordStuckFeed("transactions/\(accountID)", &txn, at: syncedAt) }
      throw BankError(.malformed, problem)
    }
    return try await self.store.write { txn in
      try BankAnomaly.feedMoved("transactions/\(accountID)", &txn)
      var state = try self.syncState(accountID, txn: txn)
      let currency = try txn.get(Self.accountKey(accountID), in: .accounts).map { try Account(record: $0).currency }
      var result = AppliedPage()
      for transaction in page.transactions {
        if let problem = BankDataLimits.transactionProblem(transaction, accountID: accountID, currency: currency) {
          let anomaly = BankAnomaly(subject: transaction.id.isEmpty ? accountID : transaction.id, description: "feed of \(accountID): \(problem); skipped")
          try anomaly.record(&txn, at: syncedAt)
          result.anomalies.append(anomaly)
          continue
        }
        let idKey = Array(transaction.id.utf8)
        if try txn.get(idKey, in: .transactionIDs) != nil { continue }
        let key = Self.transactionKey(accountID, Position(bookingTime: transaction.bookingTime, sequence: state.nextSequence))
        state.nextSequence += 1
        try txn.put(key, transaction.record, in: .transactions)
        try txn.put(idKey, key, in: .transactionIDs)
        result.inserted += 1
        if transaction.direction == .debit && !transaction.endToEndID.isEmpty,
          let paymentID = try txn.get(Array(transaction.endToEndID.utf8), in: .paymentsByEndToEnd),
          let bytes = try txn.get(paymentID, in: .payments)
        {
          let payment = try Payment(record: bytes)
          // Only the payment's own debit counts: its account, its amount. An EndToEndId is sent
          // to the payee and can be reused by others; a mismatch is recorded, never matched.
          guard payment.instruction.debtorAccountID == accountID, payment.instruction.amount == transaction.amount else {
            let anomaly = BankAnomaly(
              subject: transaction.id,
              description: "debit of \(transaction.amount) on \(accountID) carries the EndToEndId of payment \(payment.id) (\(payment.instruction.amount) from \(payment.instruction.debtorAccountID)); not matched")
            try anomaly.record(&txn, at: syncedAt)
            result.anomalies.append(anomaly)
            continue
          }
          // The history now holds this payment's debit; its reservation goes once a cached
          // balance includes it (at once if the cached one already does).
          try Reservations.noteBookedDebit(transaction.endToEndID, at: transaction.bookingTime, txn: &txn)
          try Reservations.releaseIfDue(payment, txn: &txn)
        }
      }
      var writer = RecordWriter(capacity: 48)
      writer.write(UInt8(1))
      writer.write(page.nextCursor)
      writer.write(state.nextSequence)
      writer.write(syncedAt.millisecondsSinceEpoch)
      try txn.put(Self.accountKey(accountID), writer.bytes, in: .syncCursors)
      return result
    }
  }

  /// Transactions of one account with booking time in `start..<end`, after `position`
  /// (exclusive), in index order, at most `limit`; `more` tells whether another page follows.
  public func transactions(
    accountID: String,
    start: Instant,
    end: Instant,
    direction: Direction?,
    after position: Position?,
    limit: Int
  ) throws -> (transactions: [(Position, BookedTransaction)], more: Bool) {
    try self.store.withReadTransaction { txn in
      let prefix = Self.transactionPrefix(accountID)
      let from: [UInt8]
      if let position {
        // The immediate successor of the last key returned.
        from = Self.transactionKey(accountID, position) + [0]
      } else {
        from = Self.transactionKey(accountID, Position(bookingTime: start, sequence: 0))
      }
      let endKey = Self.transactionKey(accountID, Position(bookingTime: end, sequence: 0))
      var found: [(Position, BookedTransaction)] = []
      var more = false
      try txn.scan(.transactions, from: from) { key, value in
        guard key.starts(with: prefix), key.lexicographicallyPrecedes(endKey) else { return false }
        let transaction = try BookedTransaction(record: value)
        if let direction, transaction.direction != direction { return true }
        if found.count == limit {
          more = true
          return false
        }
        found.append((try Self.position(fromKey: key), transaction))
        return true
      }
      return (found, more)
    }
  }

  /// Number of cached transactions of an account (tests and diagnostics).
  public func transactionCount(accountID: String) throws -> Int {
    try self.store.withReadTransaction { txn in
      let prefix = Self.transactionPrefix(accountID)
      var count = 0
      try txn.scan(.transactions, from: prefix) { key, _ in
        guard key.starts(with: prefix) else { return false }
        count += 1
        return true
      }
      return count
    }
  }
}
