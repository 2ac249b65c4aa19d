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
  public func store(accounts: [Account]) async throws {
    try await self.store.write { txn in
      for account in accounts {
        try txn.put(Self.accountKey(account.id), account.record, in: .accounts)
      }
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

  public func store(balance: LedgerBalance, syncedAt: Instant) async throws {
    var writer = RecordWriter(capacity: 40)
    writer.write(UInt8(1))
    writer.write(balance.ledger.minorUnits)
    writer.write(balance.ledger.currency.code)
    writer.write(balance.asOf.millisecondsSinceEpoch)
    writer.write(syncedAt.millisecondsSinceEpoch)
    let record = writer.bytes
    try await self.store.write { txn in
      try txn.put(Self.accountKey(balance.accountID), record, in: .balances)
    }
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
      let reserved = try PaymentLedger.reserved(accountID) { try txn.get($0, in: .reservations) }
      return (try Account(record: accountBytes), balance, reserved)
    }
  }

  static func decodeBalance(_ accountID: String, _ bytes: [UInt8]) throws -> CachedBalance {
    var reader = RecordReader(bytes)
    guard try reader.readUInt8() == 1 else { throw StoreError(code: .corrupted, message: "unknown balance record format") }
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

  /// Stores a page of the bank's feed and the cursor after it in one transaction, skipping
  /// entries already cached (a re-delivered page after a crash or a retry). Returns how many
  /// entries were new.
  @discardableResult
  public func apply(_ page: TransactionFeedPage, accountID: String, syncedAt: Instant) async throws -> Int {
    try await self.store.write { txn in
      var state = try self.syncState(accountID, txn: txn)
      var inserted = 0
      for transaction in page.transactions {
        let idKey = Array(transaction.id.utf8)
        if try txn.get(idKey, in: .transactionIDs) != nil { continue }
        let key = Self.transactionKey(accountID, Position(bookingTime: transaction.bookingTime, sequence: state.nextSequence))
        state.nextSequence += 1
        try txn.put(key, transaction.record, in: .transactions)
        try txn.put(idKey, key, in: .transactionIDs)
        inserted += 1
        if transaction.direction == .debit && !transaction.endToEndID.isEmpty {
          // The ledger now shows this payment's debit: a settled payment stops reserving funds.
          let e2e = Array(transaction.endToEndID.utf8)
          try txn.put(e2e, [1], in: .bookedEndToEnd)
          if let paymentID = try txn.get(e2e, in: .paymentsByEndToEnd),
            let bytes = try txn.get(paymentID, in: .payments)
          {
            try PaymentLedger.releaseIfDue(try Payment(record: bytes), txn: &txn)
          }
        }
      }
      var writer = RecordWriter(capacity: 48)
      writer.write(UInt8(1))
      writer.write(page.nextCursor)
      writer.write(state.nextSequence)
      writer.write(syncedAt.millisecondsSinceEpoch)
      try txn.put(Self.accountKey(accountID), writer.bytes, in: .syncCursors)
      return inserted
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
