import BankLinkCore
import BankLinkRules
import BankLinkStore
import Foundation

public struct RiskRule: Sendable, Hashable {
  public var id: String
  public var description: String
  public var expression: String
  public var action: RiskAction
  public var severity: AlertSeverity
  /// Evaluated and recorded, never applied.
  public var shadow: Bool
  public var score: Int32

  public init(
    id: String, description: String = "", expression: String, action: RiskAction, severity: AlertSeverity = .warning,
    shadow: Bool = false, score: Int32 = 0
  ) {
    self.id = id
    self.description = description
    self.expression = expression
    self.action = action
    self.severity = severity
    self.shadow = shadow
    self.score = score
  }
}

/// A versioned set of rules and the named lists they read.
public struct RiskRuleSet: Sendable, Hashable {
  public var version: UInt64 = 0
  public var rules: [RiskRule]
  /// Names in order; values as given.
  public var lists: [String: [String]]
  public var updatedAt: Instant?
  public var updatedBy = ""

  public init(rules: [RiskRule], lists: [String: [String]] = [:]) {
    self.rules = rules
    self.lists = lists
  }
}

/// Limits of a rule set (expressions have their own in `RuleLimits`).
public enum RiskLimits {
  public static let maxRules = 200
  public static let maxRuleIDBytes = 64
  public static let maxDescriptionBytes = 512
  public static let maxLists = 32
  public static let maxListNameBytes = 64
  public static let maxListValues = 10_000
  public static let maxListValueBytes = 256
  public static let maxScore: Int32 = 1_000
}

/// The variables rules are checked against and evaluated with (docs/rules.md lists them).
public enum RiskVariables {
  public static let creditor = ObjectType(
    name: "banklink.Creditor",
    fields: [("name", .string), ("account", .string), ("bic", .string), ("country", .string), ("bic_country", .string)])
  public static let payment = ObjectType(
    name: "banklink.Payment",
    fields: [
      ("amount", .int), ("currency", .string), ("type", .string), ("debtor_account", .string), ("creditor", .object(creditor)),
      ("purpose", .string), ("creator", .string), ("execution_date", .string),
    ])
  public static let account = ObjectType(
    name: "banklink.Account",
    fields: [("id", .string), ("ledger", .int), ("available", .int), ("currency", .string), ("bank", .string)])
  public static let features = ObjectType(
    name: "banklink.Features",
    fields: [
      ("count_1h", .int), ("count_24h", .int), ("count_7d", .int), ("sum_1h", .int), ("sum_24h", .int), ("sum_7d", .int),
      ("first_time_creditor", .bool), ("days_since_creditor_first_paid", .int), ("duplicates_24h", .int), ("hour", .int),
      ("weekday", .int), ("history_count", .int), ("amount_mean", .double), ("amount_stddev", .double),
      ("amount_zscore", .double),
    ])

  /// `payment`, `account`, `features` and `now`, and the set's `lists` (one field per list,
  /// bound as a constant: folded into each rule when it is compiled).
  static func declarations(lists: [String: [String]]) -> Declarations {
    let names = lists.keys.sorted()
    let type = ObjectType(name: "banklink.Lists", fields: names.map { ($0, CELType.list(.string)) })
    var declarations = Declarations([
      ("payment", .object(Self.payment)), ("account", .object(Self.account)), ("features", .object(Self.features)),
      ("now", .timestamp),
    ])
    let value = ObjectValue(type: type, fields: names.map { name in .list((lists[name] ?? []).map(Value.string)) })
    declarations.bind("lists", constant: .object(value), type: .object(type))
    return declarations
  }

  /// An account number as rules compare it: its ASCII letters and digits only, upper case
  /// ("6217-0000 0000" and "62170000 0000" are one account).
  static func normalised(_ account: String) -> String {
    String(decoding: account.utf8.compactMap { byte -> UInt8? in
      switch byte {
      case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "A")...UInt8(ascii: "Z"): byte
      case UInt8(ascii: "a")...UInt8(ascii: "z"): byte - 32
      default: nil
      }
    }, as: UTF8.self)
  }

  /// A BIC in its 11-character form (an 8-character BIC is the same institution's head office,
  /// "XXX"), upper case.
  static func normalisedBIC(_ bic: String) -> String {
    let upper = Self.normalised(bic)
    return upper.utf8.count == 8 ? upper + "XXX" : upper
  }

  /// The country of a BIC (its 5th and 6th characters), or "" when it has none.
  static func bicCountry(_ bic: String) -> String {
    let bytes = Array(Self.normalised(bic).utf8)
    return bytes.count >= 6 ? String(decoding: bytes[4..<6], as: UTF8.self) : ""
  }

  public static func values(
    instruction: PaymentInstruction, creator: String, account: Account, features: FeatureSnapshot, at now: Instant
  ) -> [Value] {
    let creditor = instruction.creditor
    let payment = ObjectValue(
      type: Self.payment,
      fields: [
        .int(instruction.amount.minorUnits), .string(instruction.amount.currency.description), .string(instruction.type.rawValue),
        .string(instruction.debtorAccountID),
        .object(
          ObjectValue(
            type: Self.creditor,
            fields: [
              .string(creditor.name), .string(Self.normalised(creditor.iban.isEmpty ? creditor.accountNumber : creditor.iban)),
              .string(Self.normalisedBIC(creditor.bic)), .string(creditor.country), .string(Self.bicCountry(creditor.bic)),
            ])),
        .string(instruction.purpose), .string(creator), .string(instruction.requestedExecutionDate),
      ])
    let accountValue = ObjectValue(
      type: Self.account,
      fields: [
        .string(account.id), .int(features.ledger), .int(features.available), .string(account.currency.description),
        .string(account.bankBIC),
      ])
    let featureValue = ObjectValue(
      type: Self.features,
      fields: [
        .int(features.count1h), .int(features.count24h), .int(features.count7d), .int(features.sum1h), .int(features.sum24h),
        .int(features.sum7d), .bool(features.firstTimeCreditor), .int(features.daysSinceCreditorFirstPaid),
        .int(features.duplicates24h), .int(features.hour), .int(features.weekday), .int(features.historyCount),
        .double(features.amountMean), .double(features.amountStddev), .double(features.amountZScore),
      ])
    let millis = now.millisecondsSinceEpoch
    let seconds = millis >= 0 ? millis / 1000 : (millis - 999) / 1000
    let timestamp = Timestamp(seconds: seconds, nanos: Int32(millis - seconds * 1000) * 1_000_000) ?? Timestamp(seconds: 0)!
    return [.object(payment), .object(accountValue), .object(featureValue), .timestamp(timestamp)]
  }
}

/// A problem of a rule set, with the field it is in ("rules[2].expression") and, for an
/// expression, the line and column in it.
public struct RuleSetIssue: Sendable, Hashable, CustomStringConvertible {
  public var ruleID: String
  public var field: String
  public var message: String

  public var description: String { "\(self.field): \(self.message)" }
}

/// Every problem found in a rule set.
public struct RuleSetIssues: Error, Sendable, Hashable {
  public var issues: [RuleSetIssue]
}

/// A rule set checked and compiled once; evaluated for every payment.
public final class CompiledRuleSet: Sendable {
  public let ruleSet: RiskRuleSet
  let programs: [Program]

  private init(ruleSet: RiskRuleSet, programs: [Program]) {
    self.ruleSet = ruleSet
    self.programs = programs
  }

  /// The compiled set, or every problem found (all of them, not only the first).
  public static func compile(_ ruleSet: RiskRuleSet) -> Result<CompiledRuleSet, RuleSetIssues> {
    var issues: [RuleSetIssue] = []
    if ruleSet.rules.count > RiskLimits.maxRules {
      issues.append(RuleSetIssue(ruleID: "", field: "rules", message: "at most \(RiskLimits.maxRules) rules, got \(ruleSet.rules.count)"))
    }
    if ruleSet.lists.count > RiskLimits.maxLists {
      issues.append(RuleSetIssue(ruleID: "", field: "lists", message: "at most \(RiskLimits.maxLists) lists, got \(ruleSet.lists.count)"))
    }
    let listNames = ruleSet.lists.keys.sorted()
    for name in listNames {
      let values = ruleSet.lists[name] ?? []
      let field = "lists[\(name)]"
      if name.utf8.count > RiskLimits.maxListNameBytes || !Self.isIdentifier(name) {
        issues.append(RuleSetIssue(ruleID: "", field: field + ".name", message: "must be an identifier of at most \(RiskLimits.maxListNameBytes) bytes"))
      }
      if values.count > RiskLimits.maxListValues {
        issues.append(RuleSetIssue(ruleID: "", field: field + ".values", message: "at most \(RiskLimits.maxListValues) values"))
      }
      if let long = values.firstIndex(where: { $0.utf8.count > RiskLimits.maxListValueBytes }) {
        issues.append(RuleSetIssue(ruleID: "", field: field + ".values[\(long)]", message: "at most \(RiskLimits.maxListValueBytes) bytes"))
      }
    }
    let declarations = RiskVariables.declarations(lists: ruleSet.lists)
    var programs: [Program] = []
    var seen: Set<String> = []
    for (index, rule) in ruleSet.rules.prefix(RiskLimits.maxRules).enumerated() {
      let field = "rules[\(index)]"
      if rule.id.isEmpty || rule.id.utf8.count > RiskLimits.maxRuleIDBytes
        || !rule.id.utf8.allSatisfy({ $0 >= 0x21 && $0 < 0x7F })
      {
        issues.append(
          RuleSetIssue(ruleID: rule.id, field: field + ".id", message: "must be 1 to \(RiskLimits.maxRuleIDBytes) printable ASCII characters"))
      } else if !seen.insert(rule.id).inserted {
        issues.append(RuleSetIssue(ruleID: rule.id, field: field + ".id", message: "'\(rule.id)' is used by an earlier rule"))
      }
      if rule.description.utf8.count > RiskLimits.maxDescriptionBytes {
        issues.append(RuleSetIssue(ruleID: rule.id, field: field + ".description", message: "at most \(RiskLimits.maxDescriptionBytes) bytes"))
      }
      if !(0...RiskLimits.maxScore).contains(rule.score) {
        issues.append(RuleSetIssue(ruleID: rule.id, field: field + ".score", message: "must be 0 to \(RiskLimits.maxScore)"))
      }
      do {
        let program = try declarations.compile(rule.expression)
        if program.type != .bool && program.type != .dyn {
          issues.append(
            RuleSetIssue(ruleID: rule.id, field: field + ".expression", message: "must be a bool expression, not \(program.type)"))
        }
        programs.append(program)
      } catch {
        issues.append(RuleSetIssue(ruleID: rule.id, field: field + ".expression", message: "\(error.line):\(error.column): \(error.message)"))
      }
    }
    guard issues.isEmpty else { return .failure(RuleSetIssues(issues: issues)) }
    return .success(CompiledRuleSet(ruleSet: ruleSet, programs: programs))
  }

  static func isIdentifier(_ name: String) -> Bool {
    guard let first = name.utf8.first, first == UInt8(ascii: "_") || (first | 0x20 >= UInt8(ascii: "a") && first | 0x20 <= UInt8(ascii: "z"))
    else { return false }
    return name.utf8.allSatisfy { $0 == UInt8(ascii: "_") || ($0 | 0x20 >= UInt8(ascii: "a") && $0 | 0x20 <= UInt8(ascii: "z")) || ($0 >= 0x30 && $0 <= 0x39) }
  }

  /// Evaluates every rule (shadow ones too) on one payment's variables. A rule that fails at
  /// run time counts as `review` (fail closed) and is reported with its error.
  public func decide(_ variables: [Value]) -> RiskDecision {
    self.decide(variables, maxSteps: RuleLimits.maxDecisionSteps, shadowMaxSteps: RuleLimits.maxDecisionSteps).decision
  }

  /// ``decide(_:)`` within `maxSteps` of work for the enforced rules together (a rule the
  /// budget stops fails, so `review`) and `shadowMaxSteps` for the shadow rules (0: they are
  /// not evaluated), and the steps each took.
  public func decide(
    _ variables: [Value], maxSteps: Int, shadowMaxSteps: Int
  ) -> (decision: RiskDecision, steps: Int, shadowSteps: Int) {
    var decision = RiskDecision(outcome: .allow, hits: [], ruleSetVersion: self.ruleSet.version, score: 0)
    guard let first = self.programs.first else { return (decision, 0, 0) }
    let enforced = Evaluation(variables, for: first, decisionSteps: maxSteps)
    var shadowEvaluation: Evaluation?
    for (rule, program) in zip(self.ruleSet.rules, self.programs) {
      let evaluation: Evaluation
      if rule.shadow {
        guard shadowMaxSteps > 0 else { continue }
        evaluation = shadowEvaluation ?? Evaluation(variables, for: first, decisionSteps: shadowMaxSteps)
        shadowEvaluation = evaluation
      } else {
        evaluation = enforced
      }
      do throws(EvaluationError) {
        let value = try program.evaluate(in: evaluation)
        guard case .bool(let held) = value else {
          // A `dyn` rule that gave something else: an error, so review (fail closed).
          throw EvaluationError("the rule gave \(value.typeName), not bool")
        }
        guard held else { continue }
        var hit = RiskHit(ruleID: rule.id, action: rule.action, severity: rule.severity, shadow: rule.shadow, score: rule.score)
        // Only a rule that fired is explained (a second, tracing evaluation).
        hit.because = ((try? program.explain(in: evaluation).because) ?? []).prefix(RiskDecision.maxExplanationLines).map {
          RiskDecision.clip($0)
        }
        hit.reason = RiskDecision.clip(rule.description)
        self.record(hit, rule, into: &decision)
      } catch {
        var hit = RiskHit(ruleID: rule.id, action: .review, severity: rule.severity, shadow: rule.shadow, score: rule.score)
        hit.error = RiskDecision.clip(error.message)
        hit.reason = RiskDecision.clip("failed at run time: \(error.message)")
        self.record(hit, rule, into: &decision)
      }
    }
    return (decision, enforced.steps, shadowEvaluation?.steps ?? 0)
  }
}

extension CompiledRuleSet {
  fileprivate func record(_ hit: RiskHit, _ rule: RiskRule, into decision: inout RiskDecision) {
    if !rule.shadow {
      decision.outcome = max(decision.outcome, hit.action)
      decision.score += hit.error.isEmpty ? rule.score : 0
    }
    decision.hits.append(hit)
  }
}

public struct RiskHit: Sendable, Hashable {
  public var ruleID: String
  public var action: RiskAction
  public var severity: AlertSeverity
  public var shadow: Bool
  public var score: Int32
  public var reason = ""
  public var because: [String] = []
  public var error = ""
}

/// What the rules decided for a payment.
public struct RiskDecision: Sendable, Hashable {
  public var outcome: RiskAction
  public var hits: [RiskHit]
  public var ruleSetVersion: UInt64
  public var score: Int32

  /// The applied hits (not shadow) that made the outcome, for status reasons and alerts.
  var applied: [RiskHit] { self.hits.filter { !$0.shadow && $0.action != .allow } }

  var summary: String {
    self.applied.map { hit in
      hit.error.isEmpty ? "\(hit.ruleID) (\(hit.because.joined(separator: "; ")))" : "\(hit.ruleID) (error: \(hit.error))"
    }.joined(separator: ", ")
  }

  static let recordFormat: UInt8 = 1
  /// Comparisons kept per hit, and bytes per comparison (an operand can be a long string).
  static let maxExplanationLines = 16
  static let maxExplanationBytes = 256

  /// An explanation line as shown and stored: on one line (a rule's source may span several),
  /// control characters escaped, at most ``maxExplanationBytes`` bytes, cut between scalars.
  static func clip(_ line: String, maxBytes: Int = RiskDecision.maxExplanationBytes) -> String {
    // Nearly always: short, one line, nothing to escape.
    if line.utf8.count <= maxBytes, !line.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) { return line }
    var out = ""
    var taken = 0
    for scalar in line.unicodeScalars {
      let piece: String
      switch scalar {
      case "\n", "\r", "\t": piece = " "
      case _ where scalar.value < 0x20 || scalar.value == 0x7F: piece = "\\u{\(String(scalar.value, radix: 16))}"
      default: piece = String(scalar)
      }
      guard taken + piece.utf8.count <= maxBytes else { return out + "…" }
      taken += piece.utf8.count
      out += piece
    }
    return out
  }

  /// The stored form: the decision and the features it was made on (for backtests).
  func record(features: FeatureSnapshot) -> [UInt8] {
    var writer = RecordWriter(capacity: 256)
    writer.write(Self.recordFormat)
    writer.write(UInt8(self.outcome.rawValue))
    writer.write(self.ruleSetVersion)
    writer.write(Int64(self.score))
    writer.write(UInt32(self.hits.count))
    for hit in self.hits {
      writer.write(hit.ruleID)
      writer.write(UInt8(hit.action.rawValue))
      writer.write(UInt8(hit.severity.rawValue))
      writer.write(UInt8(hit.shadow ? 1 : 0))
      writer.write(Int64(hit.score))
      writer.write(hit.reason)
      writer.write(hit.error)
      writer.write(UInt32(hit.because.count))
      for line in hit.because { writer.write(line) }
    }
    features.write(to: &writer)
    return writer.bytes
  }

  static func decode(_ bytes: [UInt8]) throws -> (RiskDecision, FeatureSnapshot) {
    var reader = RecordReader(bytes)
    guard try reader.readUInt8() == Self.recordFormat else { throw StoreError(code: .corrupted, message: "unknown risk decision format") }
    func action(_ raw: UInt8) throws -> RiskAction {
      guard let action = RiskAction(rawValue: Int(raw)) else { throw StoreError(code: .corrupted, message: "unknown risk action \(raw)") }
      return action
    }
    let outcome = try action(try reader.readUInt8())
    let version = try reader.readUInt64()
    let score = Int32(truncatingIfNeeded: try reader.readInt64())
    var hits: [RiskHit] = []
    for _ in 0..<min(Int(try reader.readUInt32()), RiskLimits.maxRules) {
      let id = try reader.readString()
      let hitAction = try action(try reader.readUInt8())
      let severity = AlertSeverity(rawValue: Int(try reader.readUInt8())) ?? .warning
      let shadow = try reader.readUInt8() == 1
      var hit = RiskHit(
        ruleID: id, action: hitAction, severity: severity, shadow: shadow, score: Int32(truncatingIfNeeded: try reader.readInt64()))
      hit.reason = try reader.readString()
      hit.error = try reader.readString()
      for _ in 0..<min(Int(try reader.readUInt32()), Self.maxExplanationLines) { hit.because.append(try reader.readString()) }
      hits.append(hit)
    }
    let features = try FeatureSnapshot(from: &reader)
    try reader.finish()
    return (RiskDecision(outcome: outcome, hits: hits, ruleSetVersion: version, score: score), features)
  }
}
