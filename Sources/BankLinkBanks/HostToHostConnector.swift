import BankLinkCore
import BankLinkFormats
import BankLinkStore
import Crypto
import Foundation
import Synchronization

/// Named limits of the host-to-host file connector.
public enum HostToHostLimits {
  /// Largest inbox file processed; a larger one is quarantined unread.
  public static let maxInboxFileBytes: Int64 = 512 << 20
  /// Booked entries taken from one inbox file (they are held in memory while the file is
  /// processed, about 300 bytes each); a file with more is quarantined.
  public static let maxEntriesPerFile = 500_000
  /// Statements (or reports, or notifications) in one inbox file; a bank sends one per account
  /// and period, so a file with more is quarantined.
  public static let maxStatementsPerFile = 10_000
  /// Transaction statuses taken from one pain.002 (a status per transfer sent; files go out with
  /// at most ``maxTransfersPerFile`` transfers); a report with more is quarantined.
  public static let maxStatusesPerFile = 100_000
  /// Inbox files processed per poll, so one poll cannot hold the connector for long.
  public static let maxFilesPerPoll = 64
  /// Transfers in one outgoing pain.001 file.
  public static let maxTransfersPerFile = 10_000
  /// Files listed from the inbox per poll (the directory may hold more; they wait).
  public static let maxListedFiles = 10_000
  /// EndToEndIds remembered per sent message, for group-level pain.002 statuses.
  public static let maxRememberedTransfers = 10_000
  /// Bytes hashed of a file over ``maxInboxFileBytes``: it is refused by its size, so only its
  /// start names it (a sparse file of exabytes costs nothing to make and forever to hash).
  public static let oversizeFingerprintBytes: Int64 = 1 << 20
  /// Polls in a row a file may fail in (it cannot be opened, hashed or moved) before the daemon
  /// is told (``HostToHostConnector/PollOutcome/stuck``); it is still tried at every poll, and
  /// the files after it are processed meanwhile.
  public static let failedPollsBeforeAlert = 3
}

/// The bank reached through files, as most banks are in practice (SFTP drop folders, bank
/// gateways): payments go out as pain.001 files written to `outbox`; pain.002 status reports,
/// camt.052/053/054 and MT940 statements come back in `inbox`.
///
/// **Outbox.** One file per submission round, named by its `MsgId`: written to a hidden
/// temporary name, fsynced, renamed, and the directory fsynced. A file is never rewritten: a
/// resend after a crash carries the same MsgId (derived from the submissions' own message ids)
/// and EndToEndIds, so the bank deduplicates it; a file still in the outbox is not written again.
///
/// **Inbox.** Each poll takes the files that have settled (not hidden, not `.tmp`/`.part`, not
/// modified for `settleMilliseconds`) in name order. A file is fingerprinted (SHA-256); what it
/// brings (status reports, booked entries, the balance, and an event for the daemon) is stored
/// in **one** transaction with the fingerprint, and only then is the file moved to `archive/`.
/// A kill at any point leaves either nothing stored (the file is processed again) or the
/// fingerprint stored (the file is only moved): each file is processed exactly once. A file
/// that cannot be read goes to `quarantine/` with a `.reason` note beside it, and an event.
///
/// **Balances and booking times.** Files give booking *dates*. An entry's booking time here is
/// when its file was processed, and the account's balance (the last statement's closing
/// balance plus the entries notified since) is as of that same time: a balance includes
/// exactly the entries booked at or before its time, which is what releasing reservations
/// relies on. The bank's booking date stays on the entry (`value_date`) and in the statement.
public final class HostToHostConnector: BankConnector {
  public struct Configuration: Sendable {
    public var outbox: String
    public var inbox: String
    /// The connector's own state (fingerprints, feeds), apart from the daemon's cache.
    public var stateDirectory: String
    public var accounts: [Account]
    public var painVersion: CreditTransferMessage.Version
    public var initiatingPartyName: String
    /// A file modified more recently than this is still being uploaded: left for a later poll.
    public var settleMilliseconds: Int64
    public var mapSizeMiB: Int

    public init(
      outbox: String, inbox: String, stateDirectory: String, accounts: [Account], painVersion: CreditTransferMessage.Version = .v03,
      initiatingPartyName: String = "BankLink", settleMilliseconds: Int64 = 1_000, mapSizeMiB: Int = 1_024
    ) {
      self.outbox = outbox
      self.inbox = inbox
      self.stateDirectory = stateDirectory
      self.accounts = accounts
      self.painVersion = painVersion
      self.initiatingPartyName = initiatingPartyName
      self.settleMilliseconds = settleMilliseconds
      self.mapSizeMiB = mapSizeMiB
    }
  }

  /// What the inbox brought that the daemon acts on beyond the feeds.
  public enum InboxEvent: Sendable, Hashable {
    /// A statement file, now at `path` (in `archive/`).
    case statement(sequence: UInt64, path: String, fileName: String, sha256: String, bytes: Int64)
    /// A file refused and moved to `quarantine/`.
    case quarantined(sequence: UInt64, fileName: String, sha256: String, reason: String)

    public var sequence: UInt64 {
      switch self {
      case .statement(let sequence, _, _, _, _), .quarantined(let sequence, _, _, _): sequence
      }
    }
  }

  public struct PollOutcome: Sendable, Hashable {
    public var processed = 0
    public var quarantined = 0
    /// Files already processed before a crash, only moved now.
    public var moved = 0
    /// Files this poll could not process (they could not be opened, read or moved); they are
    /// tried again at the next poll, and did not stop the files after them.
    public var failed = 0
    /// Files that have now failed ``HostToHostLimits/failedPollsBeforeAlert`` polls in a row,
    /// with the last error: reported once, for an alert.
    public var stuck: [StuckFile] = []
  }

  public struct StuckFile: Sendable, Hashable {
    public var name: String
    public var error: String
  }

  static let filesDB = Database("h2h_files")
  static let entriesDB = Database("h2h_entries")
  static let entryKeysDB = Database("h2h_entry_keys")
  static let balancesDB = Database("h2h_balances")
  static let reportsDB = Database("h2h_reports")
  static let eventsDB = Database("h2h_events")
  static let sentDB = Database("h2h_sent")
  static let uncoveredDB = Database("h2h_uncovered")
  static let schemaVersion: UInt32 = 1
  static let reportSequenceKey = Array("report_sequence".utf8)
  static let eventSequenceKey = Array("event_sequence".utf8)

  public let configuration: Configuration
  let store: Store
  let clock: @Sendable () -> Instant
  /// Polls run one at a time (the service's loop and a test's call never overlap).
  private let polling = Mutex(false)
  /// Polls in a row each inbox file has failed in, by name (only names still listed are kept).
  private let failedPolls = Mutex<[String: Int]>([:])

  public init(configuration: Configuration, clock: @escaping @Sendable () -> Instant) throws {
    self.configuration = configuration
    self.clock = clock
    for (directory, key) in [
      (configuration.outbox, "outbox"), (configuration.inbox, "inbox"), (Self.archive(configuration.inbox), "inbox"),
      (Self.quarantine(configuration.inbox), "inbox"),
    ] {
      do {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
      } catch {
        throw FolderProblem(key: key, path: directory, reason: "it cannot be created (\(error.localizedDescription))")
      }
      // A folder that exists but cannot be written (a read-only mount, a sandbox without it in
      // its writable paths) would pass the line above and fail every submission and every
      // move later, looking like a bank outage: refused now, naming it.
      guard access(directory, W_OK) == 0 else {
        throw FolderProblem(key: key, path: directory, reason: String(cString: strerror(errno)))
      }
    }
    self.store = try Store(
      configuration: .init(
        directory: configuration.stateDirectory, mapSizeMiB: configuration.mapSizeMiB, schemaVersion: Self.schemaVersion,
        databases: [
          Self.filesDB, Self.entriesDB, Self.entryKeysDB, Self.balancesDB, Self.reportsDB, Self.eventsDB, Self.sentDB, Self.uncoveredDB,
        ]))
  }

  static func archive(_ inbox: String) -> String { inbox + "/archive" }
  static func quarantine(_ inbox: String) -> String { inbox + "/quarantine" }

  // MARK: AccountInformationConnector

  public func listAccounts(deadline: ContinuousClock.Instant) async throws(BankError) -> [Account] {
    self.configuration.accounts
  }

  public func fetchBalance(accountID: String, deadline: ContinuousClock.Instant) async throws(BankError) -> LedgerBalance {
    guard let account = self.configuration.accounts.first(where: { $0.id == accountID }) else {
      throw BankError(.notFound, "no account \(accountID) in connector.files.accounts")
    }
    let stored = try self.reading { txn in try txn.get(Array(accountID.utf8), in: Self.balancesDB) }
    guard let stored else { throw BankError(.unavailable, "no statement with a balance of \(accountID) has arrived in the inbox yet") }
    do {
      var reader = RecordReader(stored)
      let minor = try reader.readInt64()
      let asOf = Instant(millisecondsSinceEpoch: try reader.readInt64())
      // (then the date of the closing balance it stands on)
      return LedgerBalance(accountID: accountID, ledger: Money(minorUnits: minor, currency: account.currency), asOf: asOf)
    } catch {
      throw BankError(.malformed, "stored balance of \(accountID) is unreadable: \(error)")
    }
  }

  public func fetchTransactions(
    accountID: String, after cursor: String?, limit: Int, deadline: ContinuousClock.Instant
  ) async throws(BankError) -> TransactionFeedPage {
    guard self.configuration.accounts.contains(where: { $0.id == accountID }) else {
      throw BankError(.notFound, "no account \(accountID) in connector.files.accounts")
    }
    var start: UInt64 = 0
    if let cursor {
      guard let value = UInt64(cursor) else { throw BankError(.rejected, "cursor '\(cursor)' is not one the connector issued") }
      start = value
    }
    let prefix = Array(accountID.utf8) + [0]
    return try self.reading { txn in
      var transactions: [BookedTransaction] = []
      var next = start
      var more = false
      try txn.scan(Self.entriesDB, from: prefix + Self.bigEndian(start)) { key, value in
        guard key.starts(with: prefix) else { return false }
        if transactions.count == max(1, limit) {
          more = true
          return false
        }
        transactions.append(try BookedTransaction(record: value))
        next = Self.sequence(key.suffix(8)) + 1
        return true
      }
      return TransactionFeedPage(transactions: transactions, nextCursor: String(next), hasMore: more)
    }
  }

  // MARK: PaymentInitiationConnector

  public func submitPayments(_ submissions: [PaymentSubmission], deadline: ContinuousClock.Instant) async throws(BankError)
    -> [SubmissionAcknowledgement]
  {
    guard !submissions.isEmpty else { return [] }
    guard submissions.count <= HostToHostLimits.maxTransfersPerFile else {
      throw BankError(.rejected, "\(submissions.count) transfers; one file holds at most \(HostToHostLimits.maxTransfersPerFile)")
    }
    let now = self.clock()
    // Which of these were put in a file before (a resend after a crash): each goes out in the
    // file it was first put in, never in a second file with another MsgId.
    let planned: [String: String] = try self.reading { txn in
      var planned: [String: String] = [:]
      for submission in submissions {
        if let file = try txn.get(Self.transferKey(submission.endToEndID), in: Self.sentDB) {
          planned[submission.endToEndID] = String(decoding: file, as: UTF8.self)
        }
      }
      return planned
    }
    let fresh = submissions.filter { planned[$0.endToEndID] == nil }
    var files = Set(planned.values)
    if !fresh.isEmpty {
      let messageID = Self.fileMessageID(fresh)
      let (bytes, blocks) = try self.paymentFile(fresh, messageID: messageID, now: now)
      // The file's bytes and which transfers it carries commit before the file is written:
      // after a crash the same file is written again, whatever round the resend comes in.
      do {
        try await self.store.write { txn in
          var record = RecordWriter(capacity: 64)
          for submission in fresh.prefix(HostToHostLimits.maxRememberedTransfers) { record.write(submission.endToEndID) }
          try txn.put(Array(messageID.utf8), record.bytes, in: Self.sentDB)
          for block in blocks {
            var members = RecordWriter(capacity: 64)
            for endToEndID in block.endToEndIDs.prefix(HostToHostLimits.maxRememberedTransfers) { members.write(endToEndID) }
            try txn.put(Self.blockKey(block.id), members.bytes, in: Self.sentDB)
          }
          for submission in fresh { try txn.put(Self.transferKey(submission.endToEndID), Array(messageID.utf8), in: Self.sentDB) }
          try txn.put(Self.fileKey(messageID), [0] + bytes, in: Self.sentDB)
        }
      } catch {
        throw BankError(.unavailable, "the connector's state cannot be written: \(error)")
      }
      files.insert(messageID)
    }
    for messageID in files.sorted() {
      do {
        let pending = try self.store.withReadTransaction { txn in try txn.get(Self.fileKey(messageID), in: Self.sentDB) }
        // Written before (the flag is set after the rename): the bank has it or will take it.
        guard let pending, pending.first == 0 else { continue }
        let path = self.configuration.outbox + "/" + messageID + ".xml"
        if !FileManager.default.fileExists(atPath: path) { try DurableFile.write(Array(pending.dropFirst()), to: path) }
        try await self.store.write { txn in try txn.put(Self.fileKey(messageID), [1], in: Self.sentDB) }
      } catch {
        throw BankError(.unavailable, "the outbox cannot be written: \(error)")
      }
    }
    return submissions.map {
      SubmissionAcknowledgement(messageID: $0.messageID, endToEndID: $0.endToEndID, duplicate: planned[$0.endToEndID] != nil, receivedAt: now)
    }
  }

  static func transferKey(_ endToEndID: String) -> [UInt8] { Array("e2e/".utf8) + Array(endToEndID.utf8) }
  static func fileKey(_ messageID: String) -> [UInt8] { Array("file/".utf8) + Array(messageID.utf8) }
  static func blockKey(_ paymentInformationID: String) -> [UInt8] { Array("pmtinf/".utf8) + Array(paymentInformationID.utf8) }

  /// The pain.001 file of `submissions`, and the EndToEndIds of each of its `PmtInf` blocks by
  /// `PmtInfId` (a pain.002 may give a status for a whole block).
  func paymentFile(
    _ submissions: [PaymentSubmission], messageID: String, now: Instant
  ) throws(BankError) -> (bytes: [UInt8], blocks: [(id: String, endToEndIDs: [String])]) {
    var transfers: [CreditTransferMessage.Transfer] = []
    for submission in submissions {
      guard let debtor = self.configuration.accounts.first(where: { $0.id == submission.debtorAccountID }) else {
        throw BankError(.rejected, "no account \(submission.debtorAccountID) in connector.files.accounts")
      }
      transfers.append(
        .init(
          instructionID: String(submission.messageID.prefix(Pain001Writer.maxIdentifierLength)), endToEndID: submission.endToEndID,
          amountMinor: submission.amount.minorUnits, currency: submission.amount.currency.code,
          debtorAccount: debtor.iban.isEmpty ? debtor.number : debtor.iban, debtorName: debtor.displayName,
          debtorAgentBIC: debtor.bankBIC, executionDate: submission.requestedExecutionDate, creditorName: submission.creditor.name,
          creditorAccount: submission.creditor.accountNumber, creditorAgentBIC: submission.creditor.bankBIC,
          creditorCountry: submission.creditorCountry, remittance: submission.remittanceInformation))
    }
    do {
      let bytes = try Pain001Writer.write(
        CreditTransferMessage(
          version: self.configuration.painVersion, messageID: messageID, createdAt: now.isoTimestamp,
          initiatingPartyName: self.configuration.initiatingPartyName, transfers: transfers))
      let blocks = Pain001Writer.paymentInformationGroups(transfers).enumerated().map { number, members in
        (Pain001Writer.paymentInformationID(messageID: messageID, number: number + 1), members.map { transfers[$0].endToEndID })
      }
      return (bytes, blocks)
    } catch {
      throw BankError(.rejected, "the payment file cannot be written: \(error)")
    }
  }

  public func fetchStatusReports(after cursor: String?, limit: Int, deadline: ContinuousClock.Instant) async throws(BankError)
    -> StatusReportPage
  {
    var start: UInt64 = 0
    if let cursor {
      guard let value = UInt64(cursor) else { throw BankError(.rejected, "cursor '\(cursor)' is not one the connector issued") }
      start = value
    }
    return try self.reading { txn in
      var reports: [PaymentStatusReport] = []
      var next = start
      var more = false
      try txn.scan(Self.reportsDB, from: Self.bigEndian(start)) { key, value in
        if reports.count == max(1, limit) {
          more = true
          return false
        }
        reports.append(try PaymentStatusReport(record: value))
        next = Self.sequence(key) + 1
        return true
      }
      return StatusReportPage(reports: reports, nextCursor: String(next), hasMore: more)
    }
  }

  /// The file's MsgId: the submission's own message id when it travels alone; for a round of
  /// several, a digest of their message ids (the same round resent gives the same file name).
  static func fileMessageID(_ submissions: [PaymentSubmission]) -> String {
    if submissions.count == 1, let only = submissions.first, only.messageID.utf8.count <= Pain001Writer.maxIdentifierLength,
      only.messageID.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2D })
    {
      return only.messageID
    }
    var hash = SHA256()
    for submission in submissions {
      hash.update(data: Array(submission.messageID.utf8))
      hash.update(data: [0])
    }
    return "BLR" + String(Hex.encode(hash.finalize()).prefix(32))
  }

  // MARK: Events

  /// Inbox events after `sequence` (0: from the first), at most `limit`.
  public func events(after sequence: UInt64, limit: Int) throws -> [InboxEvent] {
    try self.store.withReadTransaction { txn in
      var events: [InboxEvent] = []
      try txn.scan(Self.eventsDB, from: Self.bigEndian(sequence + 1)) { key, value in
        guard events.count < max(1, limit) else { return false }
        var reader = RecordReader(value)
        let kind = try reader.readUInt8()
        let number = Self.sequence(key)
        if kind == 1 {
          events.append(
            .statement(
              sequence: number, path: try reader.readString(), fileName: try reader.readString(), sha256: try reader.readString(),
              bytes: try reader.readInt64()))
        } else {
          events.append(
            .quarantined(sequence: number, fileName: try reader.readString(), sha256: try reader.readString(), reason: try reader.readString()))
        }
        return true
      }
      return events
    }
  }

  // MARK: Inbox

  /// Processes the inbox files that are ready, oldest name first, at most
  /// ``HostToHostLimits/maxFilesPerPoll``.
  public func pollInbox() async throws -> PollOutcome {
    let busy = self.polling.withLock { busy in
      defer { busy = true }
      return busy
    }
    guard !busy else { return PollOutcome() }
    defer { self.polling.withLock { $0 = false } }
    var outcome = PollOutcome()
    let ready = try self.readyFiles(limit: HostToHostLimits.maxFilesPerPoll)
    // One file that cannot be processed (unreadable, a folder it cannot be moved to) must not
    // hold back the files after it: it is counted, tried again next poll, and reported once it
    // has failed several polls in a row.
    var failures = self.failedPolls.withLock { $0 }.filter { ready.contains($0.key) }
    for name in ready {
      do {
        try await self.process(name, &outcome)
        failures[name] = nil
      } catch {
        outcome.failed += 1
        let polls = (failures[name] ?? 0) + 1
        failures[name] = polls
        if polls == HostToHostLimits.failedPollsBeforeAlert { outcome.stuck.append(StuckFile(name: name, error: "\(error)")) }
      }
    }
    self.failedPolls.withLock { $0 = failures }
    return outcome
  }

  /// The first `limit` files of the inbox by name that are ready: regular, not hidden, not
  /// `.tmp`/`.part`, not modified for the settle time. Every entry's name is listed, but files
  /// are examined (a `stat` each) in name order, among the first
  /// ``HostToHostLimits/maxListedFiles``, only until `limit` are found.
  func readyFiles(limit: Int) throws -> [String] {
    let inbox = self.configuration.inbox
    let now = Date()
    var names: [String] = []
    for name in try FileManager.default.contentsOfDirectory(atPath: inbox) {
      guard !name.hasPrefix("."), !name.hasSuffix(".tmp"), !name.hasSuffix(".part") else { continue }
      names.append(name)
    }
    var ready: [String] = []
    // The lowest names first, whatever order the directory lists them in.
    for name in names.sorted().prefix(HostToHostLimits.maxListedFiles) {
      let attributes = try? FileManager.default.attributesOfItem(atPath: inbox + "/" + name)
      guard attributes?[.type] as? FileAttributeType == .typeRegular else { continue }
      if let modified = attributes?[.modificationDate] as? Date,
        now.timeIntervalSince(modified) * 1_000 < Double(self.configuration.settleMilliseconds)
      {
        continue
      }
      ready.append(name)
      if ready.count == limit { break }
    }
    return ready
  }

  /// What a file brought, ready to be stored in one transaction.
  struct Intake: Sendable {
    var reports: [PaymentStatusReport] = []
    /// Statuses for a whole message (`GrpSts`, scope: the message id) or a whole `PmtInf` block
    /// (`PmtInfSts`, scope: ``blockKey(_:)``): every transfer sent in it that has no status of
    /// its own in the file takes them.
    var scopeStatuses: [ScopeStatus] = []
    var statements: [(account: Account, entries: [StatementEntry], closing: StatementBalance?)] = []
    var isStatementFile = false
  }

  private func process(_ name: String, _ outcome: inout PollOutcome) async throws {
    let path = self.configuration.inbox + "/" + name
    // Held open from the fingerprint to the move: what is hashed, parsed, stored and archived is
    // one file, even if another is put in its place meanwhile. Hashing and parsing a large file
    // take seconds of CPU, so they run on a thread of their own, not on the cooperative pool.
    let file = try InboxFile(path)
    // A file over the size limit is refused by its size, which the open file already gives:
    // only its start is hashed, and its fingerprint then names it rather than digests it.
    let oversize = file.size > HostToHostLimits.maxInboxFileBytes
    let (sha256, read) = try await onOwnThread {
      // An oversize file's fingerprint: its size and first MiB, tagged, so it never equals the
      // digest of a file that was read whole (nor another oversize file of another size).
      try file.fingerprint(
        upTo: oversize ? HostToHostLimits.oversizeFingerprintBytes : nil, tag: oversize ? Array("oversize \(file.size)\n".utf8) : [])
    }
    let bytes = oversize ? file.size : read
    let fingerprint = Hex.decode(sha256) ?? []
    var quarantinedBefore = false
    if let earlier = try self.store.withReadTransaction({ txn in try txn.get(fingerprint, in: Self.filesDB) }) {
      var reader = RecordReader(earlier)
      quarantinedBefore = try reader.readUInt8() == 2
      if !quarantinedBefore {
        // Processed before a crash, or the same file delivered again: moved, not processed again.
        let destination = try reader.readString()
        try self.move(file, from: path, to: self.uniqueName(destination, sha256: sha256, keepIfSame: true))
        outcome.moved += 1
        return
      }
      // Quarantined before: taken again, as a bank resends a file once its cause is fixed (an
      // account added to the configuration). Refused again, it goes back to quarantine without
      // a second event: its alert was raised the first time (and a file whose move keeps
      // failing must not raise one per poll).
    }
    let now = self.clock()
    var intake = Intake()
    var refusal: String?
    if oversize {
      refusal = "\(bytes) bytes; the inbox takes files of at most \(HostToHostLimits.maxInboxFileBytes)"
    } else {
      do {
        let readPath = file.readPath(fallback: path)
        intake = try await onOwnThread { try self.read(readPath, now: now) }
      } catch let error as FormatError {
        refusal = "\(error)"
      } catch let error as InboxRefusal {
        refusal = error.reason
      } catch {
        // Unreadable for any other reason (permissions, I/O): quarantined, not retried forever.
        refusal = "cannot be read: \(error)"
      }
    }
    // Still being written (the sender ignored the settle time): taken again once it is still.
    guard file.unchanged() else { return }
    let archived = self.uniqueName(Self.archive(self.configuration.inbox) + "/" + name, sha256: sha256, keepIfSame: false)
    let quarantined = self.uniqueName(Self.quarantine(self.configuration.inbox) + "/" + name, sha256: sha256, keepIfSame: false)
    let sentTransfers = try self.sentTransfers(intake.scopeStatuses.map(\.scope))
    // Statuses only for blocks or messages this connector has no record of sending (another
    // sender's, or a file sent before blocks were recorded): nothing could be applied, so it is
    // quarantined for a person, never archived as if it had been.
    if refusal == nil, intake.reports.isEmpty, !intake.scopeStatuses.isEmpty,
      !intake.scopeStatuses.contains(where: { sentTransfers[$0.scope] != nil })
    {
      refusal = "its statuses are for payment information blocks or messages this connector has no record of sending"
    }
    do {
      try await self.record(
        intake, refusal: refusal, announced: quarantinedBefore, name: name, sha256: sha256, bytes: bytes, archived: archived,
        quarantined: quarantined, sentTransfers: sentTransfers, now: now)
    } catch let late as InboxRefusal {
      // Refused only while booking (a balance that would overflow): quarantined, and nothing of
      // the file is stored.
      refusal = late.reason
      try await self.record(
        intake, refusal: late.reason, announced: quarantinedBefore, name: name, sha256: sha256, bytes: bytes, archived: archived,
        quarantined: quarantined, sentTransfers: sentTransfers, now: now)
    }
    if let refusal {
      try? DurableFile.write(Array(refusal.utf8), to: quarantined + ".reason")
      try self.move(file, from: path, to: quarantined)
      outcome.quarantined += 1
    } else {
      try self.move(file, from: path, to: archived)
      outcome.processed += 1
    }
  }

  /// Stores what a file brought, or its refusal, with its fingerprint, in one transaction.
  /// `announced`: the same file was quarantined before, with its event; a refusal now adds none.
  private func record(
    _ taken: Intake, refusal refused: String?, announced: Bool, name: String, sha256: String, bytes: Int64, archived: String,
    quarantined: String, sentTransfers: [[UInt8]: [String]], now: Instant
  ) async throws {
    let fingerprint = Hex.decode(sha256) ?? []
    try await self.store.write { txn in
      var record = RecordWriter(capacity: 128)
      record.write(UInt8(refused == nil ? 1 : 2))
      record.write(refused == nil ? archived : quarantined)
      record.write(name)
      record.write(now.millisecondsSinceEpoch)
      try txn.put(fingerprint, record.bytes, in: Self.filesDB)
      if let refused {
        guard !announced else { return }
        var event = RecordWriter(capacity: 128)
        event.write(UInt8(2))
        event.write(name)
        event.write(sha256)
        event.write(refused)
        try Self.append(event.bytes, in: Self.eventsDB, counter: Self.eventSequenceKey, txn: &txn)
        return
      }
      for report in taken.reports { try Self.append(report, txn: &txn) }
      var covered: Set<String> = []
      for scope in taken.scopeStatuses {
        for endToEndID in sentTransfers[scope.scope] ?? [] where !scope.except.contains(endToEndID) && !covered.contains(endToEndID) {
          covered.insert(endToEndID)
          try Self.append(
            PaymentStatusReport(endToEndID: endToEndID, statusCode: scope.status, reasonCode: scope.reason, reasonText: scope.text, time: now),
            txn: &txn)
        }
      }
      var ordinal = 0
      for statement in taken.statements {
        try self.book(
          statement.account, statement.entries, closing: statement.closing, fileDigest: sha256, firstOrdinal: ordinal, now: now, txn: &txn)
        ordinal += statement.entries.count
      }
      if taken.isStatementFile {
        var event = RecordWriter(capacity: 128)
        event.write(UInt8(1))
        event.write(archived)
        event.write(name)
        event.write(sha256)
        event.write(bytes)
        try Self.append(event.bytes, in: Self.eventsDB, counter: Self.eventSequenceKey, txn: &txn)
      }
    }
  }

  struct InboxRefusal: Error {
    var reason: String
  }

  /// A folder of the connector the daemon cannot write.
  public struct FolderProblem: Error, Sendable, CustomStringConvertible {
    /// `outbox` or `inbox` (the configuration key under `connector.files`).
    public var key: String
    public var path: String
    public var reason: String
    public var description: String { "\(self.path) cannot be written: \(self.reason)" }
  }

  struct ScopeStatus: Sendable {
    /// The `sentDB` key listing the scope's EndToEndIds.
    var scope: [UInt8]
    var status: String
    var reason: String
    var text: String
    /// Transfers the file gives a status of their own.
    var except: Set<String>
  }

  /// Parses one file. Throws ``FormatError`` or ``InboxRefusal`` for a file to quarantine.
  func read(_ path: String, now: Instant) throws -> Intake {
    guard let kind = StatementFiles.detect(file: path) else {
      throw InboxRefusal(reason: "not a pain.002, camt.052/053/054 or MT940 file")
    }
    var intake = Intake()
    switch kind {
    case .pain002:
      let report = try Pain002Reader.read(.file(path))
      guard report.transactions.count <= HostToHostLimits.maxStatusesPerFile else {
        throw InboxRefusal(reason: "more than \(HostToHostLimits.maxStatusesPerFile) transaction statuses in one report")
      }
      var own: Set<String> = []
      for transaction in report.transactions where !transaction.endToEndID.isEmpty && !transaction.status.isEmpty {
        own.insert(transaction.endToEndID)
        intake.reports.append(
          PaymentStatusReport(
            endToEndID: transaction.endToEndID, statusCode: transaction.status, reasonCode: transaction.reasons.first?.code ?? "",
            reasonText: transaction.reasons.first?.additionalInfo ?? "", time: now))
      }
      // A status for a whole block or message covers the transfers without one of their own
      // (a block rejected whole, say, lists none); a block's status before the message's.
      // PART (some accepted, some not) says nothing about any one transfer: not applied.
      for block in report.paymentInformation where !block.status.isEmpty && block.status != "PART" && !block.paymentInformationID.isEmpty {
        intake.scopeStatuses.append(
          ScopeStatus(
            scope: Self.blockKey(block.paymentInformationID), status: block.status, reason: block.reasons.first?.code ?? "",
            text: block.reasons.first?.additionalInfo ?? "", except: own))
      }
      if !report.groupStatus.isEmpty, report.groupStatus != "PART", !report.originalMessageID.isEmpty {
        intake.scopeStatuses.append(
          ScopeStatus(
            scope: Array(report.originalMessageID.utf8), status: report.groupStatus, reason: report.groupReasons.first?.code ?? "",
            text: report.groupReasons.first?.additionalInfo ?? "", except: own))
      }
      guard !intake.reports.isEmpty || !intake.scopeStatuses.isEmpty else {
        throw InboxRefusal(reason: "a pain.002 with no status for any transfer, payment information block or message")
      }
    case .pain001:
      throw InboxRefusal(reason: "a pain.001 (payment initiation) does not come from the bank")
    case .camt052, .camt053, .camt054, .mt940:
      intake.isStatementFile = true
      var statements: [BankStatement] = []
      var entries = 0
      _ = try StatementFiles.read(.file(path)) { event in
        switch event {
        case .begin(let header):
          guard statements.count < HostToHostLimits.maxStatementsPerFile else {
            throw InboxRefusal(reason: "more than \(HostToHostLimits.maxStatementsPerFile) statements in one file")
          }
          statements.append(BankStatement(header: header))
        case .entry(let entry):
          entries += 1
          guard entries <= HostToHostLimits.maxEntriesPerFile else {
            throw InboxRefusal(reason: "more than \(HostToHostLimits.maxEntriesPerFile) entries in one file")
          }
          if entry.status == "BOOK" {
            // Booking reads an entry's first transaction details only; the rest (a batch
            // booking may carry thousands, ~250 bytes each) are not held for the whole file.
            var entry = entry
            if entry.details.count > 1 { entry.details.removeSubrange(1...) }
            statements[statements.count - 1].entries.append(entry)
          }
        case .end(let trailer): statements[statements.count - 1].trailer = trailer
        }
      }
      for statement in statements {
        guard let account = self.account(for: statement.header.account) else {
          throw InboxRefusal(reason: "statement \(statement.header.statementID) is for account '\(statement.header.account.identification)', which is not in connector.files.accounts")
        }
        let currency = statement.header.account.currency.isEmpty ? (statement.entries.first?.currency ?? account.currency.code) : statement.header.account.currency
        guard currency == account.currency.code, statement.entries.allSatisfy({ $0.currency == account.currency.code }) else {
          throw InboxRefusal(reason: "statement \(statement.header.statementID) is in \(currency), account \(account.id) in \(account.currency.code)")
        }
        let closing = kind == .camt054 ? nil : StatementContinuity.closing(statement)
        intake.statements.append((account, statement.entries, closing))
      }
    }
    return intake
  }

  func account(for identification: StatementAccount) -> Account? {
    let wanted = [identification.iban, identification.other].map { $0.filter { $0 != " " } }.filter { !$0.isEmpty }
    let candidates = self.configuration.accounts.filter { account in
      wanted.contains { $0 == account.iban.filter { $0 != " " } || $0 == account.number.filter { $0 != " " } }
    }
    if candidates.count > 1, !identification.servicerBIC.isEmpty {
      return candidates.first { $0.bankBIC == identification.servicerBIC }
    }
    return candidates.count == 1 ? candidates.first : nil
  }

  /// Adds the statement's booked entries not seen before to the account's feed and moves its
  /// balance: by the new entries of a notification (camt.054), or, for a statement with a
  /// closing balance, to that balance **plus** the notified entries it does not cover.
  ///
  /// A bank's statement for day D often arrives after notifications of entries booked on D+1;
  /// taking its closing balance alone would drop them, and a reservation released because its
  /// debit was booked would then overstate the available funds. So notified entries are kept
  /// as uncovered (`h2h_uncovered`) until a statement lists them, or until a statement closes
  /// on or after their booking date without them (the bank's statement is authoritative for its
  /// period).
  func book(
    _ account: Account, _ entries: [StatementEntry], closing: StatementBalance?, fileDigest: String, firstOrdinal: Int, now: Instant,
    txn: inout WriteTransaction
  ) throws {
    let prefix = Array(account.id.utf8) + [0]
    let counter = Array("entry_next/\(account.id)".utf8)
    var next: UInt64 = 0
    if let bytes = try txn.get(counter, in: .meta) {
      var reader = RecordReader(bytes)
      next = try reader.readUInt64()
    }
    var closingDate = ""
    var balance: Int64? = try txn.get(Array(account.id.utf8), in: Self.balancesDB).map { bytes in
      var reader = RecordReader(bytes)
      let minor = try reader.readInt64()
      _ = try reader.readInt64()
      if !reader.isAtEnd { closingDate = try reader.readString() }
      return minor
    }
    // A statement older than the one the balance stands on (resent, or late) adds its unknown
    // entries to the feed but moves no balance: its closing balance is in the past.
    let stale = closing.map { !closingDate.isEmpty && !$0.date.isEmpty && $0.date < closingDate } ?? false
    for (ordinal, entry) in entries.enumerated() {
      // The bank's reference for the entry (entry level, else its transaction's); never NtryRef,
      // which banks number from 1 in each statement.
      let reference = entry.accountServicerReference.isEmpty ? (entry.details.first?.accountServicerReference ?? "") : entry.accountServicerReference
      let identity = reference.isEmpty ? "\(fileDigest.prefix(16))-\(firstOrdinal + ordinal)" : reference
      let key = prefix + Array(identity.utf8.prefix(200))
      if closing != nil { _ = try txn.delete(key, in: Self.uncoveredDB) }
      if try txn.get(key, in: Self.entryKeysDB) != nil { continue }
      try txn.put(key, [], in: Self.entryKeysDB)
      let details = entry.details.first
      let endToEndID = details?.endToEndID == "NOTPROVIDED" ? "" : (details?.endToEndID ?? "")
      // CdtDbtInd (MT940's RC/RD, read as such) already says which way the money moved, for a
      // reversal too.
      let direction: Direction = entry.direction == .debit ? .debit : .credit
      let transaction = BookedTransaction(
        id: "h2h-\(account.id)-\(next)", accountID: account.id, amount: Money(minorUnits: entry.amountMinor, currency: account.currency),
        direction: direction, bookingTime: now, valueDate: entry.valueDate.isEmpty ? entry.bookingDate : entry.valueDate,
        counterparty: Counterparty(
          name: details?.counterpartyName ?? "", accountNumber: details?.counterpartyAccount ?? "", bankBIC: details?.counterpartyBIC ?? "",
          bankName: ""),
        endToEndID: endToEndID, bankReference: reference,
        description: String((details?.remittance.joined(separator: " ") ?? entry.additionalInfo).prefix(Pain001Writer.maxTextLength)))
      try txn.put(prefix + Self.bigEndian(next), transaction.record, in: Self.entriesDB)
      next += 1
      let signed = direction == .debit ? -entry.amountMinor : entry.amountMinor
      if closing == nil, !stale {
        var uncovered = RecordWriter(capacity: 24)
        uncovered.write(entry.bookingDate)
        uncovered.write(signed)
        try txn.put(key, uncovered.bytes, in: Self.uncoveredDB)
        if let current = balance { balance = try Self.add(current, signed, account) }
      }
    }
    var counterValue = RecordWriter(capacity: 8)
    counterValue.write(next)
    try txn.put(counter, counterValue.bytes, in: .meta)
    if let closing, !stale {
      closingDate = max(closingDate, closing.date)
      // The statement's closing balance, plus what was notified after its period.
      var total = closing.amountMinor
      var expired: [[UInt8]] = []
      try txn.scan(Self.uncoveredDB, from: prefix) { key, value in
        guard key.starts(with: prefix) else { return false }
        var reader = RecordReader(value)
        let date = try reader.readString()
        let signed = try reader.readInt64()
        if !closing.date.isEmpty, !date.isEmpty, date <= closing.date {
          expired.append(key)
        } else {
          total = try Self.add(total, signed, account)
        }
        return true
      }
      for key in expired { _ = try txn.delete(key, in: Self.uncoveredDB) }
      balance = total
    }
    if let balance {
      var record = RecordWriter(capacity: 16)
      record.write(balance)
      record.write(now.millisecondsSinceEpoch)
      record.write(closingDate)
      try txn.put(Array(account.id.utf8), record.bytes, in: Self.balancesDB)
    }
  }

  // MARK: Helpers

  /// A balance moved by an entry; a sum beyond Int64 refuses the file rather than wrapping.
  static func add(_ balance: Int64, _ amount: Int64, _ account: Account) throws -> Int64 {
    let (sum, overflow) = balance.addingReportingOverflow(amount)
    guard !overflow else { throw InboxRefusal(reason: "account \(account.id)'s balance would leave the range of a 64-bit amount") }
    return sum
  }

  private func reading<Result>(_ body: (ReadTransaction) throws -> Result) throws(BankError) -> Result {
    do {
      return try self.store.withReadTransaction(body)
    } catch {
      throw BankError(.unavailable, "connector state unreadable: \(error)")
    }
  }

  /// The EndToEndIds sent in each scope (a message id, or a ``blockKey(_:)``), as recorded when
  /// the file was written; a scope this connector did not send is absent.
  func sentTransfers(_ scopes: [[UInt8]]) throws -> [[UInt8]: [String]] {
    guard !scopes.isEmpty else { return [:] }
    return try self.store.withReadTransaction { txn in
      var found: [[UInt8]: [String]] = [:]
      for scope in scopes {
        guard let bytes = try txn.get(scope, in: Self.sentDB) else { continue }
        var reader = RecordReader(bytes)
        var ids: [String] = []
        while !reader.isAtEnd { ids.append(try reader.readString()) }
        found[scope] = ids
      }
      return found
    }
  }

  static func append(_ report: PaymentStatusReport, txn: inout WriteTransaction) throws {
    try Self.append(report.record, in: Self.reportsDB, counter: Self.reportSequenceKey, txn: &txn)
  }

  /// The next status report and event numbers this connector's store will issue: positions the
  /// daemon has saved beyond them were issued by another store (see
  /// `HostToHostInboxService.checkPositions`).
  public func nextNumbers() throws -> (statusReport: UInt64, event: UInt64, entries: [String: UInt64]) {
    try self.store.withReadTransaction { txn in
      func counter(_ key: [UInt8], start: UInt64) throws -> UInt64 {
        guard let bytes = try txn.get(key, in: .meta) else { return start }
        var reader = RecordReader(bytes)
        return try reader.readUInt64()
      }
      var entries: [String: UInt64] = [:]
      for account in self.configuration.accounts {
        entries[account.id] = try counter(Array("entry_next/\(account.id)".utf8), start: 0)
      }
      return (try counter(Self.reportSequenceKey, start: 0), try counter(Self.eventSequenceKey, start: 1), entries)
    }
  }

  /// Appends under the next number of `counter` (stored in meta; feeds start at 0, events at 1).
  static func append(_ value: [UInt8], in database: Database, counter: [UInt8], txn: inout WriteTransaction) throws {
    var sequence: UInt64 = database == Self.eventsDB ? 1 : 0
    if let bytes = try txn.get(counter, in: .meta) {
      var reader = RecordReader(bytes)
      sequence = try reader.readUInt64()
    }
    var next = RecordWriter(capacity: 8)
    next.write(sequence + 1)
    try txn.put(counter, next.bytes, in: .meta)
    try txn.put(Self.bigEndian(sequence), value, in: database)
  }

  static func bigEndian(_ value: UInt64) -> [UInt8] {
    var writer = RecordWriter(capacity: 8)
    writer.write(value)
    return writer.bytes
  }

  static func sequence(_ bytes: some Collection<UInt8>) -> UInt64 {
    bytes.suffix(8).reduce(0) { $0 << 8 | UInt64($1) }
  }

  /// SHA-256 (hex) and size of a file, read in chunks.
  static func fingerprint(_ path: String) throws -> (String, Int64) {
    guard let handle = FileHandle(forReadingAtPath: path) else { throw CocoaError(.fileReadNoSuchFile) }
    defer { try? handle.close() }
    var hash = SHA256()
    var total: Int64 = 0
    while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
      hash.update(data: chunk)
      total += Int64(chunk.count)
    }
    return (Hex.encode(hash.finalize()), total)
  }

  /// `path`, or, when a different file already has that name, the name prefixed with the
  /// digest's start (banks reuse file names across days).
  func uniqueName(_ path: String, sha256: String, keepIfSame: Bool) -> String {
    guard FileManager.default.fileExists(atPath: path) else { return path }
    if keepIfSame, (try? Self.fingerprint(path).0) == sha256 { return path }
    let url = URL(fileURLWithPath: path)
    return url.deletingLastPathComponent().path + "/" + sha256.prefix(12) + "-" + url.lastPathComponent
  }

  /// Moves the processed file out of the inbox. If another file has taken its name meanwhile,
  /// that one stays in the inbox (it is processed on its own), and the processed content is
  /// written to `destination` from the open file instead.
  func move(_ file: InboxFile, from path: String, to destination: String) throws {
    if FileManager.default.fileExists(atPath: destination) {
      // The same file was already moved (a crash after the rename): the inbox copy goes.
      if file.isStill(at: path) { try FileManager.default.removeItem(atPath: path) }
    } else if file.isStill(at: path) {
      guard rename(path, destination) == 0 else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: destination]) }
    } else {
      try DurableFile.write(try file.contents(), to: destination)
    }
    DurableFile.syncDirectory(URL(fileURLWithPath: destination).deletingLastPathComponent().path)
    DurableFile.syncDirectory(self.configuration.inbox)
  }
}

/// An inbox file held open while it is processed: fingerprinted, parsed (through
/// `/proc/self/fd`, so the parsers read this file and not whatever the name points to later)
/// and moved, with a check that it did not change in between.
final class InboxFile: Sendable {
  let descriptor: Int32
  let device: UInt64
  let inode: UInt64
  let size: Int64
  let modified: timespec

  init(_ path: String) throws {
    let descriptor = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
    guard descriptor >= 0 else { throw CocoaError(.fileReadNoSuchFile, userInfo: [NSFilePathErrorKey: path]) }
    var status = stat()
    guard fstat(descriptor, &status) == 0, status.st_mode & S_IFMT == S_IFREG else {
      close(descriptor)
      throw CocoaError(.fileReadUnknown, userInfo: [NSFilePathErrorKey: path])
    }
    self.descriptor = descriptor
    self.device = UInt64(status.st_dev)
    self.inode = UInt64(status.st_ino)
    self.size = Int64(status.st_size)
    self.modified = status.st_mtim
  }

  deinit { close(self.descriptor) }

  /// A path that opens this very file, or `fallback` where `/proc` is not mounted.
  func readPath(fallback: String) -> String {
    let path = "/proc/self/fd/\(self.descriptor)"
    return access(path, R_OK) == 0 ? path : fallback
  }

  /// SHA-256 (hex) and size, read from the start: of the whole file, or of `tag` and its first
  /// `limit` bytes.
  func fingerprint(upTo limit: Int64? = nil, tag: [UInt8] = []) throws -> (String, Int64) {
    var hash = SHA256()
    if !tag.isEmpty { hash.update(data: tag) }
    var total: Int64 = 0
    try self.read(upTo: limit) { chunk in
      hash.update(bufferPointer: chunk)
      total += Int64(chunk.count)
    }
    return (Hex.encode(hash.finalize()), total)
  }

  /// The whole file (only when it has to be copied rather than renamed; at most
  /// ``HostToHostLimits/maxInboxFileBytes`` are ever processed).
  func contents() throws -> [UInt8] {
    var bytes: [UInt8] = []
    try self.read { bytes.append(contentsOf: $0) }
    return bytes
  }

  private func read(upTo limit: Int64? = nil, _ body: (UnsafeRawBufferPointer) -> Void) throws {
    let chunk = 1 << 20
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 16)
    defer { buffer.deallocate() }
    var offset: off_t = 0
    while true {
      let wanted = limit.map { Int(max(0, min(Int64(chunk), $0 - Int64(offset)))) } ?? chunk
      if wanted == 0 { return }
      let count = pread(self.descriptor, buffer.baseAddress, wanted, offset)
      if count < 0 {
        if errno == EINTR { continue }
        throw CocoaError(.fileReadUnknown)
      }
      if count == 0 { return }
      body(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
      offset += off_t(count)
    }
  }

  /// Whether the file still has the size and modification time it had when opened.
  func unchanged() -> Bool {
    var status = stat()
    guard fstat(self.descriptor, &status) == 0 else { return false }
    return Int64(status.st_size) == self.size && status.st_mtim.tv_sec == self.modified.tv_sec
      && status.st_mtim.tv_nsec == self.modified.tv_nsec
  }

  /// Whether `path` still names this file.
  func isStill(at path: String) -> Bool {
    var status = stat()
    guard lstat(path, &status) == 0 else { return false }
    return UInt64(status.st_dev) == self.device && UInt64(status.st_ino) == self.inode
  }
}

/// Writing a file so that it is whole or absent after a crash: a hidden temporary name in the
/// same directory, fsync, rename, fsync of the directory.
public enum DurableFile {
  public static func write(_ bytes: [UInt8], to path: String) throws {
    let url = URL(fileURLWithPath: path)
    let directory = url.deletingLastPathComponent().path
    let temporary = directory + "/." + url.lastPathComponent + ".tmp"
    // O_NOFOLLOW: a link planted under the temporary name (the directories are shared with
    // a bank's transfer agent) is not followed; the rename then replaces a link, never its target.
    let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o640)
    guard descriptor >= 0 else { throw CocoaError(.fileWriteNoPermission, userInfo: [NSFilePathErrorKey: temporary]) }
    var written = 0
    let ok = bytes.withUnsafeBytes { buffer -> Bool in
      while written < buffer.count {
        let result = Foundation.write(descriptor, buffer.baseAddress! + written, buffer.count - written)
        if result <= 0 { return false }
        written += result
      }
      return fsync(descriptor) == 0
    }
    close(descriptor)
    guard ok, rename(temporary, path) == 0 else {
      unlink(temporary)
      throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
    }
    Self.syncDirectory(directory)
  }

  public static func syncDirectory(_ path: String) {
    let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard descriptor >= 0 else { return }
    _ = fsync(descriptor)
    close(descriptor)
  }
}
