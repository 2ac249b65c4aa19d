internal import CLMDB
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What both kinds of transaction can do: read records.
public protocol ReadableTransaction {
  func get(_ key: [UInt8], in database: Database) throws -> [UInt8]?
  func scan(_ database: Database, from start: [UInt8]?, _ body: (_ key: [UInt8], _ value: [UInt8]) throws -> Bool) throws
  /// Like `scan`, without copying: `key` and `value` point into the memory map and are valid
  /// only during the call of `body` (for walks that only look, such as verifying the journal).
  func scanInPlace(
    _ database: Database, from start: [UInt8]?, _ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws -> Bool
  ) throws
}

/// A read-only LMDB transaction: a consistent snapshot. Only valid inside
/// ``Store/withReadTransaction(_:)``: never keep it beyond the closure.
///
/// (It would be `~Copyable` to make escaping impossible, but Swift 6.3.1's optimizer crashes
/// specialising generic closures over non-copyable parameters in release builds.)
public struct ReadTransaction: ReadableTransaction {
  let txn: OpaquePointer
  let handles: DatabaseHandles

  /// The value stored under `key`, or nil when there is none.
  public func get(_ key: [UInt8], in database: Database) throws -> [UInt8]? {
    try lookup(txn: self.txn, dbi: try handle(self.handles, database), key: key)
  }

  /// The number of records in `database`, from LMDB's own count (no scan).
  public func count(_ database: Database) throws -> Int {
    var stat = MDB_stat()
    try check(mdb_stat(self.txn, try handle(self.handles, database), &stat), "reading the statistics of \(database)")
    return Int(stat.ms_entries)
  }

  /// The pages `database` occupies (branch, leaf and overflow), from LMDB's own statistics.
  public func pages(_ database: Database) throws -> Int {
    var stat = MDB_stat()
    try check(mdb_stat(self.txn, try handle(self.handles, database), &stat), "reading the statistics of \(database)")
    return Int(stat.ms_branch_pages + stat.ms_leaf_pages + stat.ms_overflow_pages)
  }

  /// Visits records in key order starting at the first key ≥ `start` (or the first key) until
  /// `body` returns false.
  public func scan(
    _ database: Database,
    from start: [UInt8]? = nil,
    _ body: (_ key: [UInt8], _ value: [UInt8]) throws -> Bool
  ) throws {
    try scanRecords(txn: self.txn, dbi: try handle(self.handles, database), from: start, body)
  }

  public func scanInPlace(
    _ database: Database,
    from start: [UInt8]? = nil,
    _ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws -> Bool
  ) throws {
    try scanRecordsInPlace(txn: self.txn, dbi: try handle(self.handles, database), from: start, body)
  }

  /// ``scanInPlace(_:from:_:)`` of `database`, with each record's namesake in `other` (the
  /// record of `other` under the same key, or nil), found by a second cursor walking beside the
  /// first instead of a look-up per record: for a pass over two databases keyed alike (payments
  /// and their matches). The same lifetime rules as `scanInPlace`.
  public func scanInPlace(
    _ database: Database,
    joining other: Database,
    from start: [UInt8]? = nil,
    _ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer, _ joined: UnsafeRawBufferPointer?) throws -> Bool
  ) throws {
    let otherDBI = try handle(self.handles, other)
    var cursor: OpaquePointer?
    try check(mdb_cursor_open(self.txn, otherDBI, &cursor), "opening a cursor")
    defer { mdb_cursor_close(cursor) }
    var k = MDB_val()
    var v = MDB_val()
    // MDB_NOTFOUND once the second cursor has passed its last record.
    var rc: Int32 = MDB_NOTFOUND
    var positioned = false
    try scanRecordsInPlace(txn: self.txn, dbi: try handle(self.handles, database), from: start) { key, value in
      // Forward to the first key of `other` not below `key`: a few steps, else a seek.
      var steps = 0
      while !positioned || (rc == 0 && compareKeys(k, key) < 0) {
        if !positioned || steps == joinedScanSteps {
          var wanted = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
          rc = mdb_cursor_get(cursor, &wanted, &v, MDB_SET_RANGE)
          if rc == 0 { k = wanted }
          positioned = true
          break
        }
        rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT)
        steps += 1
      }
      if rc != 0, rc != MDB_NOTFOUND { try check(rc, "scanning records") }
      let joined = rc == 0 && compareKeys(k, key) == 0 ? UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size) : nil
      return try body(key, value, joined)
    }
  }
}

/// Steps a joined scan's second cursor takes forward before it seeks instead.
private let joinedScanSteps = 8

/// LMDB's default key order: bytes compared as unsigned, then the shorter first.
private func compareKeys(_ a: MDB_val, _ b: UnsafeRawBufferPointer) -> Int {
  let common = min(a.mv_size, b.count)
  if common > 0, let left = a.mv_data, let right = b.baseAddress {
    let order = memcmp(left, right, common)
    if order != 0 { return Int(order) }
  }
  return a.mv_size - b.count
}

/// A read-write LMDB transaction. Only valid inside ``Store/withWriteTransaction(_:)``.
public struct WriteTransaction: ReadableTransaction {
  let env: OpaquePointer
  let txn: OpaquePointer
  let handles: DatabaseHandles
  let mapSizeMiB: Int
  /// Work to do once this transaction's changes are durable (see ``afterCommit(_:)``).
  let effects: CommitEffects

  init(env: OpaquePointer, txn: OpaquePointer, handles: DatabaseHandles, mapSizeMiB: Int, effects: CommitEffects = CommitEffects()) {
    self.env = env
    self.txn = txn
    self.handles = handles
    self.mapSizeMiB = mapSizeMiB
    self.effects = effects
  }

  /// Runs `action` on the writer thread after the outermost transaction commits, and never if
  /// it (or the nested transaction this is) aborts: for counters and notifications that must
  /// count only what became durable. Keep it short; it delays the batch's callers.
  public func afterCommit(_ action: @escaping () -> Void) {
    self.effects.actions.append(action)
  }

  /// Runs `body` in a nested transaction: its writes join this transaction when `body`
  /// returns, and are discarded (leaving this transaction as it was) when it throws.
  public func withNestedTransaction<Result>(_ body: (inout WriteTransaction) throws -> Result) throws -> Result {
    var child: OpaquePointer?
    try check(mdb_txn_begin(self.env, self.txn, 0, &child), "beginning a nested transaction", mapSizeMiB: self.mapSizeMiB)
    guard let child else { throw StoreError(code: .other, message: "mdb_txn_begin returned no transaction") }
    var nested = WriteTransaction(env: self.env, txn: child, handles: self.handles, mapSizeMiB: self.mapSizeMiB)
    let result: Result
    do {
      result = try body(&nested)
    } catch {
      mdb_txn_abort(child)
      throw error
    }
    try check(mdb_txn_commit(child), "committing a nested transaction", mapSizeMiB: self.mapSizeMiB)
    // The nested writes joined this transaction; so do their after-commit actions.
    self.effects.actions.append(contentsOf: nested.effects.actions)
    return result
  }

  public func get(_ key: [UInt8], in database: Database) throws -> [UInt8]? {
    try lookup(txn: self.txn, dbi: try handle(self.handles, database), key: key)
  }

  public func scan(
    _ database: Database,
    from start: [UInt8]? = nil,
    _ body: (_ key: [UInt8], _ value: [UInt8]) throws -> Bool
  ) throws {
    try scanRecords(txn: self.txn, dbi: try handle(self.handles, database), from: start, body)
  }

  public func scanInPlace(
    _ database: Database,
    from start: [UInt8]? = nil,
    _ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws -> Bool
  ) throws {
    try scanRecordsInPlace(txn: self.txn, dbi: try handle(self.handles, database), from: start, body)
  }

  /// Stores `value` under `key`, replacing any previous value.
  public mutating func put(_ key: [UInt8], _ value: [UInt8], in database: Database) throws {
    try check(try self.rawPut(key, value, in: database, flags: 0), "writing to \(database)", mapSizeMiB: self.mapSizeMiB)
  }

  /// Stores a new record whose key must sort after every key in `database` (`MDB_APPEND`): for
  /// an append-only log, where any other key (one already used, above all) means the log's own
  /// record of where it ends is behind what it holds, and must not overwrite what was written.
  /// Throws ``StoreError/Code/corrupted`` then, writing nothing.
  public mutating func append(_ key: [UInt8], _ value: [UInt8], in database: Database) throws {
    let rc = try self.rawPut(key, value, in: database, flags: UInt32(MDB_APPEND))
    if rc == MDB_KEYEXIST {
      throw StoreError(code: .corrupted, message: "appending to \(database): the key does not sort after its last record (would overwrite)")
    }
    try check(rc, "appending to \(database)", mapSizeMiB: self.mapSizeMiB)
  }

  /// `mdb_put` of `key` and `value` with `flags`; LMDB's return code.
  private func rawPut(_ key: [UInt8], _ value: [UInt8], in database: Database, flags: UInt32) throws -> Int32 {
    let dbi = try handle(self.handles, database)
    return key.withUnsafeBytes { keyBytes in
      value.withUnsafeBytes { valueBytes in
        var k = MDB_val(mv_size: keyBytes.count, mv_data: UnsafeMutableRawPointer(mutating: keyBytes.baseAddress))
        var v = MDB_val(mv_size: valueBytes.count, mv_data: UnsafeMutableRawPointer(mutating: valueBytes.baseAddress))
        return mdb_put(self.txn, dbi, &k, &v, flags)
      }
    }
  }

  /// Removes the record under `key`; returns false when there was none.
  @discardableResult
  public mutating func delete(_ key: [UInt8], in database: Database) throws -> Bool {
    let dbi = try handle(self.handles, database)
    return try key.withUnsafeBytes { keyBytes in
      var k = MDB_val(mv_size: keyBytes.count, mv_data: UnsafeMutableRawPointer(mutating: keyBytes.baseAddress))
      let rc = mdb_del(self.txn, dbi, &k, nil)
      if rc == MDB_NOTFOUND { return false }
      try check(rc, "deleting from \(database)", mapSizeMiB: self.mapSizeMiB)
      return true
    }
  }
}

private func lookup(txn: OpaquePointer, dbi: MDB_dbi, key: [UInt8]) throws -> [UInt8]? {
  try key.withUnsafeBytes { keyBytes in
    var k = MDB_val(mv_size: keyBytes.count, mv_data: UnsafeMutableRawPointer(mutating: keyBytes.baseAddress))
    var v = MDB_val()
    let rc = mdb_get(txn, dbi, &k, &v)
    if rc == MDB_NOTFOUND { return nil }
    try check(rc, "reading a record")
    return Array(UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size))
  }
}

private func scanRecords(
  txn: OpaquePointer,
  dbi: MDB_dbi,
  from start: [UInt8]?,
  _ body: (_ key: [UInt8], _ value: [UInt8]) throws -> Bool
) throws {
  try scanRecordsInPlace(txn: txn, dbi: dbi, from: start) { key, value in
    try body(Array(key), Array(value))
  }
}

private func scanRecordsInPlace(
  txn: OpaquePointer,
  dbi: MDB_dbi,
  from start: [UInt8]?,
  _ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws -> Bool
) throws {
  var cursor: OpaquePointer?
  try check(mdb_cursor_open(txn, dbi, &cursor), "opening a cursor")
  defer { mdb_cursor_close(cursor) }
  var k = MDB_val()
  var v = MDB_val()
  var startBytes = start ?? []
  var rc: Int32 = startBytes.withUnsafeMutableBytes { startBuffer in
    if start != nil {
      k = MDB_val(mv_size: startBuffer.count, mv_data: startBuffer.baseAddress)
      return mdb_cursor_get(cursor, &k, &v, MDB_SET_RANGE)
    }
    return mdb_cursor_get(cursor, &k, &v, MDB_FIRST)
  }
  while rc == 0 {
    guard try body(UnsafeRawBufferPointer(start: k.mv_data, count: k.mv_size), UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size))
    else { return }
    rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT)
  }
  if rc != MDB_NOTFOUND { try check(rc, "scanning records") }
}

private func handle(_ handles: DatabaseHandles, _ database: Database) throws -> MDB_dbi {
  guard let dbi = handles[database] else {
    // A programmer error (a database missing from the store's configuration), reported as a
    // typed error rather than a crash of the daemon.
    throw StoreError(code: .notFound, message: "database \(database) is not opened by this store")
  }
  return dbi
}

/// After-commit actions of one transaction. Used only on the writer thread that owns the
/// transaction.
final class CommitEffects: @unchecked Sendable {
  var actions: [() -> Void] = []
}
