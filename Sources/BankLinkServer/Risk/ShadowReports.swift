import BankLinkCore
import BankLinkStore

/// What a shadow rule set decided on live payments, compared with the active set, kept per
/// shadow version in `risk_shadow` (docs/rules.md, "Shadow rule sets"):
///
/// - `T` + version → the totals: when and by whom the set was put, payments evaluated, outcome
///   pairs (active × shadow), payments whose outcome differs, rule errors;
/// - `R` + version + rule id → how often that rule held;
/// - `D` + version + (2⁶⁴−1 − payment sequence) → one payment whose outcome differs: newest
///   first in key order, with the shadow decision and the active outcome.
///
/// Every record is written in the transaction that creates the payment, so the report counts
/// exactly the payments that exist.
enum ShadowReports {
  /// Differences kept per shadow version; later ones are counted, not listed.
  static let maxDifferencesKept: Int64 = 100_000
  /// Hits, and explanation lines per hit, kept with a difference (the decision on the payment
  /// itself, in `risk_decisions`, is the active one's): a few KB per difference, so a page of
  /// them stays well inside a gRPC message.
  static let maxHitsKept = 16
  static let maxExplanationLinesKept = 4
  static let totalsFormat: UInt8 = 1
  static let differenceFormat: UInt8 = 1

  struct Totals: Sendable, Hashable {
    var since: Instant
    var putBy: String
    var evaluated: Int64 = 0
    var changed: Int64 = 0
    var ruleErrors: Int64 = 0
    var differencesKept: Int64 = 0
    var differencesNotKept: Int64 = 0
    /// Indexed by `(active - 1) * 3 + (shadow - 1)` (actions are 1...3).
    var outcomes = [Int64](repeating: 0, count: 9)

    static func index(active: RiskAction, shadow: RiskAction) -> Int { (active.rawValue - 1) * 3 + (shadow.rawValue - 1) }

    var record: [UInt8] {
      var writer = RecordWriter(capacity: 160)
      writer.write(ShadowReports.totalsFormat)
      writer.write(self.since.millisecondsSinceEpoch)
      writer.write(self.putBy)
      for value in [self.evaluated, self.changed, self.ruleErrors, self.differencesKept, self.differencesNotKept] + self.outcomes {
        writer.write(value)
      }
      return writer.bytes
    }

    init(since: Instant, putBy: String) {
      self.since = since
      self.putBy = putBy
    }

    init(record: [UInt8]) throws {
      var reader = RecordReader(record)
      guard try reader.readUInt8() == ShadowReports.totalsFormat else {
        throw StoreError(code: .corrupted, message: "unknown shadow report format")
      }
      self.since = Instant(millisecondsSinceEpoch: try reader.readInt64())
      self.putBy = try reader.readString()
      self.evaluated = try reader.readInt64()
      self.changed = try reader.readInt64()
      self.ruleErrors = try reader.readInt64()
      self.differencesKept = try reader.readInt64()
      self.differencesNotKept = try reader.readInt64()
      self.outcomes = try (0..<9).map { _ in try reader.readInt64() }
      try reader.finish()
    }
  }

  /// A payment on which the shadow set decided otherwise than the active set.
  struct Difference: Sendable {
    var paymentID: String
    var createdAt: Instant
    var activeOutcome: RiskAction
    var activeVersion: UInt64
    var shadow: RiskDecision
  }

  static func key(_ kind: UInt8, _ version: UInt64) -> [UInt8] {
    var writer = RecordWriter(capacity: 24)
    writer.write(kind)
    writer.write(version)
    return writer.bytes
  }

  static func totalsKey(_ version: UInt64) -> [UInt8] { Self.key(UInt8(ascii: "T"), version) }

  static func ruleKey(_ version: UInt64, _ ruleID: String) -> [UInt8] { Self.key(UInt8(ascii: "R"), version) + Array(ruleID.utf8) }

  static func differenceKey(_ version: UInt64, paymentSequence: UInt64) -> [UInt8] {
    var writer = RecordWriter(capacity: 24)
    writer.writeRaw(Self.key(UInt8(ascii: "D"), version))
    writer.write(UInt64.max - paymentSequence)
    return writer.bytes
  }

  /// Opens the report of a shadow set just put.
  static func start(version: UInt64, at now: Instant, by principal: String, txn: inout WriteTransaction) throws {
    try txn.put(Self.totalsKey(version), Totals(since: now, putBy: principal).record, in: .riskShadow)
  }

  /// Counts one payment's shadow decision against the active one (nil: no active set, so the
  /// payment was allowed by the rules), and keeps it when they differ.
  static func record(
    _ shadow: RiskDecision, active: RiskDecision?, features: FeatureSnapshot, paymentID: String, paymentSequence: UInt64,
    at now: Instant, txn: inout WriteTransaction
  ) throws {
    let version = shadow.ruleSetVersion
    var totals = try txn.get(Self.totalsKey(version), in: .riskShadow).map(Totals.init(record:))
      ?? Totals(since: now, putBy: "")
    let activeOutcome = active?.outcome ?? .allow
    totals.evaluated += 1
    totals.outcomes[Totals.index(active: activeOutcome, shadow: shadow.outcome)] += 1
    for hit in shadow.hits {
      if !hit.error.isEmpty { totals.ruleErrors += 1 }
      let key = Self.ruleKey(version, hit.ruleID)
      var count: Int64 = 0
      if let bytes = try txn.get(key, in: .riskShadow) {
        var reader = RecordReader(bytes)
        count = try reader.readInt64()
      }
      var writer = RecordWriter(capacity: 8)
      writer.write(count + 1)
      try txn.put(key, writer.bytes, in: .riskShadow)
    }
    if shadow.outcome != activeOutcome {
      totals.changed += 1
      if totals.differencesKept < Self.maxDifferencesKept {
        totals.differencesKept += 1
        var writer = RecordWriter(capacity: 256)
        writer.write(Self.differenceFormat)
        writer.write(paymentID)
        writer.write(now.millisecondsSinceEpoch)
        writer.write(UInt8(activeOutcome.rawValue))
        writer.write(active?.ruleSetVersion ?? 0)
        var kept = shadow
        kept.hits = shadow.hits.prefix(Self.maxHitsKept).map { hit in
          var hit = hit
          hit.because = Array(hit.because.prefix(Self.maxExplanationLinesKept))
          return hit
        }
        let decision = kept.record(features: features)
        writer.write(UInt32(decision.count))
        writer.writeRaw(decision)
        try txn.put(Self.differenceKey(version, paymentSequence: paymentSequence), writer.bytes, in: .riskShadow)
      } else {
        totals.differencesNotKept += 1
      }
    }
    try txn.put(Self.totalsKey(version), totals.record, in: .riskShadow)
  }

  static func totals(_ version: UInt64, in txn: some ReadableTransaction) throws -> Totals? {
    try txn.get(Self.totalsKey(version), in: .riskShadow).map(Totals.init(record:))
  }

  /// How often each rule of shadow set `version` held, at most `RiskLimits.maxRules` rules.
  static func hitsByRule(_ version: UInt64, in txn: some ReadableTransaction) throws -> [String: Int64] {
    let prefix = Self.key(UInt8(ascii: "R"), version)
    var hits: [String: Int64] = [:]
    try txn.scan(.riskShadow, from: prefix) { key, value in
      guard key.starts(with: prefix), hits.count < RiskLimits.maxRules else { return false }
      var reader = RecordReader(value)
      hits[String(decoding: key[prefix.count...], as: UTF8.self)] = try reader.readInt64()
      return true
    }
    return hits
  }

  /// Up to `limit` differences of `version`, newest first, from the key `after` (exclusive);
  /// with the key to continue after when there may be more.
  static func differences(
    _ version: UInt64, after: [UInt8]?, limit: Int, in txn: some ReadableTransaction
  ) throws -> (differences: [Difference], next: [UInt8]?) {
    let prefix = Self.key(UInt8(ascii: "D"), version)
    var found: [Difference] = []
    var last: [UInt8]?
    var more = false
    try txn.scan(.riskShadow, from: after ?? prefix) { key, value in
      guard key.starts(with: prefix) else { return false }
      if let after, key == after { return true }
      guard found.count < limit else {
        more = true
        return false
      }
      var reader = RecordReader(value)
      guard try reader.readUInt8() == Self.differenceFormat else {
        throw StoreError(code: .corrupted, message: "unknown shadow difference format")
      }
      let paymentID = try reader.readString()
      let createdAt = Instant(millisecondsSinceEpoch: try reader.readInt64())
      guard let activeOutcome = RiskAction(rawValue: Int(try reader.readUInt8())) else {
        throw StoreError(code: .corrupted, message: "unknown risk action in a shadow difference")
      }
      let activeVersion = try reader.readUInt64()
      let (decision, _) = try RiskDecision.decode(try reader.readBytes(Int(try reader.readUInt32())))
      try reader.finish()
      found.append(Difference(
        paymentID: paymentID, createdAt: createdAt, activeOutcome: activeOutcome, activeVersion: activeVersion, shadow: decision))
      last = key
      return true
    }
    return (found, more ? last : nil)
  }

  /// The big-endian integer at `offset` of a key (the caller knows the key is long enough).
  static func uint64(_ key: [UInt8], at offset: Int) -> UInt64 {
    key[offset..<offset + 8].reduce(0) { ($0 << 8) | UInt64($1) }
  }

}
