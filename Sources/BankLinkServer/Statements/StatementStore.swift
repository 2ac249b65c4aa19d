import BankLinkCore
import BankLinkFormats
import BankLinkJournal
import BankLinkStore
import Crypto
import Foundation
import Synchronization

/// Why a statement file was refused. Nothing of a refused file is stored.
public enum StatementImportRefusal: Error, Sendable, Hashable, CustomStringConvertible {
  /// The file does not parse, or is not a statement: the reader's own words.
  case malformed(FormatError)
  /// The content is not of the format the caller declared.
  case formatMismatch(declared: String, found: String)
  /// A statement names an account this daemon does not know.
  case unknownAccount(identification: String, statementID: String)
  /// A statement, balance or entry in another currency than its account's.
  case wrongCurrency(accountID: String, statementID: String, found: String, expected: String)
  /// The file holds no statement.
  case empty
  /// A statement's account number names accounts at several banks and the file does not say
  /// which (no servicer BIC, or one that does not decide).
  case ambiguousAccount(identification: String, statementID: String, accounts: [String])

  public var description: String {
    switch self {
    case .malformed(let error): "\(error)"
    case .formatMismatch(let declared, let found): "the file is \(found), not \(declared) as declared"
    case .unknownAccount(let identification, let statementID):
      "statement \(statementID) is for account '\(LogText.prefix(identification, maxBytes: 64))', which is not a known account (by IBAN, number or id)"
    case .wrongCurrency(let accountID, let statementID, let found, let expected):
      "statement \(statementID) for \(accountID) holds \(found), the account is in \(expected)"
    case .empty: "the file holds no statement"
    case .ambiguousAccount(let identification, let statementID, let accounts):
      "statement \(statementID) names account '\(LogText.prefix(identification, maxBytes: 64))', which is \(accounts.joined(separator: " and ")): the file names no servicer BIC that tells them apart"
    }
  }
}

/// What an import stored (or, for a file seen before, what its first import stored).
public struct StatementImportOutcome: Sendable {
  public var statements: [StoredStatement]
  public var entries: Int
  public var duplicates: Int
  public var duplicateFile: Bool
  public var fileSHA256: String
  public var fileBytes: Int64
  public var receipt: JournalReceipt?
}

/// Bank statements in LMDB (`statements`, `statement_entries` and their indexes).
///
/// An import reads the file twice, on a thread of its own (a million entries take tens of
/// seconds to parse and must not hold the cooperative pool): first to check it whole — it
/// parses, every statement's account is known and in its currency — so that a refused file
/// leaves nothing behind; then to store it, ``Limits/statementEntriesPerCommit`` entries per
/// transaction so that payments keep committing meanwhile. Its statements stay invisible
/// (`complete == false`) until the last transaction, which also checks continuity against the
/// account's previous statement, records the file's digest, journals `statement.imported` and
/// raises a `reconciliation_break` alert per break. An import cut short by a crash is removed at
/// the next start (``removeUnfinishedImports()``). Imports run one at a time, so deduplication
/// always sees every earlier import's entries.
public final class StatementStore: Sendable {
  public let store: Store
  let cache: AccountCache
  let now: @Sendable () -> Instant
  /// Imports and reconciliation runs, one at a time.
  let queue = ImportQueue()
  /// Uploads being spooled now (``Limits/maxConcurrentStatementUploads``).
  let uploads = Mutex(0)

  public init(store: Store, cache: AccountCache, now: @escaping @Sendable () -> Instant) {
    self.store = store
    self.cache = cache
    self.now = now
  }

  // MARK: Import

  /// Stores the statement file at `path` (already whole on disk; its SHA-256 computed while it
  /// arrived). Throws ``StatementImportRefusal`` for a file that cannot be stored.
  public func importFile(
    at path: String, sha256: String, bytes: Int64, fileName: String, declared: StatementFormat?, importedBy: String
  ) async throws -> StatementImportOutcome {
    try await self.queue.run {
      // What an import cut short left is cleared first: a failure here fails this import.
      try await onOwnThread { _ = try self.removeUnfinishedImports() }
      if let earlier = try self.earlierImport(sha256: sha256) { return earlier }
      let accounts = try self.cache.accounts()
      let resolved = try await onOwnThread { try Self.check(path: path, declared: declared, accounts: accounts) }
      do {
        return try await onOwnThread {
          try self.write(path: path, accounts: resolved, sha256: sha256, bytes: bytes, fileName: fileName, importedBy: importedBy)
        }
      } catch {
        // An I/O or store failure part way: what was written is removed now rather than at
        // the next start.
        _ = try? await onOwnThread { try self.removeUnfinishedImports() }
        throw error
      }
    }
  }

  private func earlierImport(sha256: String) throws -> StatementImportOutcome? {
    try self.store.withReadTransaction { txn in
      guard let bytes = try txn.get(Hex.decode(sha256) ?? [], in: .statementFiles) else { return nil }
      let file = try StatementKeys.decodeFile(bytes)
      let statements = try file.statementSequences.compactMap { sequence in
        try txn.get(StatementKeys.statement(sequence), in: .statements).map(StatementKeys.decodeStatement)
      }
      return StatementImportOutcome(
        statements: statements, entries: file.entries, duplicates: file.duplicates, duplicateFile: true, fileSHA256: sha256,
        fileBytes: file.fileBytes, receipt: nil)
    }
  }

  /// The first pass: the whole file parses, and every statement's account is known and in its
  /// currency. Returns each statement's account id, keyed by the file's identification.
  static func check(path: String, declared: StatementFormat?, accounts: [Account]) throws -> [String: String] {
    // Domestic numbers are unique within a bank only: an identification may name several
    // accounts, told apart by the statement's servicer BIC.
    var byIdentification: [String: [Account]] = [:]
    for account in accounts {
      var keys: Set<String> = [account.id]
      // Banks print domestic numbers with or without spaces: compared without.
      if !account.number.isEmpty { keys.insert(account.number.replacingOccurrences(of: " ", with: "")) }
      if !account.iban.isEmpty { keys.insert(account.iban.replacingOccurrences(of: " ", with: "").uppercased()) }
      for key in keys { byIdentification[key, default: []].append(account) }
    }
    var resolved: [String: String] = [:]
    var current: (account: Account, statementID: String)?
    var statements = 0
    do {
      try StatementFiles.read(.file(path)) { event in
        switch event {
        case .begin(let header):
          statements += 1
          if let declared, declared != header.format {
            throw StatementImportRefusal.formatMismatch(declared: declared.rawValue, found: header.format.rawValue)
          }
          let identification = header.account.identification
          let compact = identification.replacingOccurrences(of: " ", with: "")
          let key = header.account.iban.isEmpty ? compact : compact.uppercased()
          var candidates = byIdentification[key] ?? []
          if candidates.count > 1, !header.account.servicerBIC.isEmpty {
            let bank = header.account.servicerBIC.uppercased().prefix(8)
            candidates = candidates.filter { $0.bankBIC.uppercased().prefix(8) == bank }
          }
          guard let account = candidates.first else {
            throw StatementImportRefusal.unknownAccount(identification: identification, statementID: header.statementID)
          }
          guard candidates.count == 1 else {
            throw StatementImportRefusal.ambiguousAccount(
              identification: identification, statementID: header.statementID, accounts: candidates.map(\.id))
          }
          for currency in [header.account.currency] + header.balances.map(\.currency) where !currency.isEmpty && currency != account.currency.code {
            throw StatementImportRefusal.wrongCurrency(
              accountID: account.id, statementID: header.statementID, found: currency, expected: account.currency.code)
          }
          resolved[identification] = account.id
          current = (account, header.statementID)
        case .entry(let entry):
          guard let (account, statementID) = current else { return }
          if !entry.currency.isEmpty, entry.currency != account.currency.code {
            throw StatementImportRefusal.wrongCurrency(
              accountID: account.id, statementID: statementID, found: entry.currency, expected: account.currency.code)
          }
        case .end(let trailer):
          guard let (account, statementID) = current else { return }
          for balance in trailer.balances where !balance.currency.isEmpty && balance.currency != account.currency.code {
            throw StatementImportRefusal.wrongCurrency(
              accountID: account.id, statementID: statementID, found: balance.currency, expected: account.currency.code)
          }
          current = nil
        }
      }
    } catch let error as FormatError {
      throw StatementImportRefusal.malformed(error)
    }
    guard statements > 0 else { throw StatementImportRefusal.empty }
    return resolved
  }

  /// The second pass: stores the file's statements and entries. Runs on its own thread, with
  /// synchronous write transactions (LMDB serialises them with the store's writer thread).
  private func write(
    path: String, accounts: [String: String], sha256: String, bytes: Int64, fileName: String, importedBy: String
  ) throws -> StatementImportOutcome {
    let importTime = self.now()
    var nextSequence = try self.store.withReadTransaction { txn in try Self.lastSequence(txn) } + 1
    var tracker = ContinuityTracker()
    var pendingEntries: [StoredStatementEntry] = []
    // Their transaction details: a batch booking may carry thousands each, so a commit is also
    // bounded by details (``Limits/statementDetailsPerCommit``), not only by entries.
    var pendingDetails = 0
    var pendingStatements: [StoredStatement] = []
    var statements: [StoredStatement] = []
    var current: StoredStatement?
    var currentHeader: StatementHeader?
    var nextIndex: UInt32 = 0
    // Per statement: how many identical entries without a reference came before.
    var identical: [[UInt8]: UInt32] = [:]

    // Entries stored per statement (a duplicate is counted, not stored, and takes no index).
    var storedCount: [UInt64: UInt32] = [:]

    func flush() throws {
      guard !pendingEntries.isEmpty || !pendingStatements.isEmpty else { return }
      try self.store.withWriteTransaction { txn in
        for item in pendingEntries {
          let dedup = StatementKeys.dedup(item.accountID, item.entry, ordinal: item.ordinal)
          if try txn.get(dedup, in: .statementEntryKeys) != nil { continue }
          let index = storedCount[item.statementSequence, default: 0]
          let key = StatementKeys.entry(item.statementSequence, index)
          try txn.put(key, StatementKeys.encode(item.entry, accountID: item.accountID, ordinal: item.ordinal), in: .statementEntries)
          try txn.put(dedup, key, in: .statementEntryKeys)
          storedCount[item.statementSequence] = index + 1
        }
        var head = RecordWriter(capacity: 8)
        head.write(nextSequence - 1)
        try txn.put(StatementKeys.sequenceKey, head.bytes, in: .meta)
        for statement in pendingStatements {
          try txn.put(StatementKeys.statement(statement.sequence), StatementKeys.encode(statement), in: .statements)
        }
      }
      pendingEntries.removeAll(keepingCapacity: true)
      pendingDetails = 0
      pendingStatements.removeAll(keepingCapacity: true)
    }

    try StatementFiles.read(.file(path)) { event in
      let breaks = tracker.take(event)
      switch event {
      case .begin(let header):
        let accountID = accounts[header.account.identification] ?? header.account.identification
        current = StoredStatement(
          sequence: nextSequence, accountID: accountID, format: header.format, bankStatementID: header.statementID,
          messageID: header.messageID, sequenceNumber: header.sequenceNumber, page: header.page, importTime: importTime)
        current?.fileName = fileName
        current?.fileSHA256 = sha256
        current?.importedBy = importedBy
        currentHeader = header
        nextSequence += 1
        nextIndex = 0
        identical.removeAll(keepingCapacity: true)
      case .entry(let entry):
        guard var statement = current else { return }
        var ordinal: UInt32 = 0
        if entry.accountServicerReference.isEmpty {
          let digest = Array(SHA256.hash(data: StatementKeys.encode(entry)))
          ordinal = identical[digest, default: 0]
          identical[digest] = ordinal + 1
        }
        pendingEntries.append(
          StoredStatementEntry(
            statementSequence: statement.sequence, index: nextIndex, accountID: statement.accountID, entry: entry, ordinal: ordinal))
        pendingDetails += entry.details.count
        nextIndex += 1
        statement.entries += 1
        if !entry.bookingDate.isEmpty {
          if statement.fromDate.isEmpty || entry.bookingDate < statement.fromDate { statement.fromDate = entry.bookingDate }
          if entry.bookingDate > statement.toDate { statement.toDate = entry.bookingDate }
        }
        current = statement
        if pendingEntries.count >= Limits.statementEntriesPerCommit || pendingDetails >= Limits.statementDetailsPerCommit {
          // The statement is written unfinished with its first entries: a crash before the
          // import's last transaction leaves it for the start-up sweep.
          if let statement = current { pendingStatements.append(statement) }
          try flush()
        }
      case .end(let trailer):
        guard var statement = current, let header = currentHeader else { return }
        var whole = BankStatement(header: header)
        whole.trailer = trailer
        statement.opening = StatementContinuity.opening(whole)
        statement.closing = StatementContinuity.closing(whole)
        statement.breaks = breaks.map { item in
          var item = item
          item.account = statement.accountID
          return item
        }
        statements.append(statement)
        pendingStatements.append(statement)
        current = nil
        if pendingEntries.count >= Limits.statementEntriesPerCommit || pendingStatements.count >= Limits.statementEntriesPerCommit {
          try flush()
        }
      }
    }
    try flush()

    // The last transaction: counts, continuity across imports, visibility, file digest,
    // journal and alerts, all at once.
    let finished = try self.store.withWriteTransaction { txn -> (statements: [StoredStatement], receipt: JournalReceipt, entries: Int, duplicates: Int) in
      var finished: [StoredStatement] = []
      var seenInFile: Set<String> = []
      var alerts = 0
      var entries = 0
      var duplicates = 0
      for planned in statements {
        var statement = planned
        let stored = Int(storedCount[statement.sequence] ?? 0)
        statement.duplicates = statement.entries - stored
        statement.entries = stored
        entries += stored
        duplicates += statement.duplicates
        if [.camt053, .mt940].contains(statement.format) {
          let last = try txn.get(StatementKeys.last(statement.accountID), in: .meta).map(StatementKeys.decodeLast)
          // A statement older than the account's last one (a re-export, the same day in the
          // other format) is neither checked against it nor moves it back.
          let isNext = last.map { Self.follows(statement, $0) } ?? true
          if !seenInFile.contains(statement.accountID), let last, isNext {
            statement.breaks += Self.breaks(statement, after: last)
          }
          seenInFile.insert(statement.accountID)
          if isNext { try txn.put(
            StatementKeys.last(statement.accountID),
            StatementKeys.encode(
              StatementKeys.Last(
                bankStatementID: statement.bankStatementID, sequenceNumber: statement.sequenceNumber, page: statement.page,
                closing: statement.closing)),
            in: .meta) }
        }
        statement.complete = true
        try txn.put(StatementKeys.statement(statement.sequence), StatementKeys.encode(statement), in: .statements)
        try txn.put(StatementKeys.byAccount(statement.accountID, statement.sequence), [], in: .statementsByAccount)
        for item in statement.breaks {
          alerts += 1
          if alerts <= Limits.maxBreakAlertsPerImport {
            try AlertLog.raise(
              &txn, at: importTime, severity: .warning, kind: .reconciliationBreak, accountID: statement.accountID,
              message: "statement \(statement.bankStatementID) (\(statement.id)): \(item.message)",
              details: ["break": item.kind.rawValue, "statement_id": statement.id, "file_sha256": sha256])
          }
        }
        finished.append(statement)
      }
      let total = finished.reduce(0) { $0 + $1.breaks.count }
      if total > Limits.maxBreakAlertsPerImport {
        try AlertLog.raise(
          &txn, at: importTime, severity: .warning, kind: .reconciliationBreak, accountID: finished.first?.accountID ?? "",
          message: "\(total - Limits.maxBreakAlertsPerImport) more continuity breaks in file \(LogText.prefix(fileName, maxBytes: 128)) than alerts raised",
          details: ["file_sha256": sha256])
      }
      guard let digest = Hex.decode(sha256) else { throw StoreError(code: .other, message: "file digest is not hex") }
      try txn.put(
        digest,
        StatementKeys.encode(
          StatementFileRecord(statementSequences: finished.map(\.sequence), entries: entries, duplicates: duplicates, fileBytes: bytes)),
        in: .statementFiles)
      let receipt = try AuditJournal.append(
        &txn, at: importTime, principal: importedBy, action: "statement.imported", object: finished.first?.id ?? sha256,
        details: [
          "file_name": LogText.prefix(fileName, maxBytes: 256), "file_sha256": sha256, "file_bytes": String(bytes),
          "statements": finished.map(\.id).prefix(100).joined(separator: ","), "statement_count": String(finished.count),
          "entries": String(entries), "duplicate_entries": String(duplicates), "breaks": String(total),
        ])
      return (finished, receipt, entries, duplicates)
    }
    return StatementImportOutcome(
      statements: finished.statements, entries: finished.entries, duplicates: finished.duplicates, duplicateFile: false, fileSHA256: sha256,
      fileBytes: bytes, receipt: finished.receipt)
  }

  /// Whether `statement` comes after the account's last one: by (number, page) when both are
  /// numbered, else by closing date; when neither tells, it is taken as the next.
  static func follows(_ statement: StoredStatement, _ last: StatementKeys.Last) -> Bool {
    if let number = statement.sequenceNumber, let before = last.sequenceNumber {
      return (number, statement.page ?? 0) > (before, last.page ?? 0)
    }
    if let date = statement.closing?.date, let before = last.closing?.date, !date.isEmpty, !before.isEmpty {
      return date > before
    }
    return true
  }

  /// Continuity against the account's previous statement (stored by an earlier import).
  static func breaks(_ statement: StoredStatement, after last: StatementKeys.Last) -> [ContinuityBreak] {
    var breaks: [ContinuityBreak] = []
    if let opening = statement.opening, let closing = last.closing, opening.amountMinor != closing.amountMinor {
      breaks.append(
        ContinuityBreak(
          kind: .openingNotPreviousClosing, account: statement.accountID, statementID: statement.bankStatementID,
          message: "opens at \(opening.amountMinor), the previous statement (\(last.bankStatementID)) closed at \(closing.amountMinor)"))
    }
    if let number = statement.sequenceNumber, let before = last.sequenceNumber, number != before + 1,
      !(number == before && statement.page != last.page)
    {
      breaks.append(
        ContinuityBreak(
          kind: .sequenceGap, account: statement.accountID, statementID: statement.bankStatementID,
          message: number > before + 1
            ? "is number \(number), the previous one \(before): \(number - before - 1) missing"
            : "is number \(number), after number \(before)"))
    }
    return breaks
  }

  static func lastSequence(_ txn: some ReadableTransaction) throws -> UInt64 {
    guard let bytes = try txn.get(StatementKeys.sequenceKey, in: .meta) else { return 0 }
    var reader = RecordReader(bytes)
    let sequence = try reader.readUInt64()
    try reader.finish()
    return sequence
  }

  /// Removes what an import cut short left: statements not complete, their entries and their
  /// deduplication keys (and entries of a sequence no statement record names). Runs at start,
  /// before serving, and again before every import, so one that failed part way is cleared
  /// before the next can be deduplicated against it. Deletes in chunks, so a large leftover
  /// does not need one huge transaction.
  @discardableResult
  public func removeUnfinishedImports() throws -> Int {
    var unfinished: [UInt64] = []
    var highest: UInt64 = 0
    try self.store.withReadTransaction { txn in
      try txn.scan(.statements) { _, value in
        let statement = try StatementKeys.decodeStatement(value)
        highest = max(highest, statement.sequence)
        if !statement.complete { unfinished.append(statement.sequence) }
        return true
      }
    }
    var removed = 0
    // Entries past every statement record: written by a flush whose statement record was
    // lost with it (cannot happen with one transaction per flush, but cheap to check).
    var orphanSequences: Set<UInt64> = []
    try self.store.withReadTransaction { txn in
      try txn.scanInPlace(.statementEntries, from: StatementKeys.entry(highest + 1, 0)) { key, _ in
        let sequence = key.prefix(8).reduce(UInt64(0)) { ($0 << 8) | UInt64($1) }
        orphanSequences.insert(sequence)
        return orphanSequences.count < 1_000
      }
    }
    for sequence in unfinished + orphanSequences.sorted() {
      var done = false
      while !done {
        done = try self.store.withWriteTransaction { txn -> Bool in
          var keys: [[UInt8]] = []
          let prefix = StatementKeys.statement(sequence)
          try txn.scan(.statementEntries, from: StatementKeys.entry(sequence, 0)) { key, value in
            guard key.count == 12, key.starts(with: prefix) else { return false }
            let dedup = try StatementKeys.dedup(record: value)
            if try txn.get(dedup, in: .statementEntryKeys) == key { keys.append(dedup) }
            keys.append(key)
            return keys.count < Limits.statementEntriesPerCommit * 2
          }
          for key in keys {
            if key.count == 12, key.starts(with: prefix) {
              _ = try txn.delete(key, in: .statementEntries)
              removed += 1
            } else {
              _ = try txn.delete(key, in: .statementEntryKeys)
            }
          }
          if keys.count < Limits.statementEntriesPerCommit * 2 {
            if try txn.delete(StatementKeys.statement(sequence), in: .statements) { removed += 1 }
            return true
          }
          return false
        }
      }
    }
    return removed
  }

  // MARK: Reading

  public func statement(_ sequence: UInt64) throws -> StoredStatement? {
    try self.store.withReadTransaction { txn in
      guard let bytes = try txn.get(StatementKeys.statement(sequence), in: .statements) else { return nil }
      let statement = try StatementKeys.decodeStatement(bytes)
      return statement.complete ? statement : nil
    }
  }

  /// Statements in import order after `after`, optionally one account's; at most `limit`.
  public func statements(accountID: String?, after: UInt64?, limit: Int) throws -> (statements: [StoredStatement], more: Bool) {
    // A page after the last possible sequence is empty (the token is the client's).
    if after == .max { return ([], false) }
    let first = (after ?? 0) + 1
    return try self.store.withReadTransaction { txn in
      var found: [StoredStatement] = []
      var more = false
      func take(_ sequence: UInt64) throws -> Bool {
        guard let bytes = try txn.get(StatementKeys.statement(sequence), in: .statements) else { return true }
        let statement = try StatementKeys.decodeStatement(bytes)
        guard statement.complete else { return true }
        if found.count == limit {
          more = true
          return false
        }
        found.append(statement)
        return true
      }
      if let accountID {
        let prefix = StatementKeys.accountPrefix(accountID)
        let start = StatementKeys.byAccount(accountID, first)
        try txn.scan(.statementsByAccount, from: start) { key, _ in
          guard key.count == prefix.count + 8, key.starts(with: prefix) else { return false }
          var reader = RecordReader(Array(key.suffix(8)))
          return try take(try reader.readUInt64())
        }
      } else {
        try txn.scan(.statements, from: StatementKeys.statement(first)) { key, _ in
          var reader = RecordReader(key)
          return try take(try reader.readUInt64())
        }
      }
      return (found, more)
    }
  }

  /// A statement's entries from index `from`, at most `limit`.
  public func entries(of sequence: UInt64, from index: UInt32, limit: Int) throws -> (entries: [StoredStatementEntry], more: Bool) {
    try self.store.withReadTransaction { txn in
      var found: [StoredStatementEntry] = []
      var more = false
      let prefix = StatementKeys.statement(sequence)
      try txn.scan(.statementEntries, from: StatementKeys.entry(sequence, index)) { key, value in
        guard key.count == 12, key.starts(with: prefix) else { return false }
        if found.count == limit {
          more = true
          return false
        }
        var reader = RecordReader(Array(key.suffix(4)))
        let index = try reader.readUInt32()
        let (accountID, entry) = try StatementKeys.decodeEntry(value)
        found.append(StoredStatementEntry(statementSequence: sequence, index: index, accountID: accountID, entry: entry))
        return true
      }
      return (found, more)
    }
  }
}

/// Runs imports one at a time, in arrival order.
final class ImportQueue: Sendable {
  private let state = Mutex<(busy: Bool, waiting: [CheckedContinuation<Void, Never>])>((false, []))

  func run<Result: Sendable>(_ body: () async throws -> Result) async throws -> Result {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let go = self.state.withLock { state -> Bool in
        if state.busy {
          state.waiting.append(continuation)
          return false
        }
        state.busy = true
        return true
      }
      if go { continuation.resume() }
    }
    defer {
      let next = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
        if state.waiting.isEmpty {
          state.busy = false
          return nil
        }
        return state.waiting.removeFirst()
      }
      next?.resume()
    }
    return try await body()
  }
}
