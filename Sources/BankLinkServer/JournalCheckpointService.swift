import BankLinkCore
import BankLinkJournal
import BankLinkStore
import Logging
import ServiceLifecycle

/// Signs the journal's head periodically (docs/audit.md, "Checkpoints"): when
/// ``Limits/journalCheckpointEntries`` entries were appended since the last checkpoint, or
/// ``Limits/journalCheckpointIntervalMilliseconds`` passed with any appended, and once more on
/// shutdown. Each checkpoint is itself a journal entry, written through the group-commit writer.
public final class JournalCheckpointService: Service {
  let writer: GroupCommitWriter
  /// The signer in force (the daemon's certificate may be rotated while it runs).
  let signer: @Sendable () -> JournalCheckpoint.Signer
  let entries: UInt64
  let intervalMilliseconds: Int64
  let logger: Logger
  let now: @Sendable () -> Instant

  public convenience init(
    writer: GroupCommitWriter, signer: JournalCheckpoint.Signer,
    entries: UInt64 = Limits.journalCheckpointEntries,
    intervalMilliseconds: Int64 = Limits.journalCheckpointIntervalMilliseconds,
    logger: Logger, now: @escaping @Sendable () -> Instant
  ) {
    self.init(writer: writer, signing: { signer }, entries: entries, intervalMilliseconds: intervalMilliseconds, logger: logger, now: now)
  }

  /// Signs with the key of the daemon's certificate in force at each checkpoint.
  public convenience init(
    writer: GroupCommitWriter, certificate: ServerCertificate, logger: Logger, now: @escaping @Sendable () -> Instant
  ) {
    self.init(writer: writer, signing: { certificate.current.signer }, logger: logger, now: now)
  }

  init(
    writer: GroupCommitWriter, signing: @escaping @Sendable () -> JournalCheckpoint.Signer,
    entries: UInt64 = Limits.journalCheckpointEntries,
    intervalMilliseconds: Int64 = Limits.journalCheckpointIntervalMilliseconds,
    logger: Logger, now: @escaping @Sendable () -> Instant
  ) {
    self.writer = writer
    self.signer = signing
    self.entries = entries
    self.intervalMilliseconds = intervalMilliseconds
    self.logger = logger
    self.now = now
  }

  public func run() async throws {
    var lastTime = self.now()
    while !Task.isCancelled && !Task.isShuttingDownGracefully {
      try? await cancelWhenGracefulShutdown {
        try await Task.sleep(for: .milliseconds(Limits.journalCheckpointPollMilliseconds))
      }
      do {
        let (head, last) = try self.writer.store.withReadTransaction { txn in
          (try AuditJournal.head(txn), try JournalCheckpoint.lastCheckpoint(txn))
        }
        guard let head, head.sequence > last else { continue }
        let due = head.sequence - last >= self.entries
          || self.now().millisecondsSinceEpoch - lastTime.millisecondsSinceEpoch >= self.intervalMilliseconds
        if due || Task.isShuttingDownGracefully {
          try await self.checkpoint()
          lastTime = self.now()
        }
      } catch {
        self.logger.error("journal checkpoint failed; will retry", metadata: ["error": "\(error)"])
      }
    }
  }

  /// Appends a checkpoint of the current head now (unless the head is one already).
  @discardableResult
  public func checkpoint() async throws -> JournalReceipt? {
    let signer = self.signer()
    let time = self.now()
    let receipt = try await self.writer.write { txn in try signer.checkpoint(&txn, at: time) }
    if let receipt {
      self.logger.info("journal checkpoint signed", metadata: ["sequence": "\(receipt.sequence)"])
    }
    return receipt
  }
}
