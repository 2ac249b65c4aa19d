internal import CLMDB
import Synchronization
import BankLinkCore
import Dispatch

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The daemon's LMDB environment: one memory-mapped file under the data directory holding the
/// named databases in ``Database/all``.
///
/// Transactions are synchronous closures, so nothing can suspend while one is open (an LMDB
/// transaction must stay on one thread). Write transactions commit with a synced flush: when
/// ``withWriteTransaction(_:)`` returns, the change is on disk.
///
/// Async code writes with ``write(_:)``, which runs the transaction on the store's writer thread:
/// the calling task suspends while LMDB's writer lock and the synced flush block that
/// thread, never an event loop or a thread of Swift's cooperative pool.
///
/// ```swift
/// let store = try Store(configuration: .init(directory: "/var/lib/banklink", mapSizeMiB: 1024))
/// try store.withWriteTransaction { txn in try txn.put(Array("k".utf8), Array("v".utf8), in: .meta) }
/// let value = try store.withReadTransaction { txn in try txn.get(Array("k".utf8), in: .meta) }
/// ```
/// A conversion of the stored data from schema `from` to `from + 1`.
public struct SchemaMigration: Sendable {
  public var from: UInt32
  public var description: String
  public var apply: @Sendable (inout WriteTransaction) throws -> Void

  public init(from: UInt32, description: String, apply: @escaping @Sendable (inout WriteTransaction) throws -> Void) {
    self.from = from
    self.description = description
    self.apply = apply
  }
}

public final class Store: Sendable {
  /// The schema this build reads and writes. Bumped whenever stored records change shape; a data
  /// directory with another version is refused at start rather than misread.
  ///
  /// 2: the audit records are a hash-chained journal (BankLinkJournal), with an object index.
  /// 3: a reconciliation run's match record (`recon_matches`) may name the report line that holds
  /// the match instead of holding it again; builds of schema 2 cannot read it. Nothing stored
  /// changes on the way from 2 (``formatMigrations``).
  public static let schemaVersion: UInt32 = 3

  /// Steps to this build's schema that rewrite nothing: they only stop older builds from opening
  /// a directory holding records they cannot read. Every store of ``schemaVersion`` applies them
  /// along with its configuration's migrations.
  static let formatMigrations = [
    SchemaMigration(from: 2, description: "match records may name their report line") { _ in }
  ]

  static let schemaVersionKey: [UInt8] = Array("schema_version".utf8)

  public struct Configuration: Sendable {
    /// Directory holding `data.mdb` and `lock.mdb`; created if missing.
    public var directory: String
    /// Size of the memory map, which bounds the size of the data file.
    public var mapSizeMiB: Int
    /// The schema version to expect (tests use other values to exercise the check).
    public var schemaVersion: UInt32
    /// The named databases to open; ``Database/meta`` is always opened.
    public var databases: [Database]
    /// CPUs the writer thread (every write transaction and synced commit) runs on; empty: not
    /// placed (it keeps the CPUs of the thread that opens the store). See ``WriterThread``.
    public var writerCPUs: [Int]
    /// Conversions from older schema versions, applied at open in one write transaction with
    /// the new version number: all or nothing. Without one for the stored version the store
    /// refuses to open (`.schemaMismatch`).
    public var migrations: [SchemaMigration]
    /// Opens the environment read-only (MDB_RDONLY): no write, no migration, no lock taken for
    /// writing — for reading a copy of a data directory with no daemon (`banklink audit verify`).
    public var readOnly: Bool

    public init(
      directory: String,
      mapSizeMiB: Int = Limits.defaultMapSizeMiB,
      schemaVersion: UInt32 = Store.schemaVersion,
      databases: [Database] = Database.all,
      writerCPUs: [Int] = [],
      migrations: [SchemaMigration] = [],
      readOnly: Bool = false
    ) {
      self.directory = directory
      self.mapSizeMiB = mapSizeMiB
      self.schemaVersion = schemaVersion
      self.databases = databases
      self.writerCPUs = writerCPUs
      self.migrations = migrations
      self.readOnly = readOnly
    }
  }

  // The environment pointer is immutable after init; LMDB itself synchronises access to it.
  nonisolated(unsafe) private let env: OpaquePointer
  private let handles: DatabaseHandles
  public let configuration: Configuration
  /// Where write transactions of async callers run (see ``write(_:)``); the
  /// ``GroupCommitWriter`` drains on it too, so writers of one environment queue here instead of
  /// blocking threads on LMDB's writer lock.
  let writerThread: WriterThread
  /// The schema version the data directory held before this open migrated it; nil when it
  /// needed no migration.
  public private(set) var migratedFrom: UInt32? {
    get { self.migration.withLock { $0 } }
    set { self.migration.withLock { $0 = newValue } }
  }
  private let migration = Mutex<UInt32?>(nil)
  /// Called after every successful commit, on the committing thread: must be quick.
  private let commitObservers = Mutex<[@Sendable () -> Void]>([])

  /// Registers `observer` to run after every successful commit of this store (on the writer
  /// thread, so it must not block): how readers of committed data learn there may be more.
  public func onCommit(_ observer: @escaping @Sendable () -> Void) {
    self.commitObservers.withLock { $0.append(observer) }
  }

  /// Opens (creating if needed) the environment, its named databases and checks the schema
  /// version. Throws ``StoreError`` with code `.schemaMismatch` when the directory holds data of
  /// another schema version.
  public init(configuration: Configuration) throws {
    self.configuration = configuration
    guard (Limits.minMapSizeMiB...Limits.maxMapSizeMiB).contains(configuration.mapSizeMiB) else {
      throw StoreError(
        code: .invalidArgument,
        message: "storage.map_size_mib must be between \(Limits.minMapSizeMiB) and \(Limits.maxMapSizeMiB), got \(configuration.mapSizeMiB)"
      )
    }
    self.writerThread = try WriterThread(name: "banklink-writer", cpus: configuration.writerCPUs)
    if !configuration.readOnly {
      try Store.makeDirectory(configuration.directory)
    }

    var env: OpaquePointer?
    try check(mdb_env_create(&env), "creating the LMDB environment")
    guard let env else { throw StoreError(code: .other, message: "mdb_env_create returned no environment") }
    do {
      try check(mdb_env_set_mapsize(env, configuration.mapSizeMiB * 1024 * 1024), "setting the map size")
      try check(mdb_env_set_maxdbs(env, MDB_dbi(Limits.maxNamedDatabases)), "setting the database count")
      try check(mdb_env_set_maxreaders(env, UInt32(Limits.maxReaders)), "setting the reader count")
      // MDB_NOTLS: read transactions are not tied to an OS thread (Swift tasks move between
      // threads). Commits stay synced: no MDB_NOSYNC / MDB_NOMETASYNC.
      try check(
        mdb_env_open(env, configuration.directory, UInt32(MDB_NOTLS) | (configuration.readOnly ? UInt32(MDB_RDONLY) : 0), 0o640),
        "opening the LMDB environment in \(configuration.directory)"
      )
      var deadReaders: Int32 = 0
      _ = mdb_reader_check(env, &deadReaders)
      self.handles = try Store.openDatabases(env, Set(configuration.databases + [.meta]), readOnly: configuration.readOnly)
    } catch {
      mdb_env_close(env)
      throw error
    }
    self.env = env
    // From here on `deinit` closes the environment, also when the check below throws.
    try self.checkSchemaVersion()
  }

  deinit {
    // Every write job holds the store, so none is left to run when this does (the writer
    // thread ends when its WriterThread is released).
    mdb_env_close(self.env)
  }

  /// Runs `body` in a read-only transaction: a consistent snapshot that never blocks writers.
  public func withReadTransaction<Result>(
    _ body: (ReadTransaction) throws -> Result
  ) throws -> Result {
    var txn: OpaquePointer?
    try check(mdb_txn_begin(self.env, nil, UInt32(MDB_RDONLY), &txn), "beginning a read transaction")
    guard let txn else { throw StoreError(code: .other, message: "mdb_txn_begin returned no transaction") }
    defer { mdb_txn_abort(txn) }
    return try body(ReadTransaction(txn: txn, handles: self.handles))
  }

  /// Runs `body` in a write transaction and commits it with a synced flush when `body` returns.
  /// If `body` throws, or the commit fails, nothing of the transaction is written. Write
  /// transactions are serialised by LMDB: a second writer waits (blocking its thread).
  public func withWriteTransaction<Result>(
    _ body: (inout WriteTransaction) throws -> Result
  ) throws -> Result {
    var txn: OpaquePointer?
    try check(mdb_txn_begin(self.env, nil, 0, &txn), "beginning a write transaction")
    guard let txn else { throw StoreError(code: .other, message: "mdb_txn_begin returned no transaction") }
    var transaction = WriteTransaction(env: self.env, txn: txn, handles: self.handles, mapSizeMiB: self.configuration.mapSizeMiB)
    let result: Result
    do {
      result = try body(&transaction)
    } catch {
      mdb_txn_abort(txn)
      throw error
    }
    // mdb_txn_commit frees the transaction whether or not it succeeds.
    try check(mdb_txn_commit(txn), "committing a write transaction", mapSizeMiB: self.configuration.mapSizeMiB)
    for action in transaction.effects.actions { action() }
    for observer in self.commitObservers.withLock({ $0 }) { observer() }
    return result
  }

  /// Runs `body` in a synced write transaction on the writer thread and resumes the caller once it
  /// is committed (or has failed, writing nothing). For async callers: the blocking part happens
  /// on the writer thread.
  public func write<Result: Sendable>(
    _ body: @escaping @Sendable (inout WriteTransaction) throws -> Result
  ) async throws -> Result {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Result, any Error>) in
      self.writerThread.submit {
        continuation.resume(with: Swift.Result { try self.withWriteTransaction(body) })
      }
    }
  }

  /// The schema version recorded in the data directory.
  /// Writes a consistent copy of the environment to `descriptor` (a pipe or a file), from one
  /// read snapshot, while writers go on: `mdb_env_copyfd2`, compacted (free pages left out,
  /// pages renumbered) unless `compact` is false. Blocks until the copy is written.
  public func copy(to descriptor: Int32, compact: Bool = true) throws {
    try check(mdb_env_copyfd2(self.env, descriptor, compact ? UInt32(MDB_CP_COMPACT) : 0), "copying the environment")
  }

  /// How full the map is and how many reader slots are taken: for metrics.
  public struct Usage: Sendable {
    public var mapSizeBytes: Int
    public var usedBytes: Int
    public var readersUsed: Int
    public var readersMax: Int
  }

  public func usage() -> Usage {
    var info = MDB_envinfo()
    var stat = MDB_stat()
    mdb_env_info(self.env, &info)
    mdb_env_stat(self.env, &stat)
    return Usage(
      mapSizeBytes: info.me_mapsize, usedBytes: (info.me_last_pgno + 1) * Int(stat.ms_psize), readersUsed: Int(info.me_numreaders),
      readersMax: Int(info.me_maxreaders))
  }

  public func storedSchemaVersion() throws -> UInt32? {
    try self.withReadTransaction { txn in
      try txn.get(Store.schemaVersionKey, in: .meta).map(Store.decodeVersion)
    }
  }

  private func checkSchemaVersion() throws {
    let expected = self.configuration.schemaVersion
    if let stored = try self.storedSchemaVersion() {
      if stored < expected && !self.configuration.readOnly, try self.migrate(from: stored, to: expected) {
        self.migratedFrom = stored
        return
      }
      // Read-only, an older schema whose steps rewrite nothing reads as it is (`banklink audit
      // verify` of a copy made by the previous build).
      if stored < expected, self.configuration.readOnly, expected == Store.schemaVersion,
        (stored..<expected).allSatisfy({ version in Store.formatMigrations.contains { $0.from == version } })
      {
        return
      }
      guard stored == expected else {
        throw StoreError(
          code: .schemaMismatch,
          message: """
            the data directory \(self.configuration.directory) holds schema version \(stored), \
            but this banklinkd reads schema version \(expected); run the matching banklinkd or \
            migrate the data before starting
            """
        )
      }
      return
    }
    guard !self.configuration.readOnly else {
      throw StoreError(code: .schemaMismatch, message: "the data directory \(self.configuration.directory) records no schema version")
    }
    try self.withWriteTransaction { txn in
      try txn.put(Store.schemaVersionKey, Store.encodeVersion(expected), in: .meta)
    }
  }

  /// Applies the migrations from `stored` up to `expected` and records `expected`, in one write
  /// transaction. False when a step is missing (nothing is written then).
  private func migrate(from stored: UInt32, to expected: UInt32) throws -> Bool {
    var steps: [SchemaMigration] = []
    var version = stored
    while version < expected {
      let known = self.configuration.migrations + (expected == Store.schemaVersion ? Store.formatMigrations : [])
      guard let step = known.first(where: { $0.from == version }) else { return false }
      steps.append(step)
      version += 1
    }
    try self.withWriteTransaction { txn in
      for step in steps {
        try step.apply(&txn)
      }
      try txn.put(Store.schemaVersionKey, Store.encodeVersion(expected), in: .meta)
    }
    return true
  }

  static func encodeVersion(_ version: UInt32) -> [UInt8] {
    withUnsafeBytes(of: version.bigEndian) { Array($0) }
  }

  static func decodeVersion(_ bytes: [UInt8]) throws -> UInt32 {
    guard bytes.count == 4 else {
      throw StoreError(code: .corrupted, message: "schema version record has \(bytes.count) bytes, expected 4")
    }
    return bytes.reduce(0) { ($0 << 8) | UInt32($1) }
  }

  private static func openDatabases(
    _ env: OpaquePointer, _ databases: Set<Database>, readOnly: Bool
  ) throws -> DatabaseHandles {
    var txn: OpaquePointer?
    try check(mdb_txn_begin(env, nil, readOnly ? UInt32(MDB_RDONLY) : 0, &txn), "beginning the set-up transaction")
    guard let txn else { throw StoreError(code: .other, message: "mdb_txn_begin returned no transaction") }
    var handles: [Database: MDB_dbi] = [:]
    do {
      for database in databases.sorted(by: { $0.name < $1.name }) {
        var dbi: MDB_dbi = 0
        // Read-only, a database the directory lacks is an error (not a BankLink directory of
        // this schema); otherwise it is created.
        try check(mdb_dbi_open(txn, database.name, readOnly ? 0 : UInt32(MDB_CREATE), &dbi), "opening database \(database)")
        handles[database] = dbi
      }
    } catch {
      mdb_txn_abort(txn)
      throw error
    }
    try check(mdb_txn_commit(txn), "committing the set-up transaction")
    return DatabaseHandles(handles)
  }

  private static func makeDirectory(_ path: String) throws {
    var isDirectory = stat()
    if stat(path, &isDirectory) == 0 {
      guard (isDirectory.st_mode & S_IFMT) == S_IFDIR else {
        throw StoreError(code: .ioFailure, message: "\(path) exists and is not a directory")
      }
      return
    }
    // Create parents one by one (like mkdir -p), owner-only: the cache holds financial data.
    var prefix = path.hasPrefix("/") ? "/" : ""
    for component in path.split(separator: "/") {
      prefix += component
      if mkdir(prefix, 0o750) != 0 && errno != EEXIST {
        let code = errno
        throw StoreError(
          code: .ioFailure,
          message: "cannot create data directory \(prefix): \(String(cString: strerror(code)))",
          returnCode: code
        )
      }
      prefix += "/"
    }
  }
}

/// Wraps an LMDB or errno return code into a ``StoreError``; the one place C codes are mapped.
func check(_ rc: Int32, _ action: @autoclosure () -> String, mapSizeMiB: Int? = nil) throws {
  guard rc != 0 else { return }
  let text = String(cString: mdb_strerror(rc))
  switch rc {
  case MDB_MAP_FULL:
    let size = mapSizeMiB.map { " (\($0) MiB)" } ?? ""
    throw StoreError(
      code: .mapFull,
      message: "\(action()): the LMDB map\(size) is full; raise storage.map_size_mib in the configuration",
      returnCode: rc
    )
  case MDB_READERS_FULL:
    throw StoreError(code: .readersFull, message: "\(action()): \(text)", returnCode: rc)
  case MDB_CORRUPTED, MDB_PANIC, MDB_VERSION_MISMATCH, MDB_INVALID, MDB_PAGE_NOTFOUND:
    throw StoreError(code: .corrupted, message: "\(action()): \(text)", returnCode: rc)
  case MDB_BAD_VALSIZE, EINVAL:
    throw StoreError(code: .invalidArgument, message: "\(action()): \(text)", returnCode: rc)
  case MDB_NOTFOUND:
    throw StoreError(code: .notFound, message: "\(action()): \(text)", returnCode: rc)
  case EACCES, ENOENT, ENOSPC, EIO, EROFS, EPERM, ENOMEM:
    throw StoreError(code: .ioFailure, message: "\(action()): \(text)", returnCode: rc)
  default:
    throw StoreError(code: .other, message: "\(action()): \(text)", returnCode: rc)
  }
}
