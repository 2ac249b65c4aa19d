import BankLinkCore
import BankLinkJournal
import BankLinkProto
import BankLinkStore
import Crypto
import Foundation
import SwiftProtobuf
import Synchronization

/// Which of the two rule sets: the one in force, or the shadow set evaluated beside it on live
/// traffic and recorded, never applied.
public enum RuleSetSlot: Sendable, Hashable {
  case active
  case shadow

  var metaKey: [UInt8] {
    switch self {
    case .active: Array("rule_set_version".utf8)
    case .shadow: Array("shadow_rule_set_version".utf8)
    }
  }

  var name: String {
    switch self {
    case .active: "active"
    case .shadow: "shadow"
    }
  }
}

/// The risk rule sets: versions kept in `rule_sets` (protobuf, by version), the active one and
/// the shadow one named in `meta`. Active and shadow sets share one version counter (meta
/// `rule_set_last_version`), so a version names exactly one set. The compiled sets are cached and
/// checked against the stored version inside the caller's transaction, so a payment is
/// evaluated by the versions in force in the transaction that creates it, and a new version
/// takes effect on the next payment.
public final class RuleSetStore: Sendable {
  static let lastVersionKey = Array("rule_set_last_version".utf8)
  /// The compiled sets with the version and SHA-256 of the stored message each came from: a
  /// cache entry filled inside a transaction that later failed to commit can never pass for
  /// another set stored under the same version number.
  private let cache = Mutex<[RuleSetSlot: (compiled: CompiledRuleSet, digest: [UInt8])]>([:])

  public init() {}

  /// The version in `slot` and the SHA-256 of its stored message, or nil when none is.
  func head(_ slot: RuleSetSlot = .active, in txn: some ReadableTransaction) throws -> (version: UInt64, digest: [UInt8])? {
    guard let bytes = try txn.get(slot.metaKey, in: .meta) else { return nil }
    var reader = RecordReader(bytes)
    let version = try reader.readUInt64()
    let digest = try reader.readBytes(32)
    try reader.finish()
    return (version, digest)
  }

  /// The compiled set in `slot`, or nil when none is (no active set: every payment is allowed).
  public func current(_ slot: RuleSetSlot = .active, in txn: some ReadableTransaction) throws -> CompiledRuleSet? {
    guard let head = try self.head(slot, in: txn) else { return nil }
    if let cached = self.cache.withLock({ $0[slot] }), cached.compiled.ruleSet.version == head.version, cached.digest == head.digest {
      return cached.compiled
    }
    let ruleSet = try RiskRuleSet(Self.stored(head.version, in: txn))
    switch CompiledRuleSet.compile(ruleSet) {
    case .success(let compiled):
      self.cache.withLock { $0[slot] = (compiled, head.digest) }
      return compiled
    case .failure(let failure):
      // Stored sets were checked when put; one that no longer compiles (a later build narrowed
      // the language) must not let payments through unchecked. PutRuleSet, GetRuleSet and the
      // configuration file do not compile the stored set, so a new one can still replace it.
      let problems = failure.issues.map { (issue: RuleSetIssue) in issue.description }.joined(separator: "; ")
      throw StoreError(code: .corrupted, message: "stored \(slot.name) rule set version \(head.version) no longer compiles: \(problems)")
    }
  }

  /// The stored message of `version`, as put.
  static func stored(_ version: UInt64, in txn: some ReadableTransaction) throws -> Banklink_V1_RuleSet {
    guard let bytes = try txn.get(AuditJournal.key(version), in: .ruleSets) else {
      throw StoreError(code: .corrupted, message: "rule set version \(version) is missing")
    }
    return try Banklink_V1_RuleSet(serializedBytes: bytes)
  }

  /// The message in `slot` as stored (without compiling it), or nil when none is.
  func storedCurrent(_ slot: RuleSetSlot = .active, in txn: some ReadableTransaction) throws -> Banklink_V1_RuleSet? {
    try self.head(slot, in: txn).map { try Self.stored($0.version, in: txn) }
  }

  /// The last version given to any set. Before shadow sets existed only active sets were put,
  /// one after the other, so the active head is the last version when the counter is missing.
  private func lastVersion(in txn: some ReadableTransaction) throws -> UInt64 {
    if let bytes = try txn.get(Self.lastVersionKey, in: .meta) {
      var reader = RecordReader(bytes)
      let version = try reader.readUInt64()
      try reader.finish()
      return version
    }
    return max(try self.head(.active, in: txn)?.version ?? 0, try self.head(.shadow, in: txn)?.version ?? 0)
  }

  /// Stores `compiled` (checked, so valid) as the next version, in `slot`, journaled.
  /// `expectedVersion` (when not 0) must be the version now in that slot.
  func put(
    _ compiled: CompiledRuleSet, as slot: RuleSetSlot = .active, expectedVersion: UInt64, by principal: String, at now: Instant,
    txn: inout WriteTransaction
  ) throws -> (RiskRuleSet, JournalReceipt) {
    let current = try self.head(slot, in: txn)?.version ?? 0
    if expectedVersion != 0 && expectedVersion != current { throw RuleSetConflict(current: current, expected: expectedVersion) }
    var stored = compiled.ruleSet
    stored.version = try self.lastVersion(in: txn) + 1
    stored.updatedAt = now
    stored.updatedBy = principal
    let bytes: [UInt8] = try Banklink_V1_RuleSet(stored).serializedBytes()
    let digest = Array(SHA256.hash(data: bytes))
    try txn.put(AuditJournal.key(stored.version), bytes, in: .ruleSets)
    var head = RecordWriter(capacity: 40)
    head.write(stored.version)
    head.writeRaw(digest)
    try txn.put(slot.metaKey, head.bytes, in: .meta)
    var last = RecordWriter(capacity: 8)
    last.write(stored.version)
    try txn.put(Self.lastVersionKey, last.bytes, in: .meta)
    var details: AuditPayload = [
      "version": String(stored.version), "rules": String(stored.rules.count), "lists": String(stored.lists.count),
      "rule_set_sha256": Hex.encode(digest),
    ]
    if slot == .shadow, let active = try self.head(.active, in: txn) { details["active_version"] = String(active.version) }
    let receipt = try AuditJournal.append(
      &txn, at: now, principal: principal, action: slot == .active ? "rules.changed" : "rules.shadow_changed",
      object: "rule_set", details: details)
    if slot == .shadow { try ShadowReports.start(version: stored.version, at: now, by: principal, txn: &txn) }
    // Compiled already: the first payment after the put need not compile it on the writer
    // thread. Safe even if this transaction does not commit (the digest keys the entry).
    if case .success(let versioned) = CompiledRuleSet.compile(stored) { self.cache.withLock { $0[slot] = (versioned, digest) } }
    return (stored, receipt)
  }

  /// Stops the shadow set (its report stays); journaled. Returns the version stopped and the
  /// receipt, or nil when none ran.
  func clearShadow(
    expectedVersion: UInt64, by principal: String, at now: Instant, txn: inout WriteTransaction
  ) throws -> (UInt64, JournalReceipt)? {
    let current = try self.head(.shadow, in: txn)?.version ?? 0
    if expectedVersion != 0 && expectedVersion != current { throw RuleSetConflict(current: current, expected: expectedVersion) }
    guard current != 0 else { return nil }
    _ = try txn.delete(RuleSetSlot.shadow.metaKey, in: .meta)
    let receipt = try AuditJournal.append(
      &txn, at: now, principal: principal, action: "rules.shadow_cleared", object: "rule_set", details: ["version": String(current)])
    return (current, receipt)
  }
}

/// `expected_version` did not match the version in force.
public struct RuleSetConflict: Error, Sendable, Hashable {
  public var current: UInt64
  public var expected: UInt64
}

// MARK: Protobuf

extension RiskRuleSet {
  /// The rule set a message describes (unchecked: compile it to validate).
  init(_ message: Banklink_V1_RuleSet) {
    self.init(
      rules: message.rules.map { rule in
        RiskRule(
          id: rule.id, description: rule.description_p, expression: rule.expression,
          action: RiskAction(rule.action) ?? .review, severity: AlertSeverity(rule.severity) ?? .warning, shadow: rule.shadow,
          score: rule.score)
      },
      lists: Dictionary(message.lists.map { ($0.name, $0.values) }, uniquingKeysWith: { first, _ in first }))
    self.version = message.version
    self.updatedAt = message.hasUpdateTime ? Instant(message.updateTime) : nil
    self.updatedBy = message.updatedBy
  }
}

extension Banklink_V1_RuleSet {
  init(_ ruleSet: RiskRuleSet) {
    self.init()
    self.version = ruleSet.version
    self.rules = ruleSet.rules.map { rule in
      .with {
        $0.id = rule.id
        $0.description_p = rule.description
        $0.expression = rule.expression
        $0.action = Banklink_V1_RuleAction(rule.action)
        $0.severity = Banklink_V1_Severity(rule.severity)
        $0.shadow = rule.shadow
        $0.score = rule.score
      }
    }
    self.lists = ruleSet.lists.keys.sorted().map { name in .with { $0.name = name; $0.values = ruleSet.lists[name] ?? [] } }
    if let updatedAt = ruleSet.updatedAt { self.updateTime = updatedAt.timestamp }
    self.updatedBy = ruleSet.updatedBy
  }
}

extension RiskAction {
  /// Nil for UNSPECIFIED or an unknown value (a rule must say what it does).
  init?(_ action: Banklink_V1_RuleAction) {
    switch action {
    case .allow: self = .allow
    case .review: self = .review
    case .block: self = .block
    default: return nil
    }
  }
}

extension Banklink_V1_RuleAction {
  init(_ action: RiskAction) {
    switch action {
    case .allow: self = .allow
    case .review: self = .review
    case .block: self = .block
    }
  }
}

extension AlertSeverity {
  init?(_ severity: Banklink_V1_Severity) {
    switch severity {
    case .info: self = .info
    case .warning: self = .warning
    case .critical: self = .critical
    default: return nil
    }
  }
}

extension Banklink_V1_Severity {
  init(_ severity: AlertSeverity) {
    switch severity {
    case .info: self = .info
    case .warning: self = .warning
    case .critical: self = .critical
    }
  }
}

extension Banklink_V1_RuleDecision {
  init(_ decision: RiskDecision, paymentID: String) {
    self.init()
    self.paymentID = paymentID
    self.outcome = Banklink_V1_RuleAction(decision.outcome)
    self.ruleSetVersion = decision.ruleSetVersion
    self.score = decision.score
    self.hits = decision.hits.map { hit in
      .with {
        $0.ruleID = hit.ruleID
        $0.action = Banklink_V1_RuleAction(hit.action)
        $0.severity = Banklink_V1_Severity(hit.severity)
        $0.shadow = hit.shadow
        $0.reason = hit.reason
        $0.score = hit.score
        $0.because = hit.because
        $0.error = hit.error
      }
    }
  }
}

extension CompiledRuleSet {
  /// A rule set from its JSON form (the `RuleSet` message, as `banklink rules show --json`
  /// prints it), checked and compiled.
  public static func parse(json: String) -> Result<CompiledRuleSet, RuleSetIssues> {
    let message: Banklink_V1_RuleSet
    do {
      message = try Banklink_V1_RuleSet(jsonString: json)
    } catch {
      return .failure(RuleSetIssues(issues: [RuleSetIssue(ruleID: "", field: "rule_set", message: "is not a RuleSet in JSON: \(error)")]))
    }
    return AdminServiceHandler.compile(message)
  }
}

extension PaymentLedger {
  /// Puts the configured rule set (`risk.rule_set_file`) in force when its rules or lists
  /// differ, byte for byte, from the stored set in force (which is not compiled here: a stored
  /// set a newer build refuses can still be replaced); returns the new version, or nil.
  public func adoptConfiguredRuleSet(_ compiled: CompiledRuleSet) async throws -> UInt64? {
    let now = self.now()
    return try await self.writer.write { txn in try self.adoptConfiguredRuleSet(compiled, at: now, txn: &txn) }
  }

  /// The same inside the caller's transaction (a reload writes it with its journal entry).
  public func adoptConfiguredRuleSet(_ compiled: CompiledRuleSet, at now: Instant, txn: inout WriteTransaction) throws -> UInt64? {
    if let stored = try self.rules.storedCurrent(in: txn) {
      let configured = Banklink_V1_RuleSet(compiled.ruleSet)
      func content(_ message: Banklink_V1_RuleSet) throws -> [UInt8] {
        try Banklink_V1_RuleSet.with { $0.rules = message.rules; $0.lists = message.lists }.serializedBytes()
      }
      if try content(stored) == content(configured) { return nil }
    }
    return try self.rules.put(compiled, expectedVersion: 0, by: "configuration", at: now, txn: &txn).0.version
  }
}
