/// The approval policy: ordered rules; the first whose match fits a payment decides what it
/// needs before release (docs/approvals.md). Versioned: a payment is pinned to the version in
/// force when it was created, and keeps that requirement if the policy changes later.
public struct ApprovalPolicy: Sendable, Hashable {
  public var version: UInt64
  public var rules: [Rule]
  public var updatedAt: Instant
  public var updatedBy: String

  public init(version: UInt64, rules: [Rule], updatedAt: Instant, updatedBy: String) {
    self.version = version
    self.rules = rules
    self.updatedAt = updatedAt
    self.updatedBy = updatedBy
  }

  public struct Rule: Sendable, Hashable {
    public var id: String
    public var description: String
    public var match: Match
    public var requirement: Requirement

    public init(id: String, description: String = "", match: Match, requirement: Requirement) {
      self.id = id
      self.description = description
      self.match = match
      self.requirement = requirement
    }
  }

  /// Which payments a rule applies to; an empty list matches everything.
  public struct Match: Sendable, Hashable {
    /// Inclusive lower bound, minor units of the payment's currency.
    public var minAmountMinor: Int64 = 0
    /// Exclusive upper bound; nil: unbounded.
    public var maxAmountMinor: Int64?
    public var currencies: [CurrencyCode] = []
    public var debtorAccounts: [String] = []
    public var paymentTypes: [PaymentType] = []
    /// ISO 3166 alpha-2 codes of the creditor's country.
    public var creditorCountries: [String] = []
    /// The risk rules' outcome for the payment (`allow` when no rule set is in force). A rule
    /// naming `review` takes charge of reviewed payments: no level is added on top of its
    /// requirement. A blocked payment never reaches the policy.
    public var riskOutcomes: [RiskAction] = []

    public init(
      minAmountMinor: Int64 = 0, maxAmountMinor: Int64? = nil, currencies: [CurrencyCode] = [], debtorAccounts: [String] = [],
      paymentTypes: [PaymentType] = [], creditorCountries: [String] = [], riskOutcomes: [RiskAction] = []
    ) {
      self.riskOutcomes = riskOutcomes
      self.minAmountMinor = minAmountMinor
      self.maxAmountMinor = maxAmountMinor
      self.currencies = currencies
      self.debtorAccounts = debtorAccounts
      self.paymentTypes = paymentTypes
      self.creditorCountries = creditorCountries
    }

    public func matches(_ instruction: PaymentInstruction, riskOutcome: RiskAction = .allow) -> Bool {
      if !self.riskOutcomes.isEmpty && !self.riskOutcomes.contains(riskOutcome) { return false }
      let amount = instruction.amount.minorUnits
      if amount < self.minAmountMinor { return false }
      if let max = self.maxAmountMinor, amount >= max { return false }
      if !self.currencies.isEmpty && !self.currencies.contains(instruction.amount.currency) { return false }
      if !self.debtorAccounts.isEmpty && !self.debtorAccounts.contains(instruction.debtorAccountID) { return false }
      if !self.paymentTypes.isEmpty && !self.paymentTypes.contains(instruction.type) { return false }
      if !self.creditorCountries.isEmpty && !self.creditorCountries.contains(instruction.creditor.country) { return false }
      return true
    }

    /// Whether every payment this match accepts is also accepted by `other` (so a rule with
    /// `other` placed earlier leaves this one unreachable). Conservative: true only when each
    /// dimension of `other` is at least as wide.
    func isCovered(by other: Match) -> Bool {
      guard other.minAmountMinor <= self.minAmountMinor else { return false }
      switch (other.maxAmountMinor, self.maxAmountMinor) {
      case (nil, _): break
      case (.some, nil): return false
      case (.some(let outer), .some(let inner)): if outer < inner { return false }
      }
      func wider<T: Hashable>(_ outer: [T], _ inner: [T]) -> Bool {
        outer.isEmpty || (!inner.isEmpty && Set(inner).isSubset(of: Set(outer)))
      }
      return wider(other.currencies, self.currencies) && wider(other.debtorAccounts, self.debtorAccounts)
        && wider(other.paymentTypes, self.paymentTypes) && wider(other.creditorCountries, self.creditorCountries)
        && wider(other.riskOutcomes, self.riskOutcomes)
    }
  }

  /// What a payment needs: levels approved in order, within a window, with or without OTP.
  /// No levels: released at once.
  public struct Requirement: Sendable, Hashable {
    public var levels: [Level]
    /// Seconds after creation by which the last level must be approved; the payment expires
    /// then and its reservation is released.
    public var windowSeconds: Int64
    /// Every approval needs a one-time password as well as the signature.
    public var requireOTP: Bool

    public init(levels: [Level], windowSeconds: Int64, requireOTP: Bool) {
      self.levels = levels
      self.windowSeconds = windowSeconds
      self.requireOTP = requireOTP
    }

    public static let none = Requirement(levels: [], windowSeconds: 0, requireOTP: false)
  }

  /// One level: `required` distinct approvers, each holding one of `roles` or named in
  /// `principals`, and — when set — allowed to approve up to `maxAmountMinor` each.
  public struct Level: Sendable, Hashable {
    public var required: Int
    public var roles: [Role]
    public var principals: [String]
    /// Per-approver limit in minor units of the payment's currency; nil: no limit.
    public var maxAmountMinor: Int64?

    public init(required: Int, roles: [Role] = [], principals: [String] = [], maxAmountMinor: Int64? = nil) {
      self.required = required
      self.roles = roles
      self.principals = principals
      self.maxAmountMinor = maxAmountMinor
    }

    /// Whether `principal` may approve at this level a payment of `amount` minor units.
    public func admits(_ principal: Principal, amountMinor: Int64) -> Bool {
      let eligible = self.principals.contains { $0.utf8.elementsEqual(principal.identity.utf8) }
        || self.roles.contains { principal.holds($0) }
      guard eligible else { return false }
      if let limit = self.maxAmountMinor, amountMinor > limit { return false }
      return true
    }
  }

  /// The requirement for `instruction` with the risk rules' `riskOutcome`: the first matching
  /// rule's, or none (released at once) when no rule matches.
  public func requirement(
    for instruction: PaymentInstruction, riskOutcome: RiskAction = .allow
  ) -> (ruleID: String, requirement: Requirement) {
    for rule in self.rules where rule.match.matches(instruction, riskOutcome: riskOutcome) {
      return (rule.id, rule.requirement)
    }
    return ("", .none)
  }

  /// Every problem with the policy, naming the field (`rules[2].requirement.levels[0].required`),
  /// and rules that an earlier rule shadows (never reached).
  public func violations(prefix: String = "policy.") -> [FieldViolation] {
    var found: [FieldViolation] = []
    func fail(_ field: String, _ description: String) { found.append(FieldViolation(field: prefix + field, description: description)) }
    if self.rules.count > Limits.maxPolicyRules {
      fail("rules", "at most \(Limits.maxPolicyRules) rules")
    }
    var ids = Set<String>()
    for (index, rule) in self.rules.prefix(Limits.maxPolicyRules).enumerated() {
      let at = "rules[\(index)]."
      if rule.id.isEmpty || rule.id.utf8.count > Limits.maxPolicyRuleIDLength
        || !rule.id.utf8.allSatisfy({ IdentityRules.isNameByte($0) })
      {
        fail(at + "id", "must be 1 to \(Limits.maxPolicyRuleIDLength) characters of letters, digits and . _ - @")
      } else if !ids.insert(rule.id).inserted {
        fail(at + "id", "repeats the id of an earlier rule")
      }
      if rule.description.utf8.count > Limits.maxPolicyTextLength {
        fail(at + "description", "at most \(Limits.maxPolicyTextLength) bytes")
      }
      let match = rule.match
      if match.minAmountMinor < 0 { fail(at + "match.min_amount_minor", "must not be negative") }
      if let max = match.maxAmountMinor, max <= match.minAmountMinor {
        fail(at + "match.max_amount_minor", "must be above min_amount_minor (or 0 for no bound)")
      }
      for (name, count) in [
        ("currency_codes", match.currencies.count), ("account_ids", match.debtorAccounts.count),
        ("payment_types", match.paymentTypes.count), ("creditor_countries", match.creditorCountries.count),
        ("risk_outcomes", match.riskOutcomes.count),
      ] where count > Limits.maxPolicyMatchValues {
        fail(at + "match." + name, "at most \(Limits.maxPolicyMatchValues) values")
      }
      for (position, country) in match.creditorCountries.enumerated()
      where country.utf8.count != 2 || !country.utf8.allSatisfy({ $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) {
        fail(at + "match.creditor_countries[\(position)]", "must be an ISO 3166 alpha-2 code")
      }
      for (position, account) in match.debtorAccounts.enumerated()
      where account.isEmpty || account.utf8.count > Limits.maxAccountIDLength {
        fail(at + "match.account_ids[\(position)]", "must be an account id of at most \(Limits.maxAccountIDLength) bytes")
      }
      let requirement = rule.requirement
      if requirement.levels.count > Limits.maxApprovalLevels {
        fail(at + "requirement.levels", "at most \(Limits.maxApprovalLevels) levels")
      }
      if !requirement.levels.isEmpty
        && !(Limits.minApprovalWindowSeconds...Limits.maxApprovalWindowSeconds).contains(requirement.windowSeconds)
      {
        fail(
          at + "requirement.approval_window_seconds",
          "must be between \(Limits.minApprovalWindowSeconds) and \(Limits.maxApprovalWindowSeconds)")
      }
      for (position, level) in requirement.levels.prefix(Limits.maxApprovalLevels).enumerated() {
        let levelAt = at + "requirement.levels[\(position)]."
        if !(1...Limits.maxApprovalsPerLevel).contains(level.required) {
          fail(levelAt + "required_approvals", "must be between 1 and \(Limits.maxApprovalsPerLevel)")
        }
        if level.roles.isEmpty && level.principals.isEmpty {
          fail(levelAt + "roles", "name at least one role or principal who may approve")
        }
        if level.principals.count > Limits.maxPolicyMatchValues {
          fail(levelAt + "principals", "at most \(Limits.maxPolicyMatchValues) principals")
        }
        for (index, principal) in level.principals.enumerated() {
          if case .failure(let problem) = IdentityRules.check(principal) {
            fail(levelAt + "principals[\(index)]", "\(problem)")
          }
        }
        if let limit = level.maxAmountMinor, limit <= 0 {
          fail(levelAt + "max_amount_minor", "must be positive (or 0 for no limit)")
        }
      }
      // Shadowed: an earlier rule accepts every payment this one would.
      if let earlier = self.rules.prefix(index).firstIndex(where: { rule.match.isCovered(by: $0.match) }) {
        fail(at + "match", "is unreachable: rules[\(earlier)] (\(self.rules[earlier].id)) matches every payment it would")
      }
    }
    return found
  }

  /// The level a `review` decision of the risk rules adds to what the policy requires (or
  /// requires alone, under the threshold): one approver.
  public static let riskReviewLevel = Level(required: 1, roles: [.approver])

  /// What payments need before any policy is put (version 0): payments of at least
  /// `thresholdMajorUnits` of their own currency need one approver, with OTP, within a day;
  /// smaller ones are released at once (`payments.approval_threshold_major`).
  public static func defaultRequirement(for instruction: PaymentInstruction, thresholdMinor: Int64) -> (ruleID: String, requirement: Requirement) {
    guard instruction.amount.minorUnits >= thresholdMinor else { return ("", .none) }
    return (
      "default-threshold",
      Requirement(levels: [Level(required: 1, roles: [.approver])], windowSeconds: Limits.defaultApprovalWindowSeconds, requireOTP: true)
    )
  }
}
