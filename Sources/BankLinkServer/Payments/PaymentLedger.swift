import BankLinkCore
import BankLinkJournal
import BankLinkRules
import BankLinkStore
import Crypto
import Foundation

/// The payment use cases over the store: create (idempotent, validated, funds reserved),
/// read, list and cancel. Every mutation runs through the ``GroupCommitWriter`` and writes its
/// payment, idempotency record, reservation, outbox entry and journal entry in one transaction;
/// the caller gets the entry's receipt (a replay: the receipt of the original change).
public struct PaymentLedger: Sendable {
  public struct Configuration: Sendable {
    /// Payments of at least this many major units of their currency (1,000,000 = CNY 1,000,000.00,
    /// JPY 1,000,000, KWD 1,000,000.000) wait in `pending_approval`; smaller ones are released to
    /// the bank at once. Stands in for the approval policy until it is built.
    public var approvalThresholdMajorUnits: Int64
    /// The time zone of `features.hour` and `features.weekday` (config `risk.time_zone`), and
    /// per-account exceptions (`risk.account_time_zones`).
    public var riskTimeZone: TimeZone
    public var accountTimeZones: [String: TimeZone]

    public init(
      approvalThresholdMajorUnits: Int64 = 1_000_000, riskTimeZone: TimeZone = TimeZone(identifier: "Asia/Shanghai") ?? .gmt,
      accountTimeZones: [String: TimeZone] = [:]
    ) {
      self.approvalThresholdMajorUnits = approvalThresholdMajorUnits
      self.riskTimeZone = riskTimeZone
      self.accountTimeZones = accountTimeZones
    }

    func timeZone(of accountID: String) -> TimeZone { self.accountTimeZones[accountID] ?? self.riskTimeZone }

    /// The threshold in minor units of `currency` (by its ISO 4217 exponent); saturates rather
    /// than overflows.
    public func approvalThreshold(in currency: CurrencyCode) -> Int64 {
      var threshold = self.approvalThresholdMajorUnits
      for _ in 0..<Money.minorUnitExponent(of: currency) {
        let (next, overflow) = threshold.multipliedReportingOverflow(by: 10)
        if overflow { return .max }
        threshold = next
      }
      return threshold
    }
  }

  public let writer: GroupCommitWriter
  public let configuration: Configuration
  /// The approval policy in force (``ApprovalPolicyStore``).
  public let policies: ApprovalPolicyStore
  public let rules: RuleSetStore
  let now: @Sendable () -> Instant

  public init(
    writer: GroupCommitWriter, configuration: Configuration, policies: ApprovalPolicyStore = ApprovalPolicyStore(),
    rules: RuleSetStore = RuleSetStore(), now: @escaping @Sendable () -> Instant
  ) {
    self.writer = writer
    self.configuration = configuration
    self.policies = policies
    self.rules = rules
    self.now = now
  }

  var store: Store { self.writer.store }

  /// Why a create or cancel was refused; mapped to gRPC statuses by the handler.
  public enum Refusal: Error, Sendable, Hashable {
    case invalid([FieldViolation])
    case accountNotFound(String)
    case accountNotActive(String, AccountStatus)
    case insufficientFunds(available: Int64, requested: Int64, currency: CurrencyCode)
    /// The account's balance has not been synced from its bank yet (just after start).
    case balanceNotSynced(String)
    case idempotencyConflict(key: String, paymentID: String)
    case paymentNotFound(String)
    case notCreator(paymentID: String)
    case notCancellable(paymentID: String, status: PaymentStatus)
    case batchRejected([BatchItemRefusal])
    /// The risk rules' work for a batch passed ``Limits/maxRiskStepsPerBatch`` at item `index`
    /// (the batch's loop names the item).
    case riskWorkExceeded(index: Int)
  }

  /// The rule steps the payments of one write job may still take (``Limits/maxRiskStepsPerBatch``),
  /// for the rule set in force and, apart, for a shadow set.
  final class RiskStepBudget {
    var remaining: Int
    var shadowRemaining: Int
    init(_ steps: Int = Limits.maxRiskStepsPerBatch) {
      self.remaining = steps
      self.shadowRemaining = steps
    }
  }

  public struct BatchItemRefusal: Sendable, Hashable {
    public var index: Int
    public var refusal: Refusal
  }

  public struct Created: Sendable, Hashable {
    public var payment: Payment
    /// True when an earlier call with the same key already created it.
    public var replayed: Bool
    /// The journal entry of the creation.
    public var receipt: JournalReceipt?
  }

  public struct Cancelled: Sendable, Hashable {
    public var payment: Payment
    /// The journal entry of the cancellation (of the earlier one, when it was cancelled before).
    public var receipt: JournalReceipt?
  }

  // MARK: Create

  /// Creates a payment, or returns the one an earlier call with the same key created.
  ///
  /// The key is looked up before the request is validated: a retry is answered with the
  /// stored payment whatever today's date is (a request dated "today" retried after midnight
  /// must not be refused, or a client may re-key and pay twice).
  public func create(_ instruction: PaymentInstruction, idempotencyKey: String, creator: String) async throws -> Created {
    let idemKey = IdempotencyRecord.key(creator: creator, key: idempotencyKey)
    let canonical = instruction.canonicalRecord
    if let replay = try self.store.withReadTransaction({ txn -> Created? in
      guard var replay = try Self.replay(idemKey, canonical: canonical, idempotencyKey: idempotencyKey, { try txn.get($0, in: $1) })
      else { return nil }
      replay.receipt = try Self.receipt(of: "payment.created", about: replay.payment.id, in: txn)
      return replay
    }) {
      return replay
    }
    let now = self.now()
    let violations = PaymentValidation.violations(of: instruction, today: now.isoDate)
    guard violations.isEmpty else { throw Refusal.invalid(violations) }
    let configuration = self.configuration
    let policies = self.policies
    let rules = self.rules
    return try await self.writer.write { txn in
      if var replay = try Self.replay(idemKey, canonical: canonical, idempotencyKey: idempotencyKey, { try txn.get($0, in: $1) }) {
        replay.receipt = try Self.receipt(of: "payment.created", about: replay.payment.id, in: txn)
        return replay
      }
      let (payment, receipt) = try Self.insert(
        instruction, field: "instruction.", creator: creator, idempotencyKey: idempotencyKey, batchID: "",
        configuration: configuration, policies: policies, rules: rules, at: now, txn: &txn)
      var record = RecordWriter(capacity: 128)
      record.write(IdempotencyRecord.fingerprint(canonical))
      record.write(payment.id)
      try txn.put(idemKey, record.bytes, in: .idempotency)
      return Created(payment: payment, replayed: false, receipt: receipt)
    }
  }

  /// The payment an earlier create with this key made, or nil; a different request under the
  /// same key is refused.
  private static func replay(
    _ idemKey: [UInt8], canonical: [UInt8], idempotencyKey: String, _ get: ([UInt8], Database) throws -> [UInt8]?
  ) throws -> Created? {
    guard let existing = try get(idemKey, .idempotency) else { return nil }
    var reader = RecordReader(existing)
    let storedRequest = try reader.readString()
    let paymentID = try reader.readString()
    guard IdempotencyRecord.fingerprint(storedRequest, matches: canonical) else {
      throw Refusal.idempotencyConflict(key: idempotencyKey, paymentID: paymentID)
    }
    guard let bytes = try get(Array(paymentID.utf8), .payments) else {
      throw StoreError(code: .corrupted, message: "idempotency record points at missing payment \(paymentID)")
    }
    return Created(payment: try Payment(record: bytes), replayed: true, receipt: nil)
  }

  /// The receipt of the first journal entry about `object` with `action` (the change a replay
  /// acknowledges again), or of the last such entry when `last`.
  static func receipt(of action: String, about object: String, last: Bool = false, in txn: some ReadableTransaction) throws -> JournalReceipt? {
    let entries = try AuditJournal.entries(about: object, limit: Limits.maxJournalEntriesPerObject, in: txn)
      .filter { $0.action == action }
    return (last ? entries.last : entries.first)?.receipt
  }

  /// Creates one payment inside the caller's transaction: account and funds checks, state,
  /// reservation, outbox entry and its journal entry, whose receipt it returns.
  /// `riskBudget`: shared by the items of a batch (nil: this payment's decisions alone bound it).
  static func insert(
    _ instruction: PaymentInstruction, field: String, creator: String, idempotencyKey: String, batchID: String,
    configuration: Configuration, policies: ApprovalPolicyStore, rules: RuleSetStore, riskBudget: RiskStepBudget? = nil, at now: Instant,
    txn: inout WriteTransaction
  ) throws -> (Payment, JournalReceipt) {
    var instruction = instruction
    if instruction.requestedExecutionDate.isEmpty {
      // As the contract says: empty means the day the payment is created.
      instruction.requestedExecutionDate = now.isoDate
    }
    let account = try Self.account(instruction.debtorAccountID, txn: txn)
    guard account.currency == instruction.amount.currency else {
      throw Refusal.invalid([
        FieldViolation(
          field: field + "amount.currency_code",
          description: "must be the debtor account's currency \(account.currency), not \(instruction.amount.currency)")
      ])
    }
    guard account.status == .active else { throw Refusal.accountNotActive(account.id, account.status) }
    // Just after start the account may be known before its balance: not "insufficient funds"
    // (no money is missing), but not payable until the first sync has brought the ledger.
    guard try AccountCache.cachedBalance(account.id, { try txn.get($0, in: .balances) }) != nil else {
      throw Refusal.balanceNotSynced(account.id)
    }
    let available = try Reservations.available(account.id, txn: txn)
    guard instruction.amount.minorUnits <= available else {
      throw Refusal.insufficientFunds(available: available, requested: instruction.amount.minorUnits, currency: account.currency)
    }
    let sequence = try Sequences.next(Sequences.payment, txn: &txn)
    let id = PaymentIDs.make(sequence: sequence)
    var payment = Payment(
      id: id, instruction: instruction, status: .pendingRisk, creator: creator, idempotencyKey: idempotencyKey,
      endToEndID: "BL\(now.millisecondsSinceEpoch)\(sequence)", batchID: batchID, createdAt: now, updatedAt: now)
    // The risk rules in force in this transaction decide first, on the features of the
    // account's earlier payments read in this same snapshot (the one the funds check used).
    // A shadow set, when one runs, is evaluated on the same variables and only recorded.
    var risk: (decision: RiskDecision, features: FeatureSnapshot)?
    let active = try rules.current(.active, in: txn)
    // The shadow set is never enforced, so it can never stop a payment either: a stored shadow
    // set this build cannot compile is skipped (GetShadowReport stops counting; putting a new
    // one replaces it).
    let shadow = try? rules.current(.shadow, in: txn)
    if active != nil || shadow != nil {
      let ledger = try AccountCache.cachedBalance(account.id) { try txn.get($0, in: .balances) }?.balance.ledger.minorUnits ?? 0
      let features = try RiskFeatures.snapshot(
        accountID: account.id, creditor: instruction.creditor, amount: instruction.amount.minorUnits, at: now,
        timeZone: configuration.timeZone(of: account.id), ledger: ledger, available: available, in: txn)
      let variables = RiskVariables.values(
        instruction: instruction, creator: creator, account: account, features: features, at: now)
      // Within a batch, the items' decisions share one budget: past it the batch is refused,
      // never decided on rules the budget cut short. Shadow rules (and a shadow set) are never
      // enforced, so they never refuse a batch: they have a budget of their own, and the items
      // past it are not evaluated by them.
      var decision: RiskDecision?
      if let active {
        let (decided, steps, shadowSteps) = active.decide(
          variables, maxSteps: riskBudget?.remaining ?? RuleLimits.maxDecisionSteps,
          shadowMaxSteps: riskBudget.map { max(0, $0.shadowRemaining) } ?? RuleLimits.maxDecisionSteps)
        if let riskBudget {
          riskBudget.remaining -= steps
          riskBudget.shadowRemaining -= shadowSteps
          guard riskBudget.remaining > 0 else { throw Refusal.riskWorkExceeded(index: 0) }
        }
        decision = decided
      }
      if let decision {
        risk = (decision, features)
        try txn.put(Array(id.utf8), decision.record(features: features), in: .riskDecisions)
      }
      let shadowBudget = riskBudget?.shadowRemaining ?? RuleLimits.maxDecisionSteps
      if let shadow, shadowBudget > 0 {
        let (shadowDecision, steps, shadowSteps) = shadow.decide(variables, maxSteps: shadowBudget, shadowMaxSteps: shadowBudget)
        riskBudget?.shadowRemaining -= steps + shadowSteps
        // Cut short by the budget: not recorded (it would count rules as failed that never ran).
        if (riskBudget?.shadowRemaining ?? 1) > 0 {
          // Its records are checked as they are read; one that does not decode is not a reason
          // to refuse the payment (the report then misses this payment).
          try? ShadowReports.record(
            shadowDecision, active: decision, features: features, paymentID: id, paymentSequence: sequence, at: now, txn: &txn)
        }
      }
      // Every attempt counts towards the account's features, blocked ones too.
      try RiskFeatures.record(
        accountID: account.id, creditor: instruction.creditor, amount: instruction.amount.minorUnits, at: now, txn: &txn)
    }
    if let risk, risk.decision.outcome == .block {
      return try Self.block(payment, risk.decision, creator: creator, at: now, txn: &txn)
    }
    // The approval policy in force in this transaction decides what the payment needs, and the
    // payment is pinned to that requirement; a `review` decision adds a level.
    let policy = try policies.current(in: txn)
    let riskOutcome = risk?.decision.outcome ?? .allow
    var (ruleID, requirement) = policy?.requirement(for: instruction, riskOutcome: riskOutcome)
      ?? ApprovalPolicy.defaultRequirement(
        for: instruction, thresholdMinor: configuration.approvalThreshold(in: instruction.amount.currency))
    // A policy rule that names `review` among its risk outcomes says itself what a reviewed
    // payment needs; otherwise review adds a level to whatever the policy asks.
    let policyTookCharge = policy?.rules.first { $0.id == ruleID }?.match.riskOutcomes.contains(.review) ?? false
    if riskOutcome == .review && !policyTookCharge {
      if requirement.levels.isEmpty {
        requirement = ApprovalPolicy.Requirement(
          levels: [ApprovalPolicy.riskReviewLevel], windowSeconds: Limits.defaultApprovalWindowSeconds, requireOTP: true)
      } else if requirement.levels.count < Limits.maxApprovalLevels {
        requirement.levels.append(ApprovalPolicy.riskReviewLevel)
      } else {
        // A policy already at the most levels a payment can store: the last level needs one
        // more approver instead (never more levels than the approval record holds).
        let last = requirement.levels.count - 1
        requirement.levels[last].required = min(requirement.levels[last].required + 1, Limits.maxApprovalsPerLevel)
      }
      ruleID = ruleID.isEmpty ? "risk-review" : ruleID + "+risk-review"
    }
    _ = payment.apply(.riskCleared(needsApproval: !requirement.levels.isEmpty), at: now)
    var approval: ApprovalState?
    if payment.status == .pendingApproval {
      let state = ApprovalState(
        policyVersion: policy?.version ?? 0, ruleID: ruleID, requirement: requirement,
        deadline: now.adding(milliseconds: requirement.windowSeconds * 1000))
      try state.save(id, txn: &txn)
      try PendingApprovals.enter(id, deadline: state.deadline, txn: &txn)
      approval = state
    }
    // One entry for the whole creation: what was asked (the instruction's digest binds every
    // field), by whom, and the state it was left in.
    var details = Self.creationDetails(payment, risk?.decision)
    if !batchID.isEmpty { details["batch_id"] = batchID }
    if let approval {
      details["policy_version"] = String(approval.policyVersion)
      details["policy_rule"] = approval.ruleID
      details["approval_deadline_ms"] = String(approval.deadline.millisecondsSinceEpoch)
    }
    let receipt = try AuditJournal.append(&txn, at: now, principal: creator, action: "payment.created", object: id, details: details)
    if payment.status == .approved {
      try OutboxRecord.enqueue(payment, txn: &txn)
    }
    try txn.putPayment(payment, key: Array(id.utf8))
    try txn.put(Array(payment.endToEndID.utf8), Array(id.utf8), in: .paymentsByEndToEnd)
    try Reservations.reserve(payment, txn: &txn)
    if let risk, risk.decision.outcome == .review {
      try Self.raiseRiskAlert(payment, risk.decision, at: now, txn: &txn)
    }
    return (payment, receipt)
  }

  /// The `payment.created` journal entry's details: what was asked (the instruction's digest
  /// binds every field), the state it was left in, and what the risk rules decided.
  private static func creationDetails(_ payment: Payment, _ decision: RiskDecision?) -> AuditPayload {
    let instruction = payment.instruction
    var details: AuditPayload = [
      "debtor_account": instruction.debtorAccountID,
      "amount_minor": String(instruction.amount.minorUnits),
      "currency": instruction.amount.currency.description,
      "instruction_sha256": IdempotencyRecord.fingerprint(instruction.canonicalRecord),
      "end_to_end_id": payment.endToEndID,
      "status": payment.status.rawValue,
    ]
    if let decision {
      details["risk_outcome"] = decision.outcome.name
      details["risk_rule_set_version"] = String(decision.ruleSetVersion)
      if !decision.applied.isEmpty { details["risk_hits"] = decision.applied.map(\.ruleID).joined(separator: ",") }
    }
    return details
  }

  /// A payment the rules block: stored `blocked` with the rules' explanation, journaled, and
  /// raised as an alert — with nothing reserved and nothing sent.
  private static func block(
    _ payment: Payment, _ decision: RiskDecision, creator: String, at now: Instant, txn: inout WriteTransaction
  ) throws -> (Payment, JournalReceipt) {
    var payment = payment
    _ = payment.apply(.riskBlocked, at: now, reason: RiskDecision.clip("blocked by risk rules: \(decision.summary)", maxBytes: 1_024))
    let receipt = try AuditJournal.append(
      &txn, at: now, principal: creator, action: "payment.created", object: payment.id,
      details: Self.creationDetails(payment, decision))
    try txn.putPayment(payment)
    try txn.put(Array(payment.endToEndID.utf8), Array(payment.id.utf8), in: .paymentsByEndToEnd)
    try Self.raiseRiskAlert(payment, decision, at: now, txn: &txn)
    return (payment, receipt)
  }

  /// One `risk_hit` alert per payment the rules block or send to review, at the severity of
  /// its most severe applied hit, in the creating transaction.
  static func raiseRiskAlert(_ payment: Payment, _ decision: RiskDecision, at now: Instant, txn: inout WriteTransaction) throws {
    let applied = decision.applied
    let severity = applied.map(\.severity).max() ?? .warning
    try AlertLog.raise(
      &txn, at: now, severity: severity, kind: .riskHit, paymentID: payment.id, accountID: payment.instruction.debtorAccountID,
      message: RiskDecision.clip(
        "payment \(payment.id) \(decision.outcome == .block ? "blocked" : "sent to review") by risk rules: \(decision.summary)",
        maxBytes: 1_024),
      details: [
        "outcome": decision.outcome.name, "rules": applied.map(\.ruleID).joined(separator: ","),
        "rule_set_version": String(decision.ruleSetVersion), "score": String(decision.score),
      ])
  }

  // MARK: Batch

  public struct CreatedBatch: Sendable, Hashable {
    public var batchID: String
    public var payments: [Payment]
    public var replayed: Bool
    /// The journal entry of the batch (after those of its payments).
    public var receipt: JournalReceipt?
  }

  /// Creates every item of a batch or none: a refusal of any item (validation, funds, account)
  /// rolls the whole batch back and reports every failing item by index.
  public func createBatch(_ items: [PaymentInstruction], idempotencyKey: String, creator: String) async throws -> CreatedBatch {
    guard !items.isEmpty else { throw Refusal.invalid([FieldViolation(field: "items", description: "must not be empty")]) }
    guard items.count <= Limits.maxBatchItems else {
      throw Refusal.invalid([FieldViolation(field: "items", description: "at most \(Limits.maxBatchItems) items per batch")])
    }
    let idemKey = IdempotencyRecord.batchKey(creator: creator, key: idempotencyKey)
    let canonical = items.reduce(into: [UInt8]()) { $0 += $1.canonicalRecord }
    // A replay is answered before validation, whatever the date (see `create`).
    if let replay = try self.store.withReadTransaction({ txn -> CreatedBatch? in
      guard var replay = try Self.replayBatch(idemKey, canonical: canonical, idempotencyKey: idempotencyKey, { try txn.get($0, in: $1) })
      else { return nil }
      replay.receipt = try Self.receipt(of: "batch.created", about: replay.batchID, in: txn)
      return replay
    }) {
      return replay
    }
    let now = self.now()
    let today = now.isoDate
    let violations = items.enumerated().flatMap { index, item in
      PaymentValidation.violations(of: item, today: today, prefix: "items[\(index)].")
    }
    guard violations.isEmpty else { throw Refusal.invalid(violations) }
    let configuration = self.configuration
    let policies = self.policies
    let rules = self.rules
    let fingerprint = IdempotencyRecord.fingerprint(canonical)
    return try await self.writer.write { txn in
      if var replay = try Self.replayBatch(idemKey, canonical: canonical, idempotencyKey: idempotencyKey, { try txn.get($0, in: $1) }) {
        replay.receipt = try Self.receipt(of: "batch.created", about: replay.batchID, in: txn)
        return replay
      }
      let sequence = try Sequences.next(Sequences.payment, txn: &txn)
      let batchID = "batch-\(now.millisecondsSinceEpoch)-\(sequence)"
      var payments: [Payment] = []
      var failures: [(Int, Refusal)] = []
      let riskBudget = RiskStepBudget()
      for (index, item) in items.enumerated() {
        do {
          // Each item in its own nested transaction so that every failing item is reported;
          // any failure aborts the whole batch below.
          let (payment, _) = try txn.withNestedTransaction { nested in
            try Self.insert(
              item, field: "items[\(index)].", creator: creator, idempotencyKey: "\(idempotencyKey)#\(index)",
              batchID: batchID, configuration: configuration, policies: policies, rules: rules, riskBudget: riskBudget, at: now,
              txn: &nested)
          }
          payments.append(payment)
        } catch let refusal as Refusal {
          // The rules' work spent: the batch stops here (the items after it would each fail at
          // once, the budget gone).
          if case .riskWorkExceeded = refusal { throw Refusal.riskWorkExceeded(index: index) }
          failures.append((index, refusal))
        }
      }
      if !failures.isEmpty { throw Refusal.batchRejected(failures.map { BatchItemRefusal(index: $0.0, refusal: $0.1) }) }
      var record = RecordWriter(capacity: fingerprint.utf8.count + 32 * payments.count)
      record.write(fingerprint)
      record.write(batchID)
      for payment in payments { record.write(payment.id) }
      try txn.put(idemKey, record.bytes, in: .idempotency)
      let receipt = try AuditJournal.append(
        &txn, at: now, principal: creator, action: "batch.created", object: batchID,
        details: ["payments": String(payments.count), "idempotency_key": idempotencyKey])
      return CreatedBatch(batchID: batchID, payments: payments, replayed: false, receipt: receipt)
    }
  }

  private static func replayBatch(
    _ idemKey: [UInt8], canonical: [UInt8], idempotencyKey: String, _ get: ([UInt8], Database) throws -> [UInt8]?
  ) throws -> CreatedBatch? {
    guard let existing = try get(idemKey, .idempotency) else { return nil }
    var reader = RecordReader(existing)
    guard IdempotencyRecord.fingerprint(try reader.readString(), matches: canonical) else {
      throw Refusal.idempotencyConflict(key: idempotencyKey, paymentID: "")
    }
    let batchID = try reader.readString()
    var payments: [Payment] = []
    while !reader.isAtEnd {
      let id = try reader.readString()
      guard let bytes = try get(Array(id.utf8), .payments) else {
        throw StoreError(code: .corrupted, message: "batch \(batchID) points at missing payment \(id)")
      }
      payments.append(try Payment(record: bytes))
    }
    return CreatedBatch(batchID: batchID, payments: payments, replayed: true, receipt: nil)
  }

  // MARK: Read

  public func payment(_ id: String) throws -> Payment? {
    try self.store.withReadTransaction { txn in
      try txn.get(Array(id.utf8), in: .payments).map(Payment.init(record:))
    }
  }

  public struct Filter: Sendable {
    public var statuses: Set<PaymentStatus> = []
    public var debtorAccountID = ""
    public var creator = ""
    public var createdFrom: Instant?
    public var createdBefore: Instant?

    public init() {}

    func matches(_ payment: Payment) -> Bool {
      (self.statuses.isEmpty || self.statuses.contains(payment.status))
        && (self.debtorAccountID.isEmpty || payment.instruction.debtorAccountID == self.debtorAccountID)
        && (self.creator.isEmpty || payment.creator == self.creator)
        && (self.createdFrom.map { payment.createdAt >= $0 } ?? true)
        && (self.createdBefore.map { payment.createdAt < $0 } ?? true)
    }
  }

  /// One page of ``list(_:after:limit:scanLimit:)``.
  public struct Page: Sendable {
    public var payments: [Payment]
    /// The payment id the next page starts after, or nil when no later payment matches.
    public var resumeAfter: String?
  }

  /// Payments matching `filter` in id order after `afterID`, at most `limit` of them.
  ///
  /// The scan reads at most `scanLimit` payments, so a call costs the same on a long history
  /// with a selective filter as on a short one: when the budget runs out first the page is
  /// short (possibly empty) and `resumeAfter` names the last payment read. Callers page on
  /// until `resumeAfter` is nil.
  public func list(
    _ filter: Filter, after afterID: String?, limit: Int, scanLimit: Int = Limits.maxListScanRecords
  ) throws -> Page {
    let budget = max(1, scanLimit)
    return try self.store.withReadTransaction { txn in
      var found: [Payment] = []
      var scanned = 0
      var lastRead: String?
      var resumeAfter: String?
      let start = afterID.map { Array($0.utf8) + [0] }
      try txn.scan(.payments, from: start) { _, value in
        if scanned == budget {
          // More payments follow, none of them read: continue after the last one read.
          resumeAfter = lastRead
          return false
        }
        scanned += 1
        let payment = try Payment(record: value)
        lastRead = payment.id
        guard filter.matches(payment) else { return true }
        if found.count == limit {
          resumeAfter = found.last?.id
          return false
        }
        found.append(payment)
        return true
      }
      return Page(payments: found, resumeAfter: resumeAfter)
    }
  }

  /// Available balance = ledger (from the cache) − reservations of payments in flight.
  public func available(accountID: String) throws -> Int64? {
    try self.store.withReadTransaction { txn in
      guard try txn.get(Array(accountID.utf8), in: .balances) != nil else { return nil }
      return try Reservations.available(accountID, reading: txn)
    }
  }

  // MARK: Cancel

  /// Cancels a payment the submitter has not claimed for the bank, by its creator or an admin.
  /// Cancelling an already cancelled payment returns it unchanged. Serialised with the
  /// submitter's claim (both are write transactions): a cancel committed first makes the
  /// submitter discard the outbox entry; a claim committed first makes the cancel fail with
  /// ``Refusal/notCancellable(paymentID:status:)`` (`submitting`: it may be with the bank).
  public func cancel(
    _ id: String, by principal: String, isAdmin: Bool, reason: String, requestID: String = ""
  ) async throws -> Cancelled {
    let now = self.now()
    return try await self.writer.write { txn in
      guard let bytes = try txn.get(Array(id.utf8), in: .payments) else { throw Refusal.paymentNotFound(id) }
      var payment = try Payment(record: bytes)
      guard payment.creator == principal || isAdmin else { throw Refusal.notCreator(paymentID: id) }
      if payment.status == .cancelled {
        return Cancelled(payment: payment, receipt: try Self.receipt(of: "payment.cancelled", about: id, last: true, in: txn))
      }
      guard case .success = payment.apply(.cancelled, at: now, reason: reason) else {
        throw Refusal.notCancellable(paymentID: id, status: payment.status)
      }
      try Reservations.releaseIfDue(payment, txn: &txn)
      try PendingApprovals.leave(id, txn: &txn)
      try txn.putPayment(payment, key: Array(id.utf8))
      var details: AuditPayload = ["reason": reason]
      if !requestID.isEmpty { details["request_id"] = requestID }
      let receipt = try AuditJournal.append(&txn, at: now, principal: principal, action: "payment.cancelled", object: id, details: details)
      return Cancelled(payment: payment, receipt: receipt)
    }
  }

  // MARK: Helpers

  static func account(_ id: String, txn: WriteTransaction) throws -> Account {
    guard let bytes = try txn.get(Array(id.utf8), in: .accounts) else { throw Refusal.accountNotFound(id) }
    return try Account(record: bytes)
  }
}
