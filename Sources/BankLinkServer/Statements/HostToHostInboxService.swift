import BankLinkBanks
import BankLinkCore
import BankLinkStore
import Foundation
import Logging
import ServiceLifecycle

/// Polls the host-to-host connector's inbox and acts on what it brought beyond the feeds that
/// account sync and the payment submitter read: each statement file is stored and reconciled
/// (as `ImportStatement` would), and each quarantined file raises a `bank_file_quarantined`
/// alert. The connector numbers these events; the last one acted on is kept in the store
/// (`h2h_event_cursor`), written with the alert it raised, so after a crash each event is acted
/// on once (a statement imported twice is recognised by its digest).
public struct HostToHostInboxService: Service {
  static let cursorKey = Array("h2h_event_cursor".utf8)
  /// Events taken per round.
  static let eventsPerRound = 64

  let connector: HostToHostConnector
  let server: GatewayServer
  let store: Store
  let intervalMilliseconds: Int64
  let logger: Logger
  let now: @Sendable () -> Instant

  public init(
    connector: HostToHostConnector, server: GatewayServer, store: Store, intervalMilliseconds: Int64, logger: Logger,
    now: @escaping @Sendable () -> Instant
  ) {
    self.connector = connector
    self.server = server
    self.store = store
    self.intervalMilliseconds = intervalMilliseconds
    self.logger = logger
    self.now = now
  }

  public func run() async throws {
    let backoff = RetryBackoff(baseMilliseconds: self.intervalMilliseconds)
    var failures = 0
    while !Task.isCancelled && !Task.isShuttingDownGracefully {
      do {
        try await self.round()
        failures = 0
      } catch {
        failures += 1
        ConnectorErrors.count(error, operation: "inbox")
        self.logger.error("the inbox could not be processed; retrying", metadata: ["error": "\(error)", "consecutive_failures": "\(failures)"])
      }
      let delay = failures == 0 ? self.intervalMilliseconds : backoff.delay(afterFailures: failures)
      try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(delay)) }
    }
  }

  /// Refuses to start on a connector store behind the daemon's own: a daemon store restored
  /// from a backup (which holds only `data.mdb`) beside an older or empty `connector-files`
  /// would skip what the connector numbers anew (status reports, events and each account's
  /// booked entries below the saved positions are never read). Returns a description of the
  /// mismatch, or nil.
  public static func checkPositions(connector: HostToHostConnector, store: Store) throws -> String? {
    let issued = try connector.nextNumbers()
    // The daemon's positions, from one snapshot.
    let (acted, statusCursor, feeds) = try store.withReadTransaction { txn in
      let acted: UInt64 = try txn.get(Self.cursorKey, in: .meta).map { bytes in
        var reader = RecordReader(bytes)
        return try reader.readUInt64()
      } ?? 0
      let statusCursor = try txn.get(PaymentLedger.statusCursorKey, in: .meta).map { String(decoding: $0, as: UTF8.self) }
      let feeds = try issued.entries.keys.sorted().map { account in
        (account, try AccountCache.decodeSyncState(try txn.get(AccountCache.accountKey(account), in: .syncCursors)).cursor)
      }
      return (acted, statusCursor, feeds)
    }
    var problems: [String] = []
    if acted >= issued.event {
      problems.append("the daemon has acted on inbox events up to \(acted), the connector's store has issued \(issued.event - 1)")
    }
    if let read = statusCursor.flatMap({ UInt64($0) }), read > issued.statusReport {
      problems.append("the daemon has read status reports up to \(read), the connector's store has issued \(issued.statusReport)")
    }
    // Each account's feed of booked entries likewise (account sync's cursor).
    for (account, cursor) in feeds {
      if let read = cursor.flatMap({ UInt64($0) }), let next = issued.entries[account], read > next {
        problems.append("the daemon has read \(account)'s booked entries up to \(read), the connector's store has issued \(next)")
      }
    }
    return problems.isEmpty ? nil : problems.joined(separator: "; ")
  }

  /// One poll of the inbox, then the events it produced (and any left from before a crash).
  /// The events are acted on even when the poll fails (the inbox folder unreadable, say); the
  /// poll's error is thrown afterwards, for the retry back-off.
  public func round() async throws {
    var pollError: (any Error)?
    do {
      let polled = try await self.connector.pollInbox()
      ConnectorErrors.count(kind: "malformed", operation: "inbox_quarantined", by: polled.quarantined)
      ConnectorErrors.count(kind: "other", operation: "inbox_file", by: polled.failed)
      if polled.processed + polled.quarantined + polled.moved + polled.failed > 0 {
        self.logger.info(
          "inbox files processed",
          metadata: [
            "processed": "\(polled.processed)", "quarantined": "\(polled.quarantined)", "moved": "\(polled.moved)",
            "failed": "\(polled.failed)",
          ])
      }
      for stuck in polled.stuck { try await self.raiseStuck(stuck) }
    } catch {
      pollError = error
    }
    try await self.actOnEvents()
    if let pollError { throw pollError }
  }

  /// A file that has failed several polls in a row: an alert (once per run of the daemon; the
  /// file is still tried at every poll).
  private func raiseStuck(_ stuck: HostToHostConnector.StuckFile) async throws {
    self.logger.error("inbox file cannot be processed", metadata: ["file": "\(LogText.prefix(stuck.name))", "error": "\(LogText.prefix(stuck.error, maxBytes: 512))"])
    let now = self.now()
    _ = try await self.store.write { txn in
      try AlertLog.raise(
        &txn, at: now, severity: .warning, kind: .bankFileQuarantined,
        message:
          "bank file \(stuck.name) could not be processed in \(HostToHostLimits.failedPollsBeforeAlert) polls in a row "
          + "(it is tried at every poll; the files after it are processed): \(LogText.prefix(stuck.error, maxBytes: 512))",
        details: ["file": stuck.name, "error": LogText.prefix(stuck.error, maxBytes: 512)])
    }
  }

  private func actOnEvents() async throws {
    // A statement is stored against the cache's accounts: until account sync has stored the
    // connector's, its events wait (the files are already safe in the archive).
    let known = try self.server.cachedAccountIDs()
    guard self.connector.configuration.accounts.allSatisfy({ known.contains($0.id) }) else { return }
    while true {
      let cursor = try self.store.withReadTransaction { txn -> UInt64 in
        guard let bytes = try txn.get(Self.cursorKey, in: .meta) else { return 0 }
        var reader = RecordReader(bytes)
        return try reader.readUInt64()
      }
      let events = try self.connector.events(after: cursor, limit: Self.eventsPerRound)
      guard !events.isEmpty else { return }
      for event in events {
        guard try await self.act(on: event) else { return }
      }
    }
  }

  /// Acts on one event; false when it must wait for a later round.
  private func act(on event: HostToHostConnector.InboxEvent) async throws -> Bool {
    switch event {
    case .statement(_, let path, let fileName, let sha256, let bytes):
      guard FileManager.default.fileExists(atPath: path) else {
        // Recorded but not yet moved (a crash in between): the next poll moves it.
        if FileManager.default.fileExists(atPath: self.connector.configuration.inbox + "/" + fileName) { return false }
        // Gone from the archive before it was stored: said once, and the next event goes on.
        try await self.advance(to: event.sequence) { txn, now in
          try AlertLog.raise(
            &txn, at: now, severity: .warning, kind: .bankFileQuarantined,
            message: "statement file \(fileName) left the archive before it was stored; import it by hand if it is found",
            details: ["file": fileName, "sha256": sha256, "path": path])
        }
        return true
      }
      do {
        let outcome = try await self.server.importBankStatement(path: path, sha256: sha256, bytes: bytes, fileName: fileName)
        self.logger.info(
          "statement file from the inbox stored",
          metadata: [
            "file": "\(LogText.prefix(fileName))", "statements": "\(outcome.statements.count)", "entries": "\(outcome.entries)",
            "duplicate_entries": "\(outcome.duplicates)", "duplicate_file": "\(outcome.duplicateFile)",
          ])
        try await self.advance(to: event.sequence)
      } catch let refusal as StatementImportRefusal {
        // The connector read the file, the statement store refuses it (e.g. an account the
        // cache does not know yet): an alert, and the file stays in the archive for a manual
        // import.
        try await self.advance(to: event.sequence) { txn, now in
          try AlertLog.raise(
            &txn, at: now, severity: .warning, kind: .bankFileQuarantined,
            message: "statement file \(fileName) from the inbox was not stored: \(refusal)",
            details: ["file": fileName, "sha256": sha256, "path": path])
        }
      }
      return true
    case .quarantined(_, let fileName, let sha256, let reason):
      self.logger.warning("inbox file quarantined", metadata: ["file": "\(LogText.prefix(fileName))", "reason": "\(LogText.prefix(reason, maxBytes: 512))"])
      try await self.advance(to: event.sequence) { txn, now in
        try AlertLog.raise(
          &txn, at: now, severity: .warning, kind: .bankFileQuarantined, message: "bank file \(fileName) quarantined: \(reason)",
          details: ["file": fileName, "sha256": sha256, "reason": reason])
      }
      return true
    }
  }

  private func advance(
    to sequence: UInt64, also: (@Sendable (inout WriteTransaction, Instant) throws -> Void)? = nil
  ) async throws {
    let now = self.now()
    try await self.store.write { txn in
      var value = RecordWriter(capacity: 8)
      value.write(sequence)
      try txn.put(Self.cursorKey, value.bytes, in: .meta)
      try also?(&txn, now)
    }
  }
}
