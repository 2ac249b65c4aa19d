import BankLinkCore
import BankLinkFormats
import BankLinkJournal
import BankLinkStore
import Foundation

/// How the reconciler decides (docs/reconciliation.md).
public struct ReconciliationSettings: Sendable, Hashable {
  /// A booked debit may exceed the payment by this much, in minor units of the currency, and
  /// still match: the bank's fee taken with the transfer. The difference is recorded.
  public var feeToleranceMinor: Int64 = 5_000
  /// A heuristic match needs the entry's value date within this many days of the payment's
  /// requested execution date.
  public var dateWindowDays = 3
  /// The least score (of 1000) a heuristic match needs.
  public var minimumScore = 600
  /// The best candidate must lead the second by this much, or the entry is left `ambiguous`.
  public var ambiguityMargin = 100

  public init() {}
}

public enum MatchMethod: UInt8, Sendable, Hashable {
  case reference = 1
  case heuristic = 2
  case batch = 3
  case returned = 4
  case manual = 5

  /// The case's name, as journal entries record it (without `String(describing:)`'s reflection,
  /// which a run would pay per payment).
  public var name: String {
    switch self {
    case .reference: "reference"
    case .heuristic: "heuristic"
    case .batch: "batch"
    case .returned: "returned"
    case .manual: "manual"
    }
  }
}

/// A stored match: an entry and the payments it books.
public struct EntryMatch: Sendable, Hashable {
  public var entryKey: [UInt8]
  public var accountID: String
  public var paymentIDs: [String]
  public var method: MatchMethod
  public var score: Int
  public var reason: String
  /// Booked amount minus the payments' sum (fees), minor units of `currency`.
  public var differenceMinor: Int64
  public var currency: String
  public var matchedBy: String
  public var time: Instant
  public var note: String

  public var entryID: String {
    var reader = RecordReader(self.entryKey)
    guard let sequence = try? reader.readUInt64(), let index = try? reader.readUInt32() else { return "" }
    return StatementIDs.entry(sequence, index)
  }
}

/// Where a report line is stored: the report's sequence and the line's index in it.
struct ReportLine: Hashable {
  var report: UInt64
  var index: UInt32
}

/// One line of a report.
public enum ReportItem: Sendable, Hashable {
  case match(EntryMatch)
  case unmatchedEntry(entryKey: [UInt8], classification: String, reason: String)
  case unmatchedPayment(paymentID: String)
}

public struct ReconciliationReportHeader: Sendable, Hashable {
  public var sequence: UInt64
  public var createdAt: Instant
  public var createdBy: String
  public var accountID: String
  public var fromDate: String
  public var toDate: String
  public var matched = 0
  public var unmatchedEntries = 0
  public var unmatchedPayments = 0
  public var settled = 0
  public var returned = 0
  /// False while the run is going, and for good when it was cut short (a crash between two of
  /// its commits, or an error): the counters and lines are then what it committed.
  public var complete = false

  public var id: String { ReconciliationIDs.report(self.sequence) }
}

public enum ReconciliationIDs {
  static let prefix = "rec-"

  public static func report(_ sequence: UInt64) -> String {
    Self.prefix + StatementIDs.pad(sequence, StatementIDs.sequenceDigits)
  }

  public static func parseReport(_ id: String) -> UInt64? {
    guard id.hasPrefix(Self.prefix) else { return nil }
    let digits = id.dropFirst(Self.prefix.count)
    guard !digits.isEmpty, digits.count <= 20, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
    return UInt64(digits)
  }

  /// The key of `stm-…….NNNNNN`, or nil.
  public static func entryKey(_ id: String) -> [UInt8]? {
    let parts = id.split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count == 2, let sequence = StatementIDs.parseStatement(String(parts[0])), parts[1].count <= 10,
      parts[1].allSatisfy({ $0.isASCII && $0.isNumber }), let index = UInt32(parts[1])
    else { return nil }
    return StatementKeys.entry(sequence, index)
  }
}

/// Why a clerk's match or unmatch was refused.
public enum ReconciliationRefusal: Error, Sendable, Hashable, CustomStringConvertible {
  case entryNotFound(String)
  case paymentNotFound(String)
  case alreadyMatched(String)
  case paymentAlreadyMatched(String)
  case notMatched(String)
  case wrongAccount(paymentID: String, accountID: String)
  case notBooked(String, String)
  case paymentNotReconcilable(String, String)
  /// The run's scope holds more than ``Limits/maxReconciliationEntries`` entries (or open
  /// payments): its memory would not be bounded.
  case scopeTooLarge(entries: Int, payments: Int)

  public var description: String {
    switch self {
    case .entryNotFound(let id): "entry \(id) not found"
    case .paymentNotFound(let id): "payment \(id) not found"
    case .alreadyMatched(let id): "entry \(id) is matched already: unmatch it first"
    case .paymentAlreadyMatched(let id): "payment \(id) is matched to another entry already"
    case .notMatched(let id): "entry \(id) is not matched"
    case .wrongAccount(let paymentID, let accountID): "payment \(paymentID) is not from the entry's account \(accountID)"
    case .notBooked(let id, let status): "entry \(id) is \(status), not booked: only booked money settles a payment"
    case .paymentNotReconcilable(let id, let status): "payment \(id) is \(status): only a payment with the bank or settled can be matched"
    case .scopeTooLarge(let entries, let payments):
      "the run's scope holds more than \(Limits.maxReconciliationEntries) entries or open payments (\(entries) entries, \(payments) payments so far): narrow it to an account and fewer days"
    }
  }
}

/// The reconciliation engine: statement entries against payments, every decision with its
/// method, score and reason; reports stored and paged; matches by hand.
///
/// A run (on a thread of its own) works in write transactions of
/// ``Limits/statementEntriesPerCommit`` entries and writes its report's lines as it goes, so
/// its memory grows with the entries and payments nothing references, not with its scope
/// (``reconcile(accountID:fromDate:toDate:statements:by:)``). Every decision is taken or
/// re-checked against the committed state of the transaction that applies it: an entry matched
/// meanwhile (by a clerk, or another run) and a payment that moved (a status report) are left as
/// they are, never matched twice.
public final class Reconciler: Sendable {
  let store: Store
  let settings: ReconciliationSettings
  let now: @Sendable () -> Instant
  /// Called after each of a run's commits with the report header as committed: tests read the
  /// store there, where a crash would leave it, or throw to cut the run short.
  let afterCommit: (@Sendable (ReconciliationReportHeader) throws -> Void)?

  public init(
    store: Store, settings: ReconciliationSettings = .init(), now: @escaping @Sendable () -> Instant,
    afterCommit: (@Sendable (ReconciliationReportHeader) throws -> Void)? = nil
  ) {
    self.store = store
    self.settings = settings
    self.now = now
    self.afterCommit = afterCommit
  }

  /// Payment states a booked entry can explain: with the bank, or settled by a pain.002. (A
  /// switch, not a `Set`: asked for every payment a run reads, and a set would hash the
  /// state's name.)
  static func isReconcilable(_ status: PaymentStatus) -> Bool {
    switch status {
    case .submitting, .submitted, .accepted, .settled: true
    default: false
    }
  }

  enum Decision {
    /// `verified`: the payments, read and checked in the transaction that applies the match
    /// (pass 1), so ``apply(_:settle:returned:at:raiseAlerts:verified:txn:)`` need not re-read them.
    case match(EntryMatch, settle: Bool, returned: Bool, verified: [Payment]? = nil)
    case unmatched(entryKey: [UInt8], classification: String, reason: String)
  }

  public struct Outcome: Sendable {
    public var report: ReconciliationReportHeader
    public var receipt: JournalReceipt
  }

  // MARK: A run

  /// A run's report as it is written: its header (sequence and counters) and what the run
  /// gathered on the way.
  struct RunState {
    var header: ReconciliationReportHeader
    /// Entries whose EndToEndId names a payment the daemon does not hold open.
    var strays = 0
    /// Reversals carrying the EndToEndId of a payment of ours.
    var reversals = 0
    /// The accounts whose payments the run considers.
    var accounts: Set<String> = []

    /// Stores the header as it stands, marked incomplete, in the transaction that stored the
    /// lines it counts: a crash between the run's commits leaves a readable report of what
    /// was committed, not lines without a header.
    func saveHeader(txn: inout WriteTransaction) throws {
      var header = self.header
      header.complete = false
      try txn.put(StatementKeys.statement(header.sequence), ReconRecords.encode(header), in: .reconReports)
    }

    /// Where the report's next line goes: its index is the number of lines so far.
    var nextLine: ReportLine {
      ReportLine(report: self.header.sequence, index: UInt32(self.header.matched + self.header.unmatchedEntries + self.header.unmatchedPayments))
    }

    /// Stores `item` as the report's next line and counts it.
    mutating func record(_ item: ReportItem, txn: inout WriteTransaction) throws {
      let line = self.nextLine
      try txn.put(ReconRecords.itemKey(line.report, line.index), ReconRecords.encode(item), in: .reconReportItems)
      switch item {
      case .match: self.header.matched += 1
      case .unmatchedEntry(_, let classification, _):
        self.header.unmatchedEntries += 1
        if classification == "reference_not_open" { self.strays += 1 }
        if classification == "payment_reversal" { self.reversals += 1 }
      case .unmatchedPayment: self.header.unmatchedPayments += 1
      }
    }
  }

  /// What a kept entry holds of its counterparty's name and of its remittance (upper-cased), in
  /// bytes: enough for name similarity and for finding a reference, and bounded whatever the
  /// bank wrote (an entry may carry thousands of details of 32 remittance lines each).
  static let maxKeptCounterpartyBytes = 256
  static let maxKeptRemittanceBytes = 4_096

  static func keptRemittance(_ entry: StatementEntry) -> String {
    var text = ""
    for line in entry.details.lazy.flatMap(\.remittance) + [entry.additionalInfo] {
      guard text.utf8.count < Self.maxKeptRemittanceBytes else { break }
      text += text.isEmpty ? line : " " + line
    }
    return FormatValues.clip(text, maxBytes: Self.maxKeptRemittanceBytes).uppercased()
  }

  /// A booked debit with no EndToEndId of ours: what the batch and heuristic passes need of it.
  struct PendingEntry {
    var key: [UInt8]
    var account: String
    var amount: Int64
    var currency: String
    /// The value date, else the booking date.
    var date: String
    var bookingDate: String
    var batchCount: Int?
    var counterparty: String
    /// Remittance and additional information, upper-cased.
    var remittance: String
    /// How the entry is classified if nothing matches it.
    var kind: String
    var why: String
  }

  /// An open payment that a booking without a reference may explain.
  struct Candidate {
    var id: String
    var amount: Int64
    var executionDate: String
    var creditor: String
    /// The purpose, upper-cased.
    var purpose: String
    var batchID: String
    var taken = false
  }

  /// One account's candidates, indexed by amount (with taken ones skipped in amortised
  /// constant time) and by batch.
  struct CandidateIndex {
    var candidates: [Candidate] = []
    /// Candidate indices in ascending amount.
    var byAmount: [Int32] = []
    /// Where each candidate sits in `byAmount`.
    var position: [Int32] = []
    /// `next[p] == p` while the candidate at `p` is not taken; otherwise a later position to
    /// look at (path-compressed). `next[count]` is the end (so an empty index has one slot).
    var next: [Int32] = [0]
    var batches: [String: [Int32]] = [:]
    var batchIDs: [String] = []

    mutating func seal() {
      self.byAmount = (0..<Int32(self.candidates.count)).sorted {
        let (a, b) = (self.candidates[Int($0)], self.candidates[Int($1)])
        return a.amount != b.amount ? a.amount < b.amount : a.id < b.id
      }
      self.position = Array(repeating: 0, count: self.candidates.count)
      for (place, candidate) in self.byAmount.enumerated() { self.position[Int(candidate)] = Int32(place) }
      self.next = Array(0...Int32(self.candidates.count))
      for (index, candidate) in self.candidates.enumerated() where !candidate.batchID.isEmpty {
        self.batches[candidate.batchID, default: []].append(Int32(index))
      }
      self.batchIDs = self.batches.keys.sorted()
    }

    /// The first position ≥ `place` whose candidate is not taken (or the end).
    mutating func alive(from place: Int) -> Int {
      var root = place
      while self.next[root] != Int32(root) { root = Int(self.next[root]) }
      var step = place
      while step != root {
        let following = Int(self.next[step])
        self.next[step] = Int32(root)
        step = following
      }
      return root
    }

    /// The first position whose amount is ≥ `amount`.
    func lowerBound(_ amount: Int64) -> Int {
      var (low, high) = (0, self.byAmount.count)
      while low < high {
        let middle = (low + high) / 2
        if self.candidates[Int(self.byAmount[middle])].amount < amount { low = middle + 1 } else { high = middle }
      }
      return low
    }

    mutating func take(_ index: Int32) {
      self.candidates[Int(index)].taken = true
      let place = Int(self.position[Int(index)])
      self.next[place] = Int32(place + 1)
    }
  }

  /// Reconciles the booked entries of `accountID` (nil: every account) with booking dates in
  /// `fromDate...toDate` (ISO dates; empty: unbounded) and stores a report. With `statements`,
  /// only the entries of those statements are considered (the run after an import: earlier
  /// statements' unmatched entries were reported by earlier runs, and listing them again after
  /// every import would grow the stored reports with the square of the entries).
  ///
  /// Three passes, each in write transactions of ``Limits/statementEntriesPerCommit`` that
  /// write their report lines as they go, so memory does not grow with the scope:
  /// 1. **By reference**, streamed: each entry carrying an EndToEndId is looked up through the
  ///    EndToEndId index and decided and applied in the transaction that reads it. Credits and
  ///    returns are decided here too. Debits without a reference of ours are kept (compactly)
  ///    for the next pass.
  /// 2. **By batch and heuristic**, on a snapshot taken after pass 1: the open payments that
  ///    no reference claimed are indexed by amount and batch; each kept entry is decided
  ///    against them (oldest booking first), then applied after re-checking each decision.
  /// 3. **Unmatched payments**: the open payments left.
  /// Exact references win over heuristics across the whole scope: a payment is never guessed
  /// for one entry while another entry of the run names it.
  public func reconcile(
    accountID: String?, fromDate: String, toDate: String, statements: [UInt64]? = nil, by principal: String
  ) throws -> Outcome {
    let time = self.now()
    let sequences = try self.store.withReadTransaction { txn in
      try Self.statementsInScope(accountID: accountID, fromDate: fromDate, toDate: toDate, statements: statements, txn: txn)
    }
    var run = RunState(
      header: ReconciliationReportHeader(
        sequence: 0, createdAt: time, createdBy: principal, accountID: accountID ?? "", fromDate: fromDate, toDate: toDate))
    if let accountID { run.accounts.insert(accountID) }
    // The report's sequence is taken first, so that its lines can be written as the run goes.
    run.header.sequence = try self.store.withWriteTransaction { [run] txn in
      let sequence = try Self.lastReport(txn) + 1
      var head = RecordWriter(capacity: 8)
      head.write(sequence)
      try txn.put(Self.reportHeadKey, head.bytes, in: .meta)
      var started = run
      started.header.sequence = sequence
      try started.saveHeader(txn: &txn)
      return sequence
    }
    do {
      var pending: [PendingEntry] = []
      for sequence in sequences {
        try self.referencePass(statement: sequence, fromDate: fromDate, toDate: toDate, at: time, run: &run, pending: &pending)
      }
      // A run after an import lists the payments of its statements' period and of the date
      // window before it (so one due a few days before, that no statement booked, is listed
      // once it is late); one on demand every open payment up to its end.
      let listedFrom = statements == nil || fromDate.isEmpty
        ? "" : Instant(isoDate: fromDate).map { $0.adding(milliseconds: -Int64(self.settings.dateWindowDays) * 86_400_000).isoDate } ?? ""
      try self.heuristicPass(pending, fromDate: listedFrom, toDate: toDate, at: time, run: &run)
      return try self.finish(run, fromDate: fromDate, toDate: toDate, at: time, principal: principal, incomplete: nil)
    } catch {
      // What was applied stays applied (each step is journaled); the report shows it, marked
      // incomplete in the run's journal entry.
      _ = try? self.finish(run, fromDate: fromDate, toDate: toDate, at: time, principal: principal, incomplete: "\(error)")
      throw error
    }
  }

  /// The complete statements that may hold entries of the run, in sequence order.
  static func statementsInScope(
    accountID: String?, fromDate: String, toDate: String, statements only: [UInt64]?, txn: ReadTransaction
  ) throws -> [UInt64] {
    var sequences: [UInt64] = []
    if let only {
      sequences = only
    } else if let accountID {
      let prefix = StatementKeys.accountPrefix(accountID)
      try txn.scan(.statementsByAccount, from: prefix) { key, _ in
        guard key.count == prefix.count + 8, key.starts(with: prefix) else { return false }
        var reader = RecordReader(Array(key.suffix(8)))
        sequences.append(try reader.readUInt64())
        return true
      }
    } else {
      try txn.scan(.statements) { key, _ in
        var reader = RecordReader(key)
        sequences.append(try reader.readUInt64())
        return true
      }
    }
    return try sequences.filter { sequence in
      guard let bytes = try txn.get(StatementKeys.statement(sequence), in: .statements) else { return false }
      let statement = try StatementKeys.decodeStatement(bytes)
      guard statement.complete else { return false }
      if !fromDate.isEmpty, !statement.toDate.isEmpty, statement.toDate < fromDate { return false }
      if !toDate.isEmpty, !statement.fromDate.isEmpty, statement.fromDate > toDate { return false }
      return true
    }
  }

  /// Pass 1 over one statement's entries, a chunk per write transaction.
  func referencePass(
    statement sequence: UInt64, fromDate: String, toDate: String, at time: Instant, run: inout RunState, pending: inout [PendingEntry]
  ) throws {
    let prefix = StatementKeys.statement(sequence)
    var from = StatementKeys.entry(sequence, 0)
    var more = true
    while more {
      let kept: [PendingEntry]
      (run, kept, from, more) = try self.store.withWriteTransaction { txn in
        var state = run
        var kept: [PendingEntry] = []
        var lastAccount: String?
        // The chunk's records, read before anything is written.
        var chunk: [(key: [UInt8], value: [UInt8])] = []
        var resume: [UInt8]?
        try txn.scan(.statementEntries, from: from) { key, value in
          guard key.count == 12, key.starts(with: prefix) else { return false }
          guard chunk.count < Limits.statementEntriesPerCommit else {
            resume = key
            return false
          }
          chunk.append((key, value))
          return true
        }
        // The chunk's entries matched already (by an earlier run or a clerk): one walk over the
        // chunk's key range rather than a look-up per entry. (This transaction writes only the
        // match of the entry it is deciding, so the set stays true through the chunk.)
        var matchedAlready = Set<[UInt8]>()
        if let first = chunk.first?.key, let last = chunk.last?.key {
          try txn.scan(.reconMatches, from: first) { key, _ in
            guard !last.lexicographicallyPrecedes(key) else { return false }
            matchedAlready.insert(key)
            return true
          }
        }
        for (key, value) in chunk {
          if !matchedAlready.isEmpty, matchedAlready.contains(key) { continue }
          let (account, entry) = try StatementKeys.decodeEntryForMatching(value)
          guard entry.status == "BOOK" else { continue }
          if !fromDate.isEmpty, entry.bookingDate < fromDate { continue }
          if !toDate.isEmpty, entry.bookingDate > toDate { continue }
          // Entries of a statement share their account: the set is touched once per change.
          if account != lastAccount {
            state.accounts.insert(account)
            lastAccount = account
          }
          if let decision = try self.decideByReference(key: key, account: account, entry: entry, at: time, txn: txn) {
            try Self.record(decision, at: time, run: &state, txn: &txn)
            continue
          }
          guard pending.count + kept.count < Limits.maxReconciliationEntries else {
            throw ReconciliationRefusal.scopeTooLarge(entries: pending.count + kept.count + 1, payments: 0)
          }
          let (kind, why) = Self.classify(entry)
          // A fee, interest or a reversal is the bank's own booking: never a payment of ours
          // found by its amount (a 250.00 charge would settle a 250.00 payment due today).
          guard kind == "unexplained" else {
            try Self.record(.unmatched(entryKey: key, classification: kind, reason: why), at: time, run: &state, txn: &txn)
            continue
          }
          kept.append(
            PendingEntry(
              key: key, account: account, amount: entry.amountMinor, currency: entry.currency,
              date: entry.valueDate.isEmpty ? entry.bookingDate : entry.valueDate, bookingDate: entry.bookingDate,
              batchCount: entry.batchCount ?? (entry.details.count > 1 ? entry.details.count : nil),
              counterparty: FormatValues.clip(entry.details.first?.counterpartyName ?? "", maxBytes: Self.maxKeptCounterpartyBytes),
              remittance: Self.keptRemittance(entry),
              kind: kind, why: why))
        }
        try state.saveHeader(txn: &txn)
        return (state, kept, resume ?? from, resume != nil)
      }
      try self.afterCommit?(run.header)
      pending.append(contentsOf: kept)
    }
  }

  /// Applies a decision (after ``apply(_:settle:returned:at:raiseAlerts:txn:)`` re-checks it)
  /// and records its report line.
  static func record(_ decision: Decision, at time: Instant, run: inout RunState, txn: inout WriteTransaction) throws {
    switch decision {
    case .unmatched(let key, let classification, let reason):
      // Matched meanwhile (by hand): that match stands, and is not this run's.
      if try txn.get(key, in: .reconMatches) != nil { return }
      try run.record(.unmatchedEntry(entryKey: key, classification: classification, reason: reason), txn: &txn)
    case .match(let match, let settle, let returned, let verified):
      let alerts = run.header.returned < Limits.maxBreakAlertsPerImport
      guard
        let applied = try Self.apply(
          match, settle: settle, returned: returned, at: time, raiseAlerts: alerts, verified: verified, line: run.nextLine, txn: &txn)
      else {
        // The entry matched meanwhile (by a clerk, between the run's commits): that match stands,
        // and the entry is neither this run's match nor unmatched.
        if try txn.get(match.entryKey, in: .reconMatches) != nil { return }
        try run.record(
          .unmatchedEntry(entryKey: match.entryKey, classification: "unexplained", reason: "a candidate payment changed during the run; run again"),
          txn: &txn)
        return
      }
      try run.record(.match(match), txn: &txn)
      run.header.settled += applied.settled ? 1 : 0
      run.header.returned += applied.returned ? 1 : 0
    }
  }

  /// Passes 2 and 3: the kept entries against the open payments no reference claimed, then
  /// the payments left.
  /// Unmatched payments listed: those whose execution date is within `fromDate` (when not
  /// empty) and `toDate` — a run after each import would otherwise list every older open
  /// payment again, report after report.
  func heuristicPass(_ pending: [PendingEntry], fromDate: String = "", toDate: String, at time: Instant, run: inout RunState) throws {
    // The payments those entries may book: of the run's accounts, with the bank or settled,
    // not matched.
    var indexes: [String: CandidateIndex] = [:]
    var leftOver: [(id: String, executionDate: String)] = []
    let accounts = run.accounts
    try self.store.withReadTransaction { txn in
      var open = 0
      // Each payment with its match (payments and their matches are keyed alike: walked side by
      // side rather than looked up one by one).
      try txn.scanInPlace(.payments, joining: .reconPaymentMatches) { _, valueBytes, matched in
        // Most stored payments are closed or matched already: that is read first (the state
        // in place, without copying or decoding the record, then the match), and only the
        // others decoded.
        guard Self.isReconcilable(try Payment.status(ofRecord: valueBytes)) else { return true }
        // Matched to an entry: not open. Held for a clerk (an empty record, after an unmatch):
        // open and listed as unmatched, but never a candidate for an automatic match.
        guard matched?.isEmpty ?? true else { return true }
        let payment = try Payment(record: Array(valueBytes))
        let account = payment.instruction.debtorAccountID
        guard accounts.contains(account) else { return true }
        open += 1
        guard open <= Limits.maxReconciliationEntries else {
          throw ReconciliationRefusal.scopeTooLarge(entries: pending.count, payments: open)
        }
        if matched != nil {
          leftOver.append((payment.id, payment.instruction.requestedExecutionDate))
          return true
        }
        // Only an EndToEndId proves the bank holds a payment still being submitted: matching
        // one by amount would settle a payment the outbox has yet to send.
        guard payment.status != .submitting else {
          leftOver.append((payment.id, payment.instruction.requestedExecutionDate))
          return true
        }
        indexes[account, default: CandidateIndex()].candidates.append(
          Candidate(
            id: payment.id, amount: payment.instruction.amount.minorUnits, executionDate: payment.instruction.requestedExecutionDate,
            creditor: payment.instruction.creditor.name, purpose: payment.instruction.purpose.uppercased(), batchID: payment.batchID))
        return true
      }
    }
    for account in indexes.keys { indexes[account]!.seal() }

    var decisions: [Decision] = []
    decisions.reserveCapacity(pending.count)
    for entry in pending.sorted(by: { $0.bookingDate != $1.bookingDate ? $0.bookingDate < $1.bookingDate : $0.key.lexicographicallyPrecedes($1.key) }) {
      decisions.append(self.decide(entry, at: time, index: &indexes[entry.account, default: CandidateIndex()]))
    }
    var start = 0
    while start < decisions.count {
      let chunk = decisions[start..<min(start + Limits.statementEntriesPerCommit, decisions.count)]
      start += chunk.count
      run = try self.store.withWriteTransaction { txn in
        var state = run
        for decision in chunk { try Self.record(decision, at: time, run: &state, txn: &txn) }
        try state.saveHeader(txn: &txn)
        return state
      }
      try self.afterCommit?(run.header)
    }

    // Payments left: unmatched when their execution date is inside the window's end (a payment
    // for tomorrow is not missing from today's statement).
    for index in indexes.values {
      for candidate in index.candidates where !candidate.taken { leftOver.append((candidate.id, candidate.executionDate)) }
    }
    let unmatched = leftOver.filter { (toDate.isEmpty || $0.executionDate <= toDate) && (fromDate.isEmpty || $0.executionDate >= fromDate) }
      .map(\.id).sorted()
    start = 0
    while start < unmatched.count {
      let chunk = unmatched[start..<min(start + Limits.statementEntriesPerCommit, unmatched.count)]
      start += chunk.count
      run = try self.store.withWriteTransaction { txn in
        var state = run
        // Payments matched by a clerk meanwhile are no longer unmatched (held ones still are).
        for id in chunk where try txn.get(Array(id.utf8), in: .reconPaymentMatches)?.isEmpty ?? true {
          try state.record(.unmatchedPayment(paymentID: id), txn: &txn)
        }
        try state.saveHeader(txn: &txn)
        return state
      }
      try self.afterCommit?(run.header)
    }
  }

  /// The report's header, the run's alerts and its journal entry.
  func finish(_ run: RunState, fromDate: String, toDate: String, at time: Instant, principal: String, incomplete: String?) throws -> Outcome {
    var header = run.header
    header.complete = incomplete == nil
    return try self.store.withWriteTransaction { txn in
      try txn.put(StatementKeys.statement(header.sequence), ReconRecords.encode(header), in: .reconReports)
      if header.returned > Limits.maxBreakAlertsPerImport {
        try AlertLog.raise(
          &txn, at: time, severity: .warning, kind: .bankRejection, accountID: header.accountID,
          message: "reconciliation \(header.id) found \(header.returned) returned payments; alerts were raised for the first \(Limits.maxBreakAlertsPerImport)")
      }
      // The bank booked payments the daemon does not hold open (failed, cancelled, another
      // account's): an anomaly for someone to look at, one alert per run.
      if run.strays > 0 {
        try AlertLog.raise(
          &txn, at: time, severity: .warning, kind: .anomaly, accountID: header.accountID,
          message: "reconciliation \(header.id): \(run.strays) booked entries carry the EndToEndId of a payment the daemon does not hold open",
          details: ["report_id": header.id])
      }
      if run.reversals > 0 {
        try AlertLog.raise(
          &txn, at: time, severity: .warning, kind: .anomaly, accountID: header.accountID,
          message: "reconciliation \(header.id): \(run.reversals) reversals carry the EndToEndId of a payment of ours "
            + "(a duplicate debit undone, or a return booked as a reversal): a clerk decides",
          details: ["report_id": header.id])
      }
      var details: AuditPayload = [
        "account_id": header.accountID, "from_date": fromDate, "to_date": toDate, "matched": String(header.matched),
        "unmatched_entries": String(header.unmatchedEntries), "unmatched_payments": String(header.unmatchedPayments),
        "settled": String(header.settled), "returned": String(header.returned),
      ]
      if let incomplete { details["incomplete"] = LogText.prefix(incomplete, maxBytes: 512) }
      let receipt = try AuditJournal.append(&txn, at: time, principal: principal, action: "reconciliation.run", object: header.id, details: details)
      return Outcome(report: header, receipt: receipt)
    }
  }

  /// The EndToEndIds an entry carries: its transactions', else MT940's customer reference.
  static func references(_ entry: StatementEntry) -> [String] {
    var references = entry.details.map(\.endToEndID).filter { !$0.isEmpty && $0 != "NOTPROVIDED" }
    if references.isEmpty, !entry.customerReference.isEmpty, entry.customerReference != "NONREF" {
      references.append(entry.customerReference)
    }
    return references
  }

  /// What the entry's bank transaction code says it is, when no payment explains it.
  static func classify(_ entry: StatementEntry) -> (String, String) {
    let code = entry.bankTransactionCode.uppercased()
    if entry.reversal { return ("reversal", "the bank reverses an earlier entry") }
    if code.contains("CHRG") || code.contains("FEES") || code.hasSuffix("/COMM") || code == "NCHG" || code == "NCOM" {
      return ("fee", "bank transaction code \(entry.bankTransactionCode)")
    }
    if code.contains("INTR") || code == "NINT" { return ("interest", "bank transaction code \(entry.bankTransactionCode)") }
    if entry.direction == .credit { return ("collection", "money received; no payment of ours explains it") }
    return ("unexplained", "no payment of this account has its reference, or its amount near its value date")
  }

  static func match(
    _ key: [UInt8], _ account: String, _ currency: String, _ ids: [String], _ method: MatchMethod, _ score: Int, _ reason: String,
    difference: Int64 = 0, at time: Instant
  ) -> EntryMatch {
    EntryMatch(
      entryKey: key, accountID: account, paymentIDs: ids, method: method, score: score, reason: reason, differenceMinor: difference,
      currency: currency, matchedBy: "auto", time: time, note: "")
  }

  /// Pass 1's decision for an entry: by its EndToEndIds, through the index, against the
  /// committed state of `txn`. Nil for a debit that names no payment of ours (the next pass's).
  func decideByReference(
    key: [UInt8], account: String, entry: StatementEntry, at time: Instant, txn: some ReadableTransaction
  ) throws -> Decision? {
    let tolerance = self.settings.feeToleranceMinor
    let references = Self.references(entry)
    // A credit (or a reversed debit) carrying a payment's EndToEndId: the money came back.
    let incoming = entry.direction == .credit
    var found: [Payment] = []
    var elsewhere: [String] = []
    for reference in references {
      guard let id = try txn.get(Array(reference.utf8), in: .paymentsByEndToEnd).map({ String(decoding: $0, as: UTF8.self) }) else { continue }
      let known = try txn.get(Array(id.utf8), in: .payments).map(Payment.init(record:))
      let matched = try txn.get(Array(id.utf8), in: .reconPaymentMatches) != nil
      // A return is a second entry for a payment its debit may have matched already.
      guard let payment = known, payment.instruction.debtorAccountID == account, Self.isReconcilable(payment.status),
        incoming || !matched
      else {
        // The reference names a payment of ours that this entry cannot book: never guessed
        // past by amount, reported.
        elsewhere.append(
          known.map { payment in
            payment.instruction.debtorAccountID != account
              ? "\(payment.id) of account \(payment.instruction.debtorAccountID)"
              : matched && !incoming ? "\(payment.id), matched to another entry" : "\(payment.id) in state \(payment.status.rawValue)"
          } ?? id)
        continue
      }
      if !found.contains(where: { $0.id == payment.id }) { found.append(payment) }
    }
    // Any payment named that this entry cannot book — even beside others it could — leaves the
    // whole entry to a clerk: booked by amount without it, a cancelled or failed payment the
    // bank did pay would vanish into a "fee" and be paid again.
    if !elsewhere.isEmpty {
      return .unmatched(
        entryKey: key, classification: "reference_not_open",
        reason: "its EndToEndId names \(elsewhere.prefix(5).joined(separator: ", ")): the bank booked a payment the daemon does not hold open")
    }
    if found.isEmpty {
      guard incoming else { return nil }
      let (kind, why) = Self.classify(entry)
      return .unmatched(entryKey: key, classification: kind, reason: why)
    }
    let sum = found.reduce(Int64(0)) { $0 &+ $1.instruction.amount.minorUnits }
    let ids = found.map(\.id)
    let named = found.count == 1 ? "EndToEndId \(found[0].endToEndID)" : "the EndToEndIds of \(found.count) payments"
    if incoming {
      // A reversal undoes a booking: a debit booked twice (the payment was paid), or a return
      // some banks book as a reversal (MT940 `RD` with `/RTRN/`). Which one only a person can
      // tell: never applied by itself, listed for a clerk, and the run raises an anomaly.
      if entry.reversal {
        return .unmatched(
          entryKey: key, classification: "payment_reversal",
          reason: "a reversal carrying \(named): a duplicate debit undone, or a return booked as a reversal; match it by hand if it returns the payment")
      }
      let reason = entry.details.first { !$0.returnReason.isEmpty }?.returnReason ?? ""
      guard !reason.isEmpty || entry.bankTransactionCode.uppercased().contains("RRTN") else {
        return .unmatched(entryKey: key, classification: "collection", reason: "a credit carrying \(named) without a return reason")
      }
      guard abs(entry.amountMinor &- sum) <= tolerance else {
        return .unmatched(
          entryKey: key, classification: "amount_mismatch",
          reason: "returns \(named) but credits \(entry.amountMinor) against \(sum) paid: beyond the tolerance of \(tolerance)")
      }
      return .match(
        Self.match(
          key, account, entry.currency, ids, .returned, 1000,
          "\(named) returned (\(reason.isEmpty ? "RRTN" : reason)); amount \(entry.amountMinor) for \(sum)",
          difference: entry.amountMinor - sum, at: time),
        settle: false, returned: true, verified: found)
    }
    let difference = entry.amountMinor - sum
    guard difference >= 0, difference <= tolerance else {
      return .unmatched(
        entryKey: key, classification: "amount_mismatch",
        reason: "\(named) (\(ids.joined(separator: ", "))) but booked \(entry.amountMinor) against \(sum) paid: beyond the fee tolerance of \(tolerance)")
    }
    let fee = difference == 0 ? "" : "; fee \(difference)"
    return .match(
      Self.match(key, account, entry.currency, ids, found.count == 1 ? .reference : .batch, 1000, "\(named)\(fee)", difference: difference, at: time),
      settle: true, returned: false, verified: found)
  }

  /// Pass 2's decision for a debit without a reference of ours: a batch by its sum and count,
  /// else the best candidate by amount, value date, counterparty and remittance. A chosen
  /// candidate is taken, so no later entry of the run chooses it.
  func decide(_ entry: PendingEntry, at time: Instant, index: inout CandidateIndex) -> Decision {
    let tolerance = self.settings.feeToleranceMinor
    let window = self.settings.dateWindowDays
    // N:1: one booking for a batch, by the batch's sum and count.
    if let count = entry.batchCount, count > 1 {
      var fits: [(batchID: String, members: [Int32], difference: Int64, sum: Int64)] = []
      for batchID in index.batchIDs {
        let members = (index.batches[batchID] ?? []).filter { !index.candidates[Int($0)].taken }
        guard members.count == count else { continue }
        let sum = members.reduce(Int64(0)) { $0 &+ index.candidates[Int($1)].amount }
        let difference = entry.amount &- sum
        let near = members.allSatisfy { member in
          Self.daysBetween(entry.date, index.candidates[Int(member)].executionDate).map { $0 <= window } ?? true
        }
        if difference >= 0, difference <= tolerance, near { fits.append((batchID, members, difference, sum)) }
      }
      if fits.count > 1 {
        return .unmatched(
          entryKey: entry.key, classification: "ambiguous",
          reason: "batches \(fits.prefix(3).map(\.batchID).joined(separator: ", ")) each have \(count) payments summing to the amount: match by hand")
      }
      if let fit = fits.first {
        for member in fit.members { index.take(member) }
        return .match(
          Self.match(
            entry.key, entry.account, entry.currency, fit.members.map { index.candidates[Int($0)].id }.sorted(), .batch, 900,
            "batch \(fit.batchID): \(count) payments summing to \(fit.sum)\(fit.difference == 0 ? "" : "; fee \(fit.difference)")",
            difference: fit.difference, at: time),
          settle: true, returned: false)
      }
    }

    // Heuristic: amount (exact, or short of it by a fee), value date, counterparty, reference.
    var scored: [(candidate: Int32, score: Int, reason: String, difference: Int64)] = []
    var place = index.alive(from: index.lowerBound(entry.amount &- tolerance))
    while place < index.byAmount.count {
      let member = index.byAmount[place]
      let candidate = index.candidates[Int(member)]
      guard candidate.amount <= entry.amount else { break }
      place = index.alive(from: place + 1)
      let fee = entry.amount - candidate.amount
      var score = fee == 0 ? 400 : 300
      var reasons = [fee == 0 ? "amount \(entry.amount)" : "amount \(entry.amount) = \(candidate.amount) + fee \(fee)"]
      if let days = Self.daysBetween(entry.date, candidate.executionDate) {
        guard days <= window else { continue }
        score += 200 - 200 * days / (window + 1)
        reasons.append(days == 0 ? "value date \(entry.date)" : "value date \(days) day(s) from \(candidate.executionDate)")
      }
      let similarity = Self.nameSimilarity(entry.counterparty, candidate.creditor)
      if similarity > 0 {
        score += similarity * 300 / 100
        reasons.append(
          "counterparty '\(LogText.prefix(entry.counterparty, maxBytes: 64))' \(similarity) % like '\(LogText.prefix(candidate.creditor, maxBytes: 64))'")
      }
      if !candidate.purpose.isEmpty, entry.remittance.contains(candidate.purpose) || Self.sharedReference(entry.remittance, candidate.purpose) {
        score += 100
        reasons.append("remittance carries the payment's reference")
      }
      scored.append((member, min(score, 999), reasons.joined(separator: ", "), fee))
    }
    func id(_ member: Int32) -> String { index.candidates[Int(member)].id }
    scored.sort { $0.score != $1.score ? $0.score > $1.score : id($0.candidate) < id($1.candidate) }
    if let best = scored.first, best.score >= self.settings.minimumScore {
      if scored.count > 1, best.score - scored[1].score < self.settings.ambiguityMargin {
        return .unmatched(
          entryKey: entry.key, classification: "ambiguous",
          reason: scored.prefix(3).map { "\(id($0.candidate)) (\($0.score))" }.joined(separator: ", ") + " fit almost as well: match by hand")
      }
      index.take(best.candidate)
      return .match(
        Self.match(entry.key, entry.account, entry.currency, [id(best.candidate)], .heuristic, best.score, best.reason, difference: best.difference, at: time),
        settle: true, returned: false)
    }
    var why = entry.why
    if entry.kind == "unexplained", let best = scored.first {
      why = "best candidate \(id(best.candidate)) scored \(best.score) (\(best.reason)), under \(self.settings.minimumScore)"
    }
    return .unmatched(entryKey: entry.key, classification: entry.kind, reason: why)
  }

  /// Whole days between two ISO dates, or nil when either is not one.
  static func daysBetween(_ a: String, _ b: String) -> Int? {
    guard let x = Instant(isoDate: a), let y = Instant(isoDate: b) else { return nil }
    return Int(abs(x.milliseconds(since: y)) / 86_400_000)
  }

  /// 0…100: how alike two names are, by their words (case, punctuation and legal-form words
  /// such as "Co", "Ltd", "GmbH" ignored; Chinese names compared by characters).
  static let nameNoise: Set<String> = ["CO", "LTD", "LIMITED", "INC", "GMBH", "AG", "SA", "LLC", "CORP", "COMPANY", "THE", "有限公司", "公司"]

  static func nameSimilarity(_ a: String, _ b: String) -> Int {
    let noise = Self.nameNoise
    func words(_ text: String) -> Set<String> {
      // Plain ASCII (most names in a run): words of letters and digits, upper-cased, split at
      // anything else, read as bytes. The same words as the general path below.
      if text.utf8.allSatisfy({ $0 < 0x80 }) {
        var result: Set<String> = []
        var word: [UInt8] = []
        func flushBytes() {
          if !word.isEmpty {
            let text = String(decoding: word, as: UTF8.self)
            if !noise.contains(text) { result.insert(text) }
            word.removeAll(keepingCapacity: true)
          }
        }
        for byte in text.utf8 {
          switch byte {
          case UInt8(ascii: "a")...UInt8(ascii: "z"): word.append(byte - 0x20)
          case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): word.append(byte)
          default: flushBytes()
          }
        }
        flushBytes()
        return result
      }
      var text = text
      for form in ["有限责任公司", "股份有限公司", "有限公司", "公司"] where text.hasSuffix(form) {
        text = String(text.dropLast(form.count))
        break
      }
      var result: Set<String> = []
      var word = ""
      func flush() {
        if !word.isEmpty, !noise.contains(word) { result.insert(word) }
        word = ""
      }
      for character in text.uppercased() {
        if character.isLetter || character.isNumber {
          if character.unicodeScalars.first.map({ $0.value >= 0x4E00 && $0.value <= 0x9FFF }) == true {
            flush()
            result.insert(String(character))
          } else {
            word.append(character)
          }
        } else {
          flush()
        }
      }
      flush()
      return result
    }
    let x = words(a)
    let y = words(b)
    guard !x.isEmpty, !y.isEmpty else { return 0 }
    return 100 * x.intersection(y).count / x.union(y).count
  }

  /// Whether a reference-like word (letters and digits, 5+ characters, with a digit) of the
  /// payment's purpose appears in the remittance.
  static func sharedReference(_ remittance: String, _ purpose: String) -> Bool {
    purpose.split(whereSeparator: { $0 == " " || $0 == "," || $0 == ";" || $0 == "/" }).contains { word in
      word.count >= 5 && word.contains(where: \.isNumber) && remittance.contains(word)
    }
  }

  /// Applies a match in `txn` after re-checking it; nil when it no longer holds.
  /// `raiseAlerts`: whether a return raises its alert (a run bounds how many it raises).
  /// `verified`: the match's payments, read and checked in `txn` by the caller.
  ///
  /// `line`: the report line of the run that makes the match, written next in the same
  /// transaction with the whole match; the match record then refers to it (13 bytes instead of
  /// the match again). A match by hand has no line: its record holds it whole.
  static func apply(
    _ match: EntryMatch, settle: Bool, returned: Bool, at time: Instant, raiseAlerts: Bool = true, verified: [Payment]? = nil,
    line: ReportLine? = nil, txn: inout WriteTransaction
  ) throws -> (settled: Bool, returned: Bool)? {
    if verified == nil { guard try txn.get(match.entryKey, in: .reconMatches) == nil else { return nil } }
    var payments: [Payment] = verified ?? []
    for id in match.paymentIDs where verified == nil {
      // A return books a payment a second time (its debit holds the payment's match). A
      // payment a clerk unmatched is held (an empty record) for a clerk's match only.
      if !returned, let held = try txn.get(Array(id.utf8), in: .reconPaymentMatches), !(match.method == .manual && held.isEmpty) {
        return nil
      }
      guard let bytes = try txn.get(Array(id.utf8), in: .payments) else { return nil }
      let payment = try Payment(record: bytes)
      guard payment.instruction.debtorAccountID == match.accountID else { return nil }
      if settle || returned { guard isReconcilable(payment.status) || payment.status == .returned else { return nil } }
      // Only an EndToEndId (score 1000) or a clerk settles a payment still being submitted.
      if payment.status == .submitting, match.score < 1000 { return nil }
      payments.append(payment)
    }
    var settledAny = false
    var returnedAny = false
    for var payment in payments {
      let before = payment.status
      if settle, before != .settled {
        guard case .success = payment.apply(.bankSettled, at: time) else { continue }
      }
      if returned {
        if payment.status != .settled, payment.status != .returned { _ = payment.apply(.bankSettled, at: time) }
        guard case .success = payment.apply(.returned, at: time, reason: LogText.prefix(match.reason, maxBytes: 256)) else { continue }
      }
      guard payment.status != before else { continue }
      try Reservations.releaseIfDue(payment, txn: &txn)
      try txn.putPayment(payment, replacing: before)
      try AuditJournal.append(
        &txn, at: time, principal: "reconciliation", action: "payment.\(payment.status.rawValue)", object: payment.id,
        details: ["entry_id": match.entryID, "method": match.method.name, "reason": LogText.prefix(match.reason, maxBytes: 512)])
      if payment.status == .settled { settledAny = true }
      if payment.status == .returned {
        returnedAny = true
        guard raiseAlerts else { continue }
        try AlertLog.raise(
          &txn, at: time, severity: .warning, kind: .bankRejection, paymentID: payment.id, accountID: match.accountID,
          message: "the bank's statement returns payment \(payment.id): \(match.reason)", details: ["entry_id": match.entryID])
        try RejectionBurst.note(paymentID: payment.id, accountID: match.accountID, at: time, txn: &txn)
      }
    }
    try txn.put(match.entryKey, line.map(ReconRecords.encode(line:)) ?? ReconRecords.encode(match), in: .reconMatches)
    if !returned {
      for id in match.paymentIDs { try txn.put(Array(id.utf8), match.entryKey, in: .reconPaymentMatches) }
    }
    return (settledAny, returnedAny)
  }

  // MARK: By hand

  public func match(entryID: String, paymentIDs: [String], note: String, by principal: String) throws -> (EntryMatch, JournalReceipt) {
    guard let key = ReconciliationIDs.entryKey(entryID) else { throw ReconciliationRefusal.entryNotFound(entryID) }
    let time = self.now()
    return try self.store.withWriteTransaction { txn in
      guard let bytes = try txn.get(key, in: .statementEntries),
        let statement = try txn.get(Array(key.prefix(8)), in: .statements).map(StatementKeys.decodeStatement), statement.complete
      else { throw ReconciliationRefusal.entryNotFound(entryID) }
      let (account, entry) = try StatementKeys.decodeEntry(bytes)
      guard entry.status == "BOOK" else { throw ReconciliationRefusal.notBooked(entryID, entry.status) }
      if try txn.get(key, in: .reconMatches) != nil { throw ReconciliationRefusal.alreadyMatched(entryID) }
      var sum: Int64 = 0
      let incoming = entry.direction == .credit
      for id in paymentIDs {
        guard let record = try txn.get(Array(id.utf8), in: .payments) else { throw ReconciliationRefusal.paymentNotFound(id) }
        let payment = try Payment(record: record)
        guard payment.instruction.debtorAccountID == account else { throw ReconciliationRefusal.wrongAccount(paymentID: id, accountID: account) }
        if let held = try txn.get(Array(id.utf8), in: .reconPaymentMatches), !(held.isEmpty || incoming) {
          throw ReconciliationRefusal.paymentAlreadyMatched(id)
        }
        guard Self.isReconcilable(payment.status) || (incoming && payment.status == .returned) else {
          throw ReconciliationRefusal.paymentNotReconcilable(id, payment.status.rawValue)
        }
        sum &+= payment.instruction.amount.minorUnits
      }
      let match = EntryMatch(
        entryKey: key, accountID: account, paymentIDs: paymentIDs, method: .manual, score: 1000,
        reason: "matched by \(principal): booked \(entry.amountMinor) for \(sum)", differenceMinor: entry.amountMinor - sum,
        currency: entry.currency, matchedBy: principal, time: time, note: note)
      guard try Self.apply(match, settle: !incoming, returned: incoming, at: time, txn: &txn) != nil else {
        throw ReconciliationRefusal.paymentAlreadyMatched(paymentIDs.joined(separator: ", "))
      }
      let receipt = try AuditJournal.append(
        &txn, at: time, principal: principal, action: "reconciliation.matched", object: entryID,
        details: ["payments": paymentIDs.joined(separator: ","), "note": note, "difference": String(match.differenceMinor)])
      return (match, receipt)
    }
  }

  public func unmatch(entryID: String, note: String, by principal: String) throws -> JournalReceipt {
    guard let key = ReconciliationIDs.entryKey(entryID) else { throw ReconciliationRefusal.entryNotFound(entryID) }
    let time = self.now()
    return try self.store.withWriteTransaction { txn in
      guard let bytes = try txn.get(key, in: .reconMatches) else { throw ReconciliationRefusal.notMatched(entryID) }
      let match = try ReconRecords.storedMatch(bytes, key: key, txn: txn)
      _ = try txn.delete(key, in: .reconMatches)
      // The payments are held (an empty record) for a clerk: an automatic run would otherwise
      // match them straight back to whatever fits, which is what the clerk just undid.
      for id in match.paymentIDs where try txn.get(Array(id.utf8), in: .reconPaymentMatches) == key {
        try txn.put(Array(id.utf8), [], in: .reconPaymentMatches)
      }
      return try AuditJournal.append(
        &txn, at: time, principal: principal, action: "reconciliation.unmatched", object: entryID,
        details: ["payments": match.paymentIDs.joined(separator: ","), "method": match.method.name, "note": note])
    }
  }

  // MARK: Reports

  static let reportHeadKey = Array("reconciliation_report_head".utf8)

  static func lastReport(_ txn: some ReadableTransaction) throws -> UInt64 {
    guard let bytes = try txn.get(Self.reportHeadKey, in: .meta) else { return 0 }
    var reader = RecordReader(bytes)
    return try reader.readUInt64()
  }

  public func report(_ sequence: UInt64) throws -> ReconciliationReportHeader? {
    try self.store.withReadTransaction { txn in try Self.report(sequence, txn: txn) }
  }

  /// A report's header as `txn` sees it. A format-1 header (written, before the format had the
  /// flag, only when a run ended) is complete unless the run's journal entry says it was cut
  /// short by an error.
  static func report(_ sequence: UInt64, txn: some ReadableTransaction) throws -> ReconciliationReportHeader? {
    guard let bytes = try txn.get(StatementKeys.statement(sequence), in: .reconReports) else { return nil }
    var header = try ReconRecords.decodeHeader(bytes)
    if bytes.first == 1, let run = try AuditJournal.entries(about: header.id, limit: 1, in: txn).first {
      header.complete = run.action != "reconciliation.run" || run.details["incomplete"] == nil
    }
    return header
  }

  /// A report's header and a page of its items from `index`, read in one transaction (a run
  /// still going commits lines and header together: the page never holds lines its header does
  /// not count).
  public func page(
    of sequence: UInt64, from index: UInt32, limit: Int
  ) throws -> (header: ReconciliationReportHeader, items: [(index: UInt32, item: ReportItem, entry: StoredStatementEntry?, payment: Payment?)], more: Bool)? {
    try self.store.withReadTransaction { txn in
      guard let header = try Self.report(sequence, txn: txn) else { return nil }
      let page = try Self.items(of: sequence, from: index, limit: limit, txn: txn)
      return (header, page.items, page.more)
    }
  }

  /// A page of a report's items from `index`, each with the entry or payment it names.
  public func items(
    of sequence: UInt64, from index: UInt32, limit: Int
  ) throws -> (items: [(index: UInt32, item: ReportItem, entry: StoredStatementEntry?, payment: Payment?)], more: Bool) {
    try self.store.withReadTransaction { txn in try Self.items(of: sequence, from: index, limit: limit, txn: txn) }
  }

  static func items(
    of sequence: UInt64, from index: UInt32, limit: Int, txn: some ReadableTransaction
  ) throws -> (items: [(index: UInt32, item: ReportItem, entry: StoredStatementEntry?, payment: Payment?)], more: Bool) {
    var found: [(UInt32, ReportItem, StoredStatementEntry?, Payment?)] = []
    var more = false
    let prefix = StatementKeys.statement(sequence)
    try txn.scan(.reconReportItems, from: ReconRecords.itemKey(sequence, index)) { key, value in
      guard key.count == 12, key.starts(with: prefix) else { return false }
      if found.count == limit {
        more = true
        return false
      }
      var reader = RecordReader(Array(key.suffix(4)))
      let position = try reader.readUInt32()
      let item = try ReconRecords.decodeItem(value)
      var entry: StoredStatementEntry?
      var payment: Payment?
      func load(_ entryKey: [UInt8]) throws {
        guard let bytes = try txn.get(entryKey, in: .statementEntries) else { return }
        var keyReader = RecordReader(entryKey)
        let statement = try keyReader.readUInt64()
        let entryIndex = try keyReader.readUInt32()
        let (account, decoded) = try StatementKeys.decodeEntry(bytes)
        entry = StoredStatementEntry(statementSequence: statement, index: entryIndex, accountID: account, entry: decoded)
      }
      switch item {
      case .match(let match): try load(match.entryKey)
      case .unmatchedEntry(let entryKey, _, _): try load(entryKey)
      case .unmatchedPayment(let id): payment = try txn.get(Array(id.utf8), in: .payments).map(Payment.init(record:))
      }
      found.append((position, item, entry, payment))
      return true
    }
    return (found, more)
  }

  /// The stored match of an entry, if any.
  public func match(of entryID: String) throws -> EntryMatch? {
    guard let key = ReconciliationIDs.entryKey(entryID) else { return nil }
    return try self.store.withReadTransaction { txn in
      try txn.get(key, in: .reconMatches).map { try ReconRecords.storedMatch($0, key: key, txn: txn) }
    }
  }
}

/// Record layouts of the reconciliation databases.
enum ReconRecords {
  static func itemKey(_ report: UInt64, _ index: UInt32) -> [UInt8] {
    var writer = RecordWriter(capacity: 12)
    writer.write(report)
    writer.write(index)
    return writer.bytes
  }

  /// Formats of a ``Database/reconMatches`` record: the match whole (a match by hand, and every
  /// match earlier builds wrote), or the report line of the run that made it, which holds it
  /// whole. Report lines are never deleted, so the line outlives the match (an unmatch deletes
  /// the match record and leaves the report as the run wrote it).
  static let wholeMatchFormat: UInt8 = 1
  static let lineMatchFormat: UInt8 = 2

  static func encode(line: ReportLine) -> [UInt8] {
    var writer = RecordWriter(capacity: 13)
    writer.write(Self.lineMatchFormat)
    writer.write(line.report)
    writer.write(line.index)
    return writer.bytes
  }

  /// The match a ``Database/reconMatches`` record stores, in either format.
  static func storedMatch(_ bytes: [UInt8], key: [UInt8], txn: some ReadableTransaction) throws -> EntryMatch {
    guard bytes.first == Self.lineMatchFormat else { return try Self.decodeMatch(bytes, key: key) }
    var reader = RecordReader(bytes)
    _ = try reader.readUInt8()
    let report = try reader.readUInt64()
    let index = try reader.readUInt32()
    try reader.finish()
    guard let line = try txn.get(Self.itemKey(report, index), in: .reconReportItems),
      case .match(let match) = try Self.decodeItem(line), match.entryKey == key
    else {
      throw StoreError(code: .corrupted, message: "the match of entry \(Hex.encode(key)) names report line \(report).\(index), which does not hold it")
    }
    return match
  }

  static func encode(_ match: EntryMatch) -> [UInt8] {
    var writer = RecordWriter(capacity: 128)
    writer.write(Self.wholeMatchFormat)
    writer.write(match.accountID)
    writer.write(UInt32(match.paymentIDs.count))
    for id in match.paymentIDs { writer.write(id) }
    writer.write(match.method.rawValue)
    writer.write(UInt32(clamping: max(0, match.score)))
    writer.write(match.reason)
    writer.write(match.differenceMinor)
    writer.write(match.currency)
    writer.write(match.matchedBy)
    writer.write(match.time.millisecondsSinceEpoch)
    writer.write(match.note)
    return writer.bytes
  }

  static func decodeMatch(_ bytes: [UInt8], key: [UInt8]) throws -> EntryMatch {
    var reader = RecordReader(bytes)
    let match = try Self.decodeMatch(&reader, key: key)
    try reader.finish()
    return match
  }

  static func decodeMatch(_ reader: inout RecordReader, key: [UInt8]) throws -> EntryMatch {
    guard try reader.readUInt8() == Self.wholeMatchFormat else { throw StoreError(code: .corrupted, message: "match record of an unknown format") }
    let account = try reader.readString()
    let count = Int(try reader.readUInt32())
    guard count <= FormatLimits.maxDetailsPerEntry else { throw StoreError(code: .corrupted, message: "match naming \(count) payments") }
    var ids: [String] = []
    for _ in 0..<count { ids.append(try reader.readString()) }
    guard let method = MatchMethod(rawValue: try reader.readUInt8()) else {
      throw StoreError(code: .corrupted, message: "match of an unknown method")
    }
    return EntryMatch(
      entryKey: key, accountID: account, paymentIDs: ids, method: method, score: Int(try reader.readUInt32()), reason: try reader.readString(),
      differenceMinor: try reader.readInt64(), currency: try reader.readString(), matchedBy: try reader.readString(),
      time: Instant(millisecondsSinceEpoch: try reader.readInt64()), note: try reader.readString())
  }

  static func encode(_ item: ReportItem) -> [UInt8] {
    var writer = RecordWriter(capacity: 128)
    switch item {
    case .match(let match):
      writer.write(UInt8(1))
      writer.writeRaw(match.entryKey)
      writer.writeRaw(Self.encode(match))
    case .unmatchedEntry(let key, let classification, let reason):
      writer.write(UInt8(2))
      writer.writeRaw(key)
      writer.write(classification)
      writer.write(reason)
    case .unmatchedPayment(let id):
      writer.write(UInt8(3))
      writer.write(id)
    }
    return writer.bytes
  }

  static func decodeItem(_ bytes: [UInt8]) throws -> ReportItem {
    var reader = RecordReader(bytes)
    switch try reader.readUInt8() {
    case 1:
      let key = try reader.readBytes(12)
      let match = try Self.decodeMatch(&reader, key: key)
      try reader.finish()
      return .match(match)
    case 2:
      let key = try reader.readBytes(12)
      let item = ReportItem.unmatchedEntry(entryKey: key, classification: try reader.readString(), reason: try reader.readString())
      try reader.finish()
      return item
    case 3:
      let item = ReportItem.unmatchedPayment(paymentID: try reader.readString())
      try reader.finish()
      return item
    default:
      throw StoreError(code: .corrupted, message: "report item of an unknown kind")
    }
  }

  /// Format 2 adds `complete` at the end; a format-1 header (written before it existed, only
  /// when a run finished) reads as complete.
  static let headerFormat: UInt8 = 2

  static func encode(_ header: ReconciliationReportHeader) -> [UInt8] {
    var writer = RecordWriter(capacity: 128)
    writer.write(Self.headerFormat)
    writer.write(header.sequence)
    writer.write(header.createdAt.millisecondsSinceEpoch)
    writer.write(header.createdBy)
    writer.write(header.accountID)
    writer.write(header.fromDate)
    writer.write(header.toDate)
    for count in [header.matched, header.unmatchedEntries, header.unmatchedPayments, header.settled, header.returned] {
      writer.write(UInt64(count))
    }
    writer.write(UInt8(header.complete ? 1 : 0))
    return writer.bytes
  }

  static func decodeHeader(_ bytes: [UInt8]) throws -> ReconciliationReportHeader {
    var reader = RecordReader(bytes)
    let format = try reader.readUInt8()
    guard format == 1 || format == Self.headerFormat else { throw StoreError(code: .corrupted, message: "report of an unknown format") }
    var header = ReconciliationReportHeader(
      sequence: try reader.readUInt64(), createdAt: Instant(millisecondsSinceEpoch: try reader.readInt64()),
      createdBy: try reader.readString(), accountID: try reader.readString(), fromDate: try reader.readString(),
      toDate: try reader.readString())
    header.matched = Int(try reader.readUInt64())
    header.unmatchedEntries = Int(try reader.readUInt64())
    header.unmatchedPayments = Int(try reader.readUInt64())
    header.settled = Int(try reader.readUInt64())
    header.returned = Int(try reader.readUInt64())
    header.complete = format == 1 ? true : try reader.readUInt8() == 1
    try reader.finish()
    return header
  }
}
