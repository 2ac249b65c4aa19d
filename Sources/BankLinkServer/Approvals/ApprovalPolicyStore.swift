import BankLinkCore
import BankLinkJournal
import BankLinkProto
import BankLinkStore
import Crypto
import Foundation
import SwiftProtobuf
import Synchronization

/// The approval policy in force: versions kept in `approval_policies` (protobuf, by version; a
/// payment's pinned version stays readable), the current version in `meta`. Reads go through a
/// cache of the decoded policy checked against the stored policy's bytes inside the caller's
/// transaction, so a payment is always pinned to the version in force in the transaction that
/// creates it — and a policy read in a transaction that then aborted (its version number later
/// given to another policy) is never served from the cache.
public final class ApprovalPolicyStore: Sendable {
  static let versionKey = Array("approval_policy_version".utf8)
  private let cache = Mutex<(bytes: [UInt8], policy: ApprovalPolicy)?>(nil)

  public init() {}

  /// The policy in force, or nil before any was put (the configured threshold applies).
  public func current(in txn: some ReadableTransaction) throws -> ApprovalPolicy? {
    guard let bytes = try txn.get(Self.versionKey, in: .meta) else { return nil }
    var reader = RecordReader(bytes)
    let version = try reader.readUInt64()
    let stored = try Self.bytes(version, in: txn)
    if let cached = self.cache.withLock({ $0 }), cached.bytes == stored { return cached.policy }
    let policy = try Self.decode(stored, version: version)
    self.cache.withLock { $0 = (stored, policy) }
    return policy
  }

  static func load(_ version: UInt64, in txn: some ReadableTransaction) throws -> ApprovalPolicy {
    try Self.decode(try Self.bytes(version, in: txn), version: version)
  }

  private static func bytes(_ version: UInt64, in txn: some ReadableTransaction) throws -> [UInt8] {
    guard let bytes = try txn.get(AuditJournal.key(version), in: .approvalPolicies) else {
      throw StoreError(code: .corrupted, message: "approval policy version \(version) is missing")
    }
    return bytes
  }

  private static func decode(_ bytes: [UInt8], version: UInt64) throws -> ApprovalPolicy {
    let message = try Banklink_V1_ApprovalPolicy(serializedBytes: bytes)
    switch ApprovalPolicy.from(message) {
    case .success(let policy): return policy
    case .failure: throw StoreError(code: .corrupted, message: "stored approval policy version \(version) does not decode")
    }
  }

  /// Stores `policy` as the next version (its `version` is assigned here), journaled.
  /// `expectedVersion` (when not 0) must be the current version: a concurrent change is refused.
  func put(
    _ policy: ApprovalPolicy, expectedVersion: UInt64, by principal: String, at now: Instant, txn: inout WriteTransaction
  ) throws -> (ApprovalPolicy, JournalReceipt) {
    let current = try self.current(in: txn)?.version ?? 0
    if expectedVersion != 0 && expectedVersion != current { throw PolicyConflict(current: current, expected: expectedVersion) }
    var stored = policy
    stored.version = current + 1
    stored.updatedAt = now
    stored.updatedBy = principal
    let bytes: [UInt8] = try Banklink_V1_ApprovalPolicy(stored).serializedBytes()
    try txn.put(AuditJournal.key(stored.version), bytes, in: .approvalPolicies)
    var version = RecordWriter(capacity: 8)
    version.write(stored.version)
    try txn.put(Self.versionKey, version.bytes, in: .meta)
    let receipt = try AuditJournal.append(
      &txn, at: now, principal: principal, action: "policy.changed", object: "approval_policy",
      details: [
        "version": String(stored.version), "rules": String(stored.rules.count),
        "policy_sha256": Hex.encode(Array(SHA256.hash(data: bytes))),
      ])
    return (stored, receipt)
  }
}

/// Fields of a policy message that cannot be a policy.
public struct PolicyViolations: Error, Sendable, Hashable {
  public var violations: [FieldViolation]
}

/// `expected_version` did not match the version in force.
public struct PolicyConflict: Error, Sendable, Hashable {
  public var current: UInt64
  public var expected: UInt64
}

extension ApprovalPolicy {
  /// A policy from its JSON form (the `ApprovalPolicy` message, as `banklink policy show` prints
  /// it), checked as `PutApprovalPolicy` checks it: the problems, each naming its field.
  public static func parse(json: String) -> Result<ApprovalPolicy, PolicyViolations> {
    let message: Banklink_V1_ApprovalPolicy
    do {
      message = try Banklink_V1_ApprovalPolicy(jsonString: json)
    } catch {
      return .failure(PolicyViolations(violations: [FieldViolation(field: "policy", description: "is not an ApprovalPolicy in JSON: \(error)")]))
    }
    switch ApprovalPolicy.from(message) {
    case .failure(let problems): return .failure(problems)
    case .success(let policy):
      let violations = policy.violations()
      return violations.isEmpty ? .success(policy) : .failure(PolicyViolations(violations: violations))
    }
  }
}

extension PaymentLedger {
  /// Puts `policy` (from the configuration file) as a new version, unless the policy in force
  /// already has the same rules. Returns the version put, or nil.
  public func adoptConfiguredPolicy(_ policy: ApprovalPolicy) async throws -> UInt64? {
    let now = self.now()
    return try await self.writer.write { txn in try self.adoptConfiguredPolicy(policy, at: now, txn: &txn) }
  }

  /// The same inside the caller's transaction (a reload writes it with its journal entry).
  public func adoptConfiguredPolicy(_ policy: ApprovalPolicy, at now: Instant, txn: inout WriteTransaction) throws -> UInt64? {
    if let current = try self.policies.current(in: txn), current.rules == policy.rules { return nil }
    return try self.policies.put(policy, expectedVersion: 0, by: "configuration", at: now, txn: &txn).0.version
  }
}

// MARK: Proto mapping

extension ApprovalPolicy {
  /// The domain policy, or every field that cannot be one (names as in the proto, under
  /// `policy.`). Values are then checked by ``violations(prefix:)``.
  static func from(_ message: Banklink_V1_ApprovalPolicy, prefix: String = "policy.") -> Result<ApprovalPolicy, PolicyViolations> {
    var violations: [FieldViolation] = []
    var rules: [Rule] = []
    for (index, rule) in message.rules.prefix(Limits.maxPolicyRules + 1).enumerated() {
      let at = prefix + "rules[\(index)]."
      var match = Match(
        minAmountMinor: rule.match.minAmountMinor,
        maxAmountMinor: rule.match.maxAmountMinor == 0 ? nil : rule.match.maxAmountMinor,
        debtorAccounts: rule.match.accountIds, creditorCountries: rule.match.creditorCountries)
      for (position, code) in rule.match.currencyCodes.enumerated() {
        if let currency = CurrencyCode(code) { match.currencies.append(currency) } else {
          violations.append(FieldViolation(field: at + "match.currency_codes[\(position)]", description: "is not an ISO 4217 code"))
        }
      }
      for (position, type) in rule.match.paymentTypes.enumerated() {
        if let value = PaymentType(type) { match.paymentTypes.append(value) } else {
          violations.append(FieldViolation(field: at + "match.payment_types[\(position)]", description: "is not a payment type"))
        }
      }
      for (position, outcome) in rule.match.riskOutcomes.enumerated() {
        switch outcome {
        case .allow: match.riskOutcomes.append(.allow)
        case .review: match.riskOutcomes.append(.review)
        case .block:
          violations.append(FieldViolation(
            field: at + "match.risk_outcomes[\(position)]", description: "BLOCK never matches: a blocked payment never reaches the policy"))
        default:
          violations.append(FieldViolation(field: at + "match.risk_outcomes[\(position)]", description: "must be ALLOW or REVIEW"))
        }
      }
      var levels: [Level] = []
      for (position, level) in rule.requirement.levels.prefix(Limits.maxApprovalLevels + 1).enumerated() {
        var roles: [Role] = []
        for (rolePosition, role) in level.roles.enumerated() {
          if let value = Role(role) { roles.append(value) } else {
            violations.append(FieldViolation(
              field: at + "requirement.levels[\(position)].roles[\(rolePosition)]", description: "is not a role"))
          }
        }
        if level.atLeastOneRole != .unspecified {
          violations.append(FieldViolation(
            field: at + "requirement.levels[\(position)].at_least_one_role", description: "is not evaluated yet; leave it unspecified"))
        }
        levels.append(Level(
          required: Int(level.requiredApprovals), roles: roles, principals: level.principals,
          maxAmountMinor: level.maxAmountMinor == 0 ? nil : level.maxAmountMinor))
      }
      rules.append(Rule(
        id: rule.id, description: rule.description_p, match: match,
        requirement: Requirement(
          levels: levels, windowSeconds: rule.requirement.approvalWindowSeconds, requireOTP: rule.requirement.requireOtp)))
    }
    guard violations.isEmpty else { return .failure(PolicyViolations(violations: violations)) }
    return .success(ApprovalPolicy(
      version: message.version, rules: rules,
      updatedAt: message.hasUpdateTime ? Instant(message.updateTime) ?? Instant(millisecondsSinceEpoch: 0) : Instant(millisecondsSinceEpoch: 0),
      updatedBy: message.updatedBy))
  }
}

extension Banklink_V1_ApprovalPolicy {
  init(_ policy: ApprovalPolicy) {
    self.init()
    self.version = policy.version
    self.updateTime = policy.updatedAt.timestamp
    self.updatedBy = policy.updatedBy
    self.rules = policy.rules.map { rule in
      .with {
        $0.id = rule.id
        $0.description_p = rule.description
        $0.match = .with {
          $0.minAmountMinor = rule.match.minAmountMinor
          $0.maxAmountMinor = rule.match.maxAmountMinor ?? 0
          $0.currencyCodes = rule.match.currencies.map(\.code)
          $0.accountIds = rule.match.debtorAccounts
          $0.paymentTypes = rule.match.paymentTypes.map(Banklink_V1_PaymentType.init)
          $0.creditorCountries = rule.match.creditorCountries
          $0.riskOutcomes = rule.match.riskOutcomes.map(Banklink_V1_RuleAction.init)
        }
        $0.requirement = .with {
          $0.levels = rule.requirement.levels.map { level in
            .with {
              $0.requiredApprovals = Int32(level.required)
              $0.roles = level.roles.map(Banklink_V1_Role.init)
              $0.principals = level.principals
              $0.maxAmountMinor = level.maxAmountMinor ?? 0
            }
          }
          $0.sequential = true
          $0.approvalWindowSeconds = rule.requirement.windowSeconds
          $0.requireOtp = rule.requirement.requireOTP
        }
      }
    }
  }
}
