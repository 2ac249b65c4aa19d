import BankLinkCore
import BankLinkStore

/// Walks the journal and checks every entry: its sequence follows the one before, its previous
/// hash is that entry's hash, and its stored hash is the hash of its contents. Any edit of a
/// stored entry — a byte of its payload, its time, its actor — or a removed or inserted entry
/// breaks one of these at the first entry touched.
public enum JournalVerifier {
  public struct Report: Sendable, Hashable {
    public var valid: Bool
    public var entriesVerified: UInt64
    /// The first entry that does not verify; 0 when valid.
    public var firstInvalidSequence: UInt64
    /// The hash of the last entry verified (of the whole journal when it is valid).
    public var headHash: [UInt8]
    public var message: String
    /// Checkpoints whose signature the given certificate verifies.
    public var checkpointsVerified: UInt64 = 0
    /// Checkpoints signed with another certificate of the daemon's (not checked).
    public var checkpointsOtherCertificate: UInt64 = 0
    /// The sequence of the last checkpoint verified; 0 when none.
    public var lastCheckpoint: UInt64 = 0
  }

  /// Verifies entries `from`…`to` (0: the first / the last). The first entry of a range that
  /// starts after 1 is linked to the stored hash of the entry before it. Runs in one read
  /// transaction, so a concurrent append is either wholly seen or not at all.
  ///
  /// With `checkpoints`, every `journal.checkpoint` entry must sign the entry before it with the
  /// daemon's key (checkpoints naming another certificate are counted, not checked).
  public static func verify(
    from: UInt64 = 0, to: UInt64 = 0, checkpoints: JournalCheckpoint.Verifier? = nil, in txn: some ReadableTransaction
  ) throws -> Report {
    let first = max(from, 1)
    var previous = AuditJournal.genesisHash
    if first > 1 {
      guard let before = try AuditJournal.entry(first - 1, in: txn) else {
        return Report(
          valid: false, entriesVerified: 0, firstInvalidSequence: first - 1, headHash: [],
          message: "entry \(first - 1), which entry \(first) links to, is missing")
      }
      previous = before.entryHash
    }
    var expected = first
    var verified: UInt64 = 0
    var failure: (UInt64, String)?
    var signed: UInt64 = 0
    var otherCertificate: UInt64 = 0
    var lastCheckpoint: UInt64 = 0
    let checkpointAction = Array(JournalCheckpoint.action.utf8)
    try txn.scanInPlace(.audit, from: AuditJournal.key(first)) { key, value in
      // The fast path: the hash straight from the record's bytes. A record that does not parse
      // is decoded in full below, to say what is wrong with it.
      guard let raw = RawJournalEntry(key: key, value: value) else {
        let entry: AuditEntry
        do {
          entry = try AuditJournal.decode(key: Array(key), value: Array(value))
        } catch {
          failure = (expected, "entry \(expected) does not decode: \(error)")
          return false
        }
        if to != 0 && entry.sequence > to { return false }
        failure = (expected, "entry \(entry.sequence) is malformed")
        return false
      }
      if to != 0 && raw.sequence > to { return false }
      guard raw.sequence == expected else {
        failure = (expected, "entry \(expected) is missing (the next stored is \(raw.sequence))")
        return false
      }
      guard raw.previousHash(in: value).elementsEqual(previous) else {
        failure = (raw.sequence, "entry \(raw.sequence) does not link to entry \(raw.sequence - 1)")
        return false
      }
      guard raw.hashMatches(in: value) else {
        failure = (raw.sequence, "entry \(raw.sequence) was altered: its contents do not hash to its stored hash")
        return false
      }
      if let checkpoints, raw.isAction(checkpointAction, in: value) {
        switch checkpoints.check(try AuditJournal.decode(key: Array(key), value: Array(value))) {
        case .verified:
          signed += 1
          lastCheckpoint = raw.sequence
        case .otherCertificate:
          otherCertificate += 1
        case .invalid(let reason):
          failure = (raw.sequence, reason)
          return false
        }
      }
      // In place: no allocation per entry.
      let stored = raw.storedHash(in: value)
      for index in 0..<32 { previous[index] = stored[index] }
      verified += 1
      expected += 1
      return true
    }
    func counted(_ report: Report) -> Report {
      var report = report
      report.checkpointsVerified = signed
      report.checkpointsOtherCertificate = otherCertificate
      report.lastCheckpoint = lastCheckpoint
      return report
    }
    if let (sequence, message) = failure {
      return counted(Report(valid: false, entriesVerified: verified, firstInvalidSequence: sequence, headHash: previous, message: message))
    }
    if to != 0 && expected <= to {
      return counted(Report(
        valid: false, entriesVerified: verified, firstInvalidSequence: expected, headHash: previous,
        message: "the journal ends at entry \(expected - 1), before \(to)"))
    }
    // A whole-journal walk must end at the recorded head: entries cut off the end are found.
    if to == 0, let head = try AuditJournal.head(txn) {
      guard head.sequence == expected - 1, head.entryHash == previous else {
        return counted(Report(
          valid: false, entriesVerified: verified, firstInvalidSequence: min(head.sequence, expected), headHash: previous,
          message: "the journal head records entry \(head.sequence), but the chain ends at entry \(expected - 1)"))
      }
    }
    return counted(Report(
      valid: true, entriesVerified: verified, firstInvalidSequence: 0, headHash: previous,
      message: verified == 0 ? "no entries in range" : "entries \(first)…\(expected - 1) verify"))
  }
}
