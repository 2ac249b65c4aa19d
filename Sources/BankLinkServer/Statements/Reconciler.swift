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
/// A run decides on one read snapshot (on a thread of its own), then applies its decisions in
/// write transactions of ``Limits/statementEntriesPerCommit``, re-checking each against the
/// committed state: an entry matched meanwhile (by a clerk, or another run) and a payment that
/// moved (a status report) are left as they are, never matched twice.
public final class Reconciler: Sendable {
  let store: Store
  let settings: ReconciliationSettings
  let now: @Sendable () -> Instant

  public init(store: Store, settings: ReconciliationSettings = .init(), now: @escaping @Sendable () -> Instant) {
    self.store = store
    self.settings = settings
    self.now = now
  }

  /// Payment states a booked entry can explain: with the bank, or settled by a pain.002.
  static let reconcilable: Set<PaymentStatus> = [.submitting, .submitted, .accepted, .settled]

  enum Decision {
    case match(EntryMatch, settle: Bool, returned: Bool)
    case unmatched(entryKey: [UInt8], classification: String, reason: String)
  }

  public struct Outcome: Sendable {
    public var report: ReconciliationReportHeader
    public var receipt: JournalReceipt
  }

  // MARK: A run

  /// Reconciles the booked entries of `accountID` (nil: every account) with booking dates in
  /// `fromDate...toDate` (ISO dates; empty: unbounded) and stores a report. With `statements`,
  /// only the entries of those statements are considered (the run after an import: earlier
  /// statements' unmatched entries were reported by earlier runs, and listing them again after
  /// every import would grow the stored reports with the square of the entries).
  public func reconcile(
    accountID: String?, fromDate: String, toDate: String, statements: [UInt64]? = nil, by principal: String
  ) throws -> Outcome {
    let time = self.now()
    let (decisions, unmatchedPayments) = try self.store.withReadTransaction { txn in
      try self.decide(accountID: accountID, fromDate: fromDate, toDate: toDate, statements: statements, at: time, txn: txn)
    }
    var header = ReconciliationReportHeader(
      sequence: 0, createdAt: time, createdBy: principal, accountID: accountID ?? "", fromDate: fromDate, toDate: toDate)
    var items: [ReportItem] = []
    var index = 0
    while index < decisions.count {
      let chunk = decisions[index..<min(index + Limits.statementEntriesPerCommit, decisions.count)]
      index += chunk.count
      try self.store.withWriteTransaction { txn in
        for decision in chunk {
          switch decision {
          case .unmatched(let key, let classification, let reason):
            // Matched meanwhile (by hand): that match stands, and is not this run's.
            if try txn.get(key, in: .reconMatches) != nil { continue }
            items.append(.unmatchedEntry(entryKey: key, classification: classification, reason: reason))
          case .match(let match, let settle, let returned):
            let alerts = header.returned < Limits.maxBreakAlertsPerImport
            guard let applied = try Self.apply(match, settle: settle, returned: returned, at: time, raiseAlerts: alerts, txn: &txn) else {
              items.append(.unmatchedEntry(entryKey: match.entryKey, classification: "unexplained", reason: "a candidate payment changed during the run; run again"))
              continue
            }
            items.append(.match(match))
            header.settled += applied.settled ? 1 : 0
            header.returned += applied.returned ? 1 : 0
          }
        }
      }
    }
    for paymentID in unmatchedPayments { items.append(.unmatchedPayment(paymentID: paymentID)) }
    return try self.store.withWriteTransaction { txn in
      // Payments matched by a clerk meanwhile are no longer unmatched.
      items = try items.filter { item in
        if case .unmatchedPayment(let id) = item { return try txn.get(Array(id.utf8), in: .reconPaymentMatches) == nil }
        return true
      }
      header.sequence = try Self.lastReport(txn) + 1
      for item in items {
        switch item {
        case .match: header.matched += 1
        case .unmatchedEntry: header.unmatchedEntries += 1
        case .unmatchedPayment: header.unmatchedPayments += 1
        }
      }
      try Self.write(header, items: items, txn: &txn)
      if header.returned > Limits.maxBreakAlertsPerImport {
        try AlertLog.raise(
          &txn, at: time, severity: .warning, kind: .bankRejection, accountID: header.accountID,
          message: "reconciliation \(header.id) found \(header.returned) returned payments; alerts were raised for the first \(Limits.maxBreakAlertsPerImport)")
      }
      // The bank booked payments the daemon does not hold open (failed, cancelled, another
      // account's): an anomaly for someone to look at, one alert per run.
      let strays = items.filter { item in
        if case .unmatchedEntry(_, "reference_not_open", _) = item { return true }
        return false
      }
      if !strays.isEmpty {
        try AlertLog.raise(
          &txn, at: time, severity: .warning, kind: .anomaly, accountID: header.accountID,
          message: "reconciliation \(header.id): \(strays.count) booked entries carry the EndToEndId of a payment the daemon does not hold open",
          details: ["report_id": header.id])
      }
      let receipt = try AuditJournal.append(
        &txn, at: time, principal: principal, action: "reconciliation.run", object: header.id,
        details: [
          "account_id": header.accountID, "from_date": fromDate, "to_date": toDate, "matched": String(header.matched),
          "unmatched_entries": String(header.unmatchedEntries), "unmatched_payments": String(header.unmatchedPayments),
          "settled": String(header.settled), "returned": String(header.returned),
        ])
      return Outcome(report: header, receipt: receipt)
    }
  }

  /// Every decision of a run, on one snapshot.
  func decide(
    accountID: String?, fromDate: String, toDate: String, statements only: [UInt64]? = nil, at time: Instant, txn: ReadTransaction
  ) throws -> (decisions: [Decision], unmatchedPayments: [String]) {
    // The entries in scope: booked, in the window, not matched.
    var entries: [(key: [UInt8], accountID: String, entry: StatementEntry)] = []
    var accounts: Set<String> = []
    func visit(statement sequence: UInt64) throws {
      guard let bytes = try txn.get(StatementKeys.statement(sequence), in: .statements) else { return }
      let statement = try StatementKeys.decodeStatement(bytes)
      guard statement.complete else { return }
      if !fromDate.isEmpty, !statement.toDate.isEmpty, statement.toDate < fromDate { return }
      if !toDate.isEmpty, !statement.fromDate.isEmpty, statement.fromDate > toDate { return }
      let prefix = StatementKeys.statement(sequence)
      try txn.scan(.statementEntries, from: StatementKeys.entry(sequence, 0)) { key, value in
        guard key.count == 12, key.starts(with: prefix) else { return false }
        let (account, entry) = try StatementKeys.decodeEntry(value)
        guard entry.status == "BOOK" else { return true }
        if !fromDate.isEmpty, entry.bookingDate < fromDate { return true }
        if !toDate.isEmpty, entry.bookingDate > toDate { return true }
        if try txn.get(key, in: .reconMatches) != nil { return true }
        guard entries.count < Limits.maxReconciliationEntries else {
          throw ReconciliationRefusal.scopeTooLarge(entries: entries.count + 1, payments: 0)
        }
        entries.append((key, account, entry))
        accounts.insert(account)
        return true
      }
    }
    if let only {
      if let accountID { accounts.insert(accountID) }
      for sequence in only { try visit(statement: sequence) }
    } else if let accountID {
      accounts.insert(accountID)
      let prefix = StatementKeys.accountPrefix(accountID)
      var sequences: [UInt64] = []
      try txn.scan(.statementsByAccount, from: prefix) { key, _ in
        guard key.count == prefix.count + 8, key.starts(with: prefix) else { return false }
        var reader = RecordReader(Array(key.suffix(8)))
        sequences.append(try reader.readUInt64())
        return true
      }
      for sequence in sequences { try visit(statement: sequence) }
    } else {
      var sequences: [UInt64] = []
      try txn.scan(.statements) { key, _ in
        var reader = RecordReader(key)
        sequences.append(try reader.readUInt64())
        return true
      }
      for sequence in sequences { try visit(statement: sequence) }
    }

    // The payments those entries may book: of the same accounts, with the bank or settled,
    // not matched.
    var open: [String: Payment] = [:]
    var byAmount: [String: [Int64: [String]]] = [:]
    var byBatch: [String: [String: [String]]] = [:]
    try txn.scan(.payments) { key, value in
      let payment = try Payment(record: value)
      let account = payment.instruction.debtorAccountID
      guard accounts.contains(account), Self.reconcilable.contains(payment.status),
        try txn.get(key, in: .reconPaymentMatches) == nil
      else { return true }
      guard open.count < Limits.maxReconciliationEntries else {
        throw ReconciliationRefusal.scopeTooLarge(entries: entries.count, payments: open.count + 1)
      }
      open[payment.id] = payment
      // Only an EndToEndId proves the bank holds a payment still being submitted: matching
      // one by amount would settle a payment the outbox has yet to send.
      guard payment.status != .submitting else { return true }
      byAmount[account, default: [:]][payment.instruction.amount.minorUnits, default: []].append(payment.id)
      if !payment.batchID.isEmpty { byBatch[account, default: [:]][payment.batchID, default: []].append(payment.id) }
      return true
    }

    var decisions: [Decision] = []
    entries.sort {
      $0.entry.bookingDate != $1.entry.bookingDate ? $0.entry.bookingDate < $1.entry.bookingDate : $0.key.lexicographicallyPrecedes($1.key)
    }
    // Per account, the distinct payment amounts in order: a fee-tolerant look-up is a binary
    // search, not a scan of every amount.
    let sortedAmounts = byAmount.mapValues { $0.keys.sorted() }
    for (key, account, entry) in entries {
      let decision = try self.decide(
        key: key, account: account, entry: entry, open: open, byAmount: byAmount, sortedAmounts: sortedAmounts[account] ?? [],
        byBatch: byBatch, at: time, txn: txn)
      if case .match(let match, _, _) = decision {
        for id in match.paymentIDs {
          guard let payment = open.removeValue(forKey: id) else { continue }
          byAmount[account]?[payment.instruction.amount.minorUnits]?.removeAll { $0 == id }
          if !payment.batchID.isEmpty { byBatch[account]?[payment.batchID]?.removeAll { $0 == id } }
        }
      }
      decisions.append(decision)
    }
    // Payments left: unmatched when their execution date is inside the window's end (a payment
    // for tomorrow is not missing from today's statement).
    let unmatched = open.values.filter { toDate.isEmpty || $0.instruction.requestedExecutionDate <= toDate }
      .sorted { $0.id < $1.id }.map(\.id)
    return (decisions, unmatched)
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

  func decide(
    key: [UInt8], account: String, entry: StatementEntry, open: [String: Payment], byAmount: [String: [Int64: [String]]],
    sortedAmounts: [Int64], byBatch: [String: [String: [String]]], at time: Instant, txn: ReadTransaction
  ) throws -> Decision {
    func match(_ ids: [String], _ method: MatchMethod, _ score: Int, _ reason: String, difference: Int64 = 0) -> EntryMatch {
      EntryMatch(
        entryKey: key, accountID: account, paymentIDs: ids, method: method, score: score, reason: reason, differenceMinor: difference,
        currency: entry.currency, matchedBy: "auto", time: time, note: "")
    }
    let tolerance = self.settings.feeToleranceMinor
    let references = Self.references(entry)
    // A credit (or a reversed debit) carrying a payment's EndToEndId: the money came back.
    let incoming = entry.direction == .credit
    if !references.isEmpty {
      var found: [Payment] = []
      var elsewhere: [String] = []
      for reference in references {
        guard let id = try txn.get(Array(reference.utf8), in: .paymentsByEndToEnd).map({ String(decoding: $0, as: UTF8.self) }) else { continue }
        // A return is a second entry for a payment its debit may have matched already.
        let candidate = incoming ? try txn.get(Array(id.utf8), in: .payments).map(Payment.init(record:)) : open[id]
        guard let payment = candidate, payment.instruction.debtorAccountID == account,
          !incoming || Self.reconcilable.contains(payment.status)
        else {
          // The reference names a payment of ours that this entry cannot book: never guessed
          // past by amount, reported.
          let known = try txn.get(Array(id.utf8), in: .payments).map(Payment.init(record:))
          let matched = try txn.get(Array(id.utf8), in: .reconPaymentMatches) != nil
          elsewhere.append(
            known.map { payment in
              payment.instruction.debtorAccountID != account
                ? "\(payment.id) of account \(payment.instruction.debtorAccountID)"
                : matched ? "\(payment.id), matched to another entry" : "\(payment.id) in state \(payment.status.rawValue)"
            } ?? id)
          continue
        }
        if !found.contains(where: { $0.id == payment.id }) { found.append(payment) }
      }
      if found.isEmpty, !elsewhere.isEmpty {
        return .unmatched(
          entryKey: key, classification: "reference_not_open",
          reason: "its EndToEndId names \(elsewhere.prefix(5).joined(separator: ", ")): the bank booked a payment the daemon does not hold open")
      }
      if !found.isEmpty {
        let sum = found.reduce(Int64(0)) { $0 &+ $1.instruction.amount.minorUnits }
        let ids = found.map(\.id)
        let named = found.count == 1 ? "EndToEndId \(found[0].endToEndID)" : "the EndToEndIds of \(found.count) payments"
        if incoming {
          let reason = entry.details.first { !$0.returnReason.isEmpty }?.returnReason ?? ""
          guard !reason.isEmpty || entry.bankTransactionCode.uppercased().contains("RRTN") else {
            // A reversal undoes a booking (a debit booked twice); it does not return a payment.
            return .unmatched(
              entryKey: key, classification: entry.reversal ? "reversal" : "collection",
              reason: "a credit carrying \(named) without a return reason")
          }
          guard abs(entry.amountMinor &- sum) <= tolerance else {
            return .unmatched(
              entryKey: key, classification: "amount_mismatch",
              reason: "returns \(named) but credits \(entry.amountMinor) against \(sum) paid: beyond the tolerance of \(tolerance)")
          }
          return .match(
            match(ids, .returned, 1000, "\(named) returned (\(reason.isEmpty ? "RRTN" : reason)); amount \(entry.amountMinor) for \(sum)",
              difference: entry.amountMinor - sum), settle: false, returned: true)
        }
        let difference = entry.amountMinor - sum
        guard difference >= 0, difference <= tolerance else {
          return .unmatched(
            entryKey: key, classification: "amount_mismatch",
            reason: "\(named) (\(ids.joined(separator: ", "))) but booked \(entry.amountMinor) against \(sum) paid: beyond the fee tolerance of \(tolerance)")
        }
        let fee = difference == 0 ? "" : "; fee \(difference)"
        return .match(
          match(ids, found.count == 1 ? .reference : .batch, 1000, "\(named)\(fee)", difference: difference), settle: true, returned: false)
      }
    }
    if incoming { let (kind, why) = Self.classify(entry); return .unmatched(entryKey: key, classification: kind, reason: why) }

    // N:1: one booking for a batch, by the batch's sum and count.
    let count = entry.batchCount ?? (entry.details.count > 1 ? entry.details.count : nil)
    if let count, count > 1, let batches = byBatch[account] {
      let date = entry.valueDate.isEmpty ? entry.bookingDate : entry.valueDate
      var fits: [(batchID: String, ids: [String], difference: Int64, sum: Int64)] = []
      for (batchID, ids) in batches.sorted(by: { $0.key < $1.key }) where ids.count == count {
        let payments = ids.compactMap { open[$0] }
        let sum = payments.reduce(Int64(0)) { $0 &+ $1.instruction.amount.minorUnits }
        let difference = entry.amountMinor &- sum
        let near = payments.allSatisfy { payment in
          Self.daysBetween(date, payment.instruction.requestedExecutionDate).map { $0 <= self.settings.dateWindowDays } ?? true
        }
        if difference >= 0, difference <= tolerance, near { fits.append((batchID, ids.sorted(), difference, sum)) }
      }
      if fits.count > 1 {
        return .unmatched(
          entryKey: key, classification: "ambiguous",
          reason: "batches \(fits.prefix(3).map(\.batchID).joined(separator: ", ")) each have \(count) payments summing to the amount: match by hand")
      }
      if let fit = fits.first {
        return .match(
          match(fit.ids, .batch, 900, "batch \(fit.batchID): \(count) payments summing to \(fit.sum)\(fit.difference == 0 ? "" : "; fee \(fit.difference)")", difference: fit.difference),
          settle: true, returned: false)
      }
    }

    // Heuristic: amount (exact, or short of it by a fee), value date, counterparty, reference.
    var scored: [(id: String, score: Int, reason: String, difference: Int64)] = []
    if let amounts = byAmount[account] {
      var candidates: [(String, Int64)] = []
      // The first amount ≥ entry − tolerance, then every amount up to the entry's.
      var low = 0
      var high = sortedAmounts.count
      let floor = entry.amountMinor &- tolerance
      while low < high {
        let middle = (low + high) / 2
        if sortedAmounts[middle] < floor { low = middle + 1 } else { high = middle }
      }
      while low < sortedAmounts.count, sortedAmounts[low] <= entry.amountMinor {
        for id in amounts[sortedAmounts[low]] ?? [] { candidates.append((id, entry.amountMinor - sortedAmounts[low])) }
        low += 1
      }
      for (id, fee) in candidates {
        guard let payment = open[id] else { continue }
        var score = fee == 0 ? 400 : 300
        var reasons = [fee == 0 ? "amount \(entry.amountMinor)" : "amount \(entry.amountMinor) = \(payment.instruction.amount.minorUnits) + fee \(fee)"]
        let date = entry.valueDate.isEmpty ? entry.bookingDate : entry.valueDate
        if let days = Self.daysBetween(date, payment.instruction.requestedExecutionDate) {
          guard days <= self.settings.dateWindowDays else { continue }
          score += 200 - 200 * days / (self.settings.dateWindowDays + 1)
          reasons.append(days == 0 ? "value date \(date)" : "value date \(days) day(s) from \(payment.instruction.requestedExecutionDate)")
        }
        let name = entry.details.first?.counterpartyName ?? ""
        let similarity = Self.nameSimilarity(name, payment.instruction.creditor.name)
        if similarity > 0 {
          score += similarity * 300 / 100
          reasons.append("counterparty '\(LogText.prefix(name, maxBytes: 64))' \(similarity) % like '\(LogText.prefix(payment.instruction.creditor.name, maxBytes: 64))'")
        }
        let remittance = (entry.details.flatMap(\.remittance) + [entry.additionalInfo]).joined(separator: " ").uppercased()
        let purpose = payment.instruction.purpose.uppercased()
        if !purpose.isEmpty, remittance.contains(purpose) || Self.sharedReference(remittance, purpose) {
          score += 100
          reasons.append("remittance carries the payment's reference")
        }
        scored.append((id, min(score, 999), reasons.joined(separator: ", "), fee))
      }
    }
    scored.sort { $0.score != $1.score ? $0.score > $1.score : $0.id < $1.id }
    if let best = scored.first, best.score >= self.settings.minimumScore {
      if scored.count > 1, best.score - scored[1].score < self.settings.ambiguityMargin {
        return .unmatched(
          entryKey: key, classification: "ambiguous",
          reason: scored.prefix(3).map { "\($0.id) (\($0.score))" }.joined(separator: ", ") + " fit almost as well: match by hand")
      }
      return .match(match([best.id], .heuristic, best.score, best.reason, difference: best.difference), settle: true, returned: false)
    }
    var (kind, why) = Self.classify(entry)
    if kind == "unexplained", let best = scored.first {
      why = "best candidate \(best.id) scored \(best.score) (\(best.reason)), under \(self.settings.minimumScore)"
    }
    return .unmatched(entryKey: key, classification: kind, reason: why)
  }

  /// Whole days between two ISO dates, or nil when either is not one.
  static func daysBetween(_ a: String, _ b: String) -> Int? {
    guard let x = Instant(isoDate: a), let y = Instant(isoDate: b) else { return nil }
    return Int(abs(x.milliseconds(since: y)) / 86_400_000)
  }

  /// 0…100: how alike two names are, by their words (case, punctuation and legal-form words
  /// such as "Co", "Ltd", "GmbH" ignored; Chinese names compared by characters).
  static func nameSimilarity(_ a: String, _ b: String) -> Int {
    let noise: Set<String> = ["CO", "LTD", "LIMITED", "INC", "GMBH", "AG", "SA", "LLC", "CORP", "COMPANY", "THE", "有限公司", "公司"]
    func words(_ text: String) -> Set<String> {
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
  static func apply(
    _ match: EntryMatch, settle: Bool, returned: Bool, at time: Instant, raiseAlerts: Bool = true, txn: inout WriteTransaction
  ) throws -> (settled: Bool, returned: Bool)? {
    guard try txn.get(match.entryKey, in: .reconMatches) == nil else { return nil }
    var payments: [Payment] = []
    for id in match.paymentIDs {
      // A return books a payment a second time (its debit holds the payment's match). A
      // payment a clerk unmatched is held (an empty record) for a clerk's match only.
      if !returned, let held = try txn.get(Array(id.utf8), in: .reconPaymentMatches), !(match.method == .manual && held.isEmpty) {
        return nil
      }
      guard let bytes = try txn.get(Array(id.utf8), in: .payments) else { return nil }
      let payment = try Payment(record: bytes)
      guard payment.instruction.debtorAccountID == match.accountID else { return nil }
      if settle || returned { guard reconcilable.contains(payment.status) || payment.status == .returned else { return nil } }
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
      try txn.putPayment(payment)
      try AuditJournal.append(
        &txn, at: time, principal: "reconciliation", action: "payment.\(payment.status.rawValue)", object: payment.id,
        details: ["entry_id": match.entryID, "method": "\(match.method)", "reason": LogText.prefix(match.reason, maxBytes: 512)])
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
    try txn.put(match.entryKey, ReconRecords.encode(match), in: .reconMatches)
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
        guard Self.reconcilable.contains(payment.status) || (incoming && payment.status == .returned) else {
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
      let match = try ReconRecords.decodeMatch(bytes, key: key)
      _ = try txn.delete(key, in: .reconMatches)
      // The payments are held (an empty record) for a clerk: an automatic run would otherwise
      // match them straight back to whatever fits, which is what the clerk just undid.
      for id in match.paymentIDs where try txn.get(Array(id.utf8), in: .reconPaymentMatches) == key {
        try txn.put(Array(id.utf8), [], in: .reconPaymentMatches)
      }
      return try AuditJournal.append(
        &txn, at: time, principal: principal, action: "reconciliation.unmatched", object: entryID,
        details: ["payments": match.paymentIDs.joined(separator: ","), "method": "\(match.method)", "note": note])
    }
  }

  // MARK: Reports

  static let reportHeadKey = Array("reconciliation_report_head".utf8)

  static func lastReport(_ txn: some ReadableTransaction) throws -> UInt64 {
    guard let bytes = try txn.get(Self.reportHeadKey, in: .meta) else { return 0 }
    var reader = RecordReader(bytes)
    return try reader.readUInt64()
  }

  static func write(_ header: ReconciliationReportHeader, items: [ReportItem], txn: inout WriteTransaction) throws {
    var head = RecordWriter(capacity: 8)
    head.write(header.sequence)
    try txn.put(Self.reportHeadKey, head.bytes, in: .meta)
    try txn.put(StatementKeys.statement(header.sequence), ReconRecords.encode(header), in: .reconReports)
    for (index, item) in items.enumerated() {
      try txn.put(ReconRecords.itemKey(header.sequence, UInt32(index)), ReconRecords.encode(item), in: .reconReportItems)
    }
  }

  public func report(_ sequence: UInt64) throws -> ReconciliationReportHeader? {
    try self.store.withReadTransaction { txn in
      try txn.get(StatementKeys.statement(sequence), in: .reconReports).map(ReconRecords.decodeHeader)
    }
  }

  /// A page of a report's items from `index`, each with the entry or payment it names.
  public func items(
    of sequence: UInt64, from index: UInt32, limit: Int
  ) throws -> (items: [(index: UInt32, item: ReportItem, entry: StoredStatementEntry?, payment: Payment?)], more: Bool) {
    try self.store.withReadTransaction { txn in
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
  }

  /// The stored match of an entry, if any.
  public func match(of entryID: String) throws -> EntryMatch? {
    guard let key = ReconciliationIDs.entryKey(entryID) else { return nil }
    return try self.store.withReadTransaction { txn in
      try txn.get(key, in: .reconMatches).map { try ReconRecords.decodeMatch($0, key: key) }
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

  static func encode(_ match: EntryMatch) -> [UInt8] {
    var writer = RecordWriter(capacity: 128)
    writer.write(UInt8(1))
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
    guard try reader.readUInt8() == 1 else { throw StoreError(code: .corrupted, message: "match record of an unknown format") }
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

  static func encode(_ header: ReconciliationReportHeader) -> [UInt8] {
    var writer = RecordWriter(capacity: 128)
    writer.write(UInt8(1))
    writer.write(header.sequence)
    writer.write(header.createdAt.millisecondsSinceEpoch)
    writer.write(header.createdBy)
    writer.write(header.accountID)
    writer.write(header.fromDate)
    writer.write(header.toDate)
    for count in [header.matched, header.unmatchedEntries, header.unmatchedPayments, header.settled, header.returned] {
      writer.write(UInt64(count))
    }
    return writer.bytes
  }

  static func decodeHeader(_ bytes: [UInt8]) throws -> ReconciliationReportHeader {
    var reader = RecordReader(bytes)
    guard try reader.readUInt8() == 1 else { throw StoreError(code: .corrupted, message: "report of an unknown format") }
    var header = ReconciliationReportHeader(
      sequence: try reader.readUInt64(), createdAt: Instant(millisecondsSinceEpoch: try reader.readInt64()),
      createdBy: try reader.readString(), accountID: try reader.readString(), fromDate: try reader.readString(),
      toDate: try reader.readString())
    header.matched = Int(try reader.readUInt64())
    header.unmatchedEntries = Int(try reader.readUInt64())
    header.unmatchedPayments = Int(try reader.readUInt64())
    header.settled = Int(try reader.readUInt64())
    header.returned = Int(try reader.readUInt64())
    try reader.finish()
    return header
  }
}
