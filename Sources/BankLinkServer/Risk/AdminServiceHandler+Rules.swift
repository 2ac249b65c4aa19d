import BankLinkCore
import BankLinkJournal
import BankLinkProto
import BankLinkRules
import BankLinkStore
import GRPCCore
import GRPCProtobuf
import SwiftProtobuf

/// The risk rule RPCs of the admin service (docs/rules.md).
extension AdminServiceHandler {
  /// Payments a backtest evaluates at most, and payment records it reads looking for them.
  static let maxBacktestPayments = 10_000
  static let defaultBacktestPayments = 1_000
  static let maxBacktestScan = 100_000
  /// Wall time a backtest may take (it holds one read transaction, which keeps LMDB from
  /// reusing pages while it runs).
  static let maxBacktestMilliseconds: Int64 = 10_000
  /// Differing decisions a backtest returns in full.
  static let maxBacktestDecisions = 100

  func getRuleSet(request: Banklink_V1_GetRuleSetRequest, context: ServerContext) async throws -> Banklink_V1_RuleSet {
    // Version 0 (an empty set): no rules put yet; every payment is allowed. The stored message
    // as put, not compiled: shown even if this build would refuse it.
    let slot: RuleSetSlot = request.shadow ? .shadow : .active
    let stored = try withStore { try self.store.withReadTransaction { try self.payments.rules.storedCurrent(slot, in: $0) } }
    return stored ?? Banklink_V1_RuleSet()
  }

  func validateRuleSet(
    request: Banklink_V1_ValidateRuleSetRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ValidateRuleSetResponse {
    let issues: [RuleSetIssue]
    switch Self.compile(request.ruleSet) {
    case .success: issues = []
    case .failure(let failure): issues = failure.issues
    }
    return .with {
      $0.valid = issues.isEmpty
      $0.issues = issues.map { issue in .with { $0.ruleID = issue.ruleID; $0.field = issue.field; $0.message = issue.message } }
    }
  }

  func putRuleSet(request: Banklink_V1_PutRuleSetRequest, context: ServerContext) async throws -> Banklink_V1_PutRuleSetResponse {
    let caller = try Caller.required()
    if !request.requestID.isEmpty { try validIdempotencyKey(request.requestID, field: "request_id") }
    guard request.hasRuleSet else { throw APIError.invalidArgument("rule_set", "is required") }
    let compiled: CompiledRuleSet
    switch Self.compile(request.ruleSet) {
    case .success(let value): compiled = value
    case .failure(let failure):
      throw badRequest(failure.issues.map { FieldViolation(field: "rule_set." + $0.field, description: $0.message) })
    }
    let now = self.payments.now()
    let rules = self.payments.rules
    let slot: RuleSetSlot = request.shadow ? .shadow : .active
    do {
      let (stored, receipt) = try await self.payments.writer.write { txn in
        try rules.put(
          compiled, as: slot, expectedVersion: request.expectedVersion, by: caller.principal.identity, at: now, txn: &txn)
      }
      return .with {
        $0.ruleSet = Banklink_V1_RuleSet(stored)
        $0.receipt = Banklink_V1_Receipt(receipt)
      }
    } catch let conflict as RuleSetConflict {
      throw Self.conflict(conflict, slot)
    } catch let error as StoreError {
      throw APIError.storage(error)
    }
  }

  private static func conflict(_ conflict: RuleSetConflict, _ slot: RuleSetSlot) -> GoogleRPCStatus {
    let inForce = conflict.current == 0 ? "none is" : "version \(conflict.current) is"
    return GoogleRPCStatus(
      code: .aborted,
      message: "expected_version \(conflict.expected) is not the \(slot == .active ? "rule set in force" : "shadow rule set") (\(inForce)); read it again",
      details: [])
  }

  func clearShadowRuleSet(
    request: Banklink_V1_ClearShadowRuleSetRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ClearShadowRuleSetResponse {
    let caller = try Caller.required()
    let now = self.payments.now()
    let rules = self.payments.rules
    do {
      let cleared = try await self.payments.writer.write { txn in
        try rules.clearShadow(expectedVersion: request.expectedVersion, by: caller.principal.identity, at: now, txn: &txn)
      }
      return .with {
        if let (version, receipt) = cleared {
          $0.stoppedVersion = version
          $0.receipt = Banklink_V1_Receipt(receipt)
        }
      }
    } catch let conflict as RuleSetConflict {
      throw Self.conflict(conflict, .shadow)
    } catch let error as StoreError {
      throw APIError.storage(error)
    }
  }

  /// Differences a shadow report page lists by default and at most.
  static let defaultShadowDifferences = 20
  static let maxShadowDifferences = 50

  func getShadowReport(request: Banklink_V1_GetShadowReportRequest, context: ServerContext) async throws -> Banklink_V1_ShadowReport {
    guard (0...Self.maxShadowDifferences).contains(Int(request.pageSize)) else {
      throw APIError.invalidArgument("page_size", "must be 0 (default \(Self.defaultShadowDifferences)) to \(Self.maxShadowDifferences)")
    }
    let pageSize = request.pageSize == 0 ? Self.defaultShadowDifferences : Int(request.pageSize)
    var after: [UInt8]?
    if !request.pageToken.isEmpty {
      let (version, position) = try PageToken.decode(request.pageToken, .shadowDifferences) { reader -> (UInt64, UInt64)? in
        let version = try reader.readUInt64()
        let position = try reader.readUInt64()
        return version == 0 ? nil : (version, position)
      }
      guard request.shadowVersion == 0 || request.shadowVersion == version else {
        throw APIError.invalidArgument("page_token", "continues the report of shadow version \(version), not \(request.shadowVersion)")
      }
      after = ShadowReports.differenceKey(version, paymentSequence: UInt64.max - position)
    }
    let rules = self.payments.rules
    return try withStore {
      try self.store.withReadTransaction { txn in
        let running = try rules.head(.shadow, in: txn)?.version
        var version = request.shadowVersion
        if let after { version = ShadowReports.uint64(after, at: 1) }
        if version == 0 {
          // None named: the running one, else the last one that ran.
          version = running ?? 0
          if version == 0 {
            try txn.scan(.riskShadow, from: ShadowReports.totalsKey(0)) { key, _ in
              guard key.first == UInt8(ascii: "T") else { return false }
              version = ShadowReports.uint64(key, at: 1)
              return true
            }
          }
        }
        guard version != 0 else {
          throw GoogleRPCStatus(
            code: .notFound, message: "no shadow rule set has run; put one with PutRuleSet (shadow = true)", details: [])
        }
        guard let totals = try ShadowReports.totals(version, in: txn) else {
          throw APIError.notFound("shadow_version", String(version))
        }
        var report = Banklink_V1_ShadowReport()
        report.shadowVersion = version
        report.running = running == version
        report.since = totals.since.timestamp
        report.putBy = totals.putBy
        report.paymentsEvaluated = totals.evaluated
        report.changed = totals.changed
        report.ruleErrors = totals.ruleErrors
        report.differencesNotKept = totals.differencesNotKept
        for active in [RiskAction.allow, .review, .block] {
          for shadow in [RiskAction.allow, .review, .block] {
            let count = totals.outcomes[ShadowReports.Totals.index(active: active, shadow: shadow)]
            if count > 0 {
              report.outcomes.append(.with {
                $0.active = Banklink_V1_RuleAction(active)
                $0.shadow = Banklink_V1_RuleAction(shadow)
                $0.payments = count
              })
            }
          }
        }
        report.hitsByRule = try ShadowReports.hitsByRule(version, in: txn)
        let page = try ShadowReports.differences(version, after: after, limit: pageSize, in: txn)
        report.differences = page.differences.map { difference in
          .with {
            $0.paymentID = difference.paymentID
            $0.createTime = difference.createdAt.timestamp
            $0.activeOutcome = Banklink_V1_RuleAction(difference.activeOutcome)
            $0.activeRuleSetVersion = difference.activeVersion
            $0.shadow = Banklink_V1_RuleDecision(difference.shadow, paymentID: difference.paymentID)
          }
        }
        if let next = page.next {
          let position = ShadowReports.uint64(next, at: 9)
          report.nextPageToken = PageToken.encode(.shadowDifferences) {
            $0.write(version)
            $0.write(position)
          }
        }
        return report
      }
    }
  }

  /// A message checked as a rule set: fields a rule must have, then the expressions.
  static func compile(_ message: Banklink_V1_RuleSet) -> Result<CompiledRuleSet, RuleSetIssues> {
    var issues: [RuleSetIssue] = []
    for (index, rule) in message.rules.enumerated() where RiskAction(rule.action) == nil {
      issues.append(RuleSetIssue(ruleID: rule.id, field: "rules[\(index)].action", message: "must be ALLOW, REVIEW or BLOCK"))
    }
    for (index, rule) in message.rules.enumerated() where rule.severity != .unspecified && AlertSeverity(rule.severity) == nil {
      issues.append(RuleSetIssue(ruleID: rule.id, field: "rules[\(index)].severity", message: "is not a severity"))
    }
    var names: Set<String> = []
    for (index, list) in message.lists.enumerated() where !names.insert(list.name).inserted {
      issues.append(RuleSetIssue(ruleID: "", field: "lists[\(index)].name", message: "'\(LogText.prefix(list.name))' is given twice"))
    }
    switch CompiledRuleSet.compile(RiskRuleSet(message)) {
    case .success(let compiled): return issues.isEmpty ? .success(compiled) : .failure(RuleSetIssues(issues: issues))
    case .failure(let failure): return .failure(RuleSetIssues(issues: issues + failure.issues))
    }
  }

  func testRuleSet(request: Banklink_V1_TestRuleSetRequest, context: ServerContext) async throws -> Banklink_V1_TestRuleSetResponse {
    let candidate: CompiledRuleSet
    if request.hasRuleSet {
      switch Self.compile(request.ruleSet) {
      case .success(let value): candidate = value
      case .failure(let failure):
        throw badRequest(failure.issues.map { FieldViolation(field: "rule_set." + $0.field, description: $0.message) })
      }
    } else {
      guard let active = try withStore({ try self.store.withReadTransaction { try self.payments.rules.current(in: $0) } }) else {
        throw GoogleRPCStatus(code: .failedPrecondition, message: "no rule set is in force; give rule_set to test one", details: [])
      }
      candidate = active
    }
    switch request.subject {
    case .payment(let message):
      var instruction = try domainInstruction(message, prefix: "payment.")
      // As CreatePayment does: an empty date is the day the payment is made.
      if instruction.requestedExecutionDate.isEmpty { instruction.requestedExecutionDate = self.payments.now().isoDate }
      let violations = PaymentValidation.violations(of: instruction, today: self.payments.now().isoDate, prefix: "payment.")
      guard violations.isEmpty else { throw badRequest(violations) }
      let caller = try Caller.required()
      let decision = try withStore {
        try self.store.withReadTransaction { txn -> RiskDecision? in
          guard let bytes = try txn.get(Array(instruction.debtorAccountID.utf8), in: .accounts) else { return nil }
          let account = try Account(record: bytes)
          let ledger = try AccountCache.cachedBalance(account.id) { try txn.get($0, in: .balances) }?.balance.ledger.minorUnits ?? 0
          let available = try Reservations.available(account.id, reading: txn)
          let now = self.payments.now()
          let features = try RiskFeatures.snapshot(
            accountID: account.id, creditor: instruction.creditor, amount: instruction.amount.minorUnits, at: now,
            timeZone: self.payments.configuration.timeZone(of: account.id), ledger: ledger, available: available, in: txn)
          return candidate.decide(
            RiskVariables.values(
              instruction: instruction, creator: caller.principal.identity, account: account, features: features, at: now))
        }
      }
      guard let decision else { throw APIError.notFound("account", instruction.debtorAccountID) }
      var response = Banklink_V1_TestRuleSetResponse()
      response.decisions = [Banklink_V1_RuleDecision(decision, paymentID: "")]
      response.paymentsEvaluated = 1
      Self.count(decision.outcome, into: &response)
      return response
    case .backtest(let backtest):
      return try self.backtest(candidate, backtest)
    case nil:
      throw APIError.invalidArgument("subject", "give payment (a dry run) or backtest")
    }
  }

  private static func count(_ outcome: RiskAction, into response: inout Banklink_V1_TestRuleSetResponse) {
    switch outcome {
    case .allow: response.allowed += 1
    case .review: response.reviewed += 1
    case .block: response.blocked += 1
    }
  }

  /// Re-evaluates `candidate` over stored payments on the variables each was decided on when it
  /// was created (payment, account balances and features as they were then), and compares.
  private func backtest(_ candidate: CompiledRuleSet, _ request: Banklink_V1_Backtest) throws -> Banklink_V1_TestRuleSetResponse {
    guard request.maxPayments >= 0, Int(request.maxPayments) <= Self.maxBacktestPayments else {
      throw APIError.invalidArgument("backtest.max_payments", "must be 0 (default \(Self.defaultBacktestPayments)) to \(Self.maxBacktestPayments)")
    }
    let limit = request.maxPayments == 0 ? Self.defaultBacktestPayments : Int(request.maxPayments)
    var start: Instant?
    var end: Instant?
    if request.hasStartTime {
      guard let value = Instant(request.startTime) else { throw APIError.invalidArgument("backtest.start_time", "not a valid timestamp") }
      start = value
    }
    if request.hasEndTime {
      guard let value = Instant(request.endTime) else { throw APIError.invalidArgument("backtest.end_time", "not a valid timestamp") }
      end = value
    }
    var response = Banklink_V1_TestRuleSetResponse()
    let deadline = ContinuousClock.now.advanced(by: .milliseconds(Self.maxBacktestMilliseconds))
    var stopped: String?
    try withStore {
      try self.store.withReadTransaction { txn in
        var scanned = 0
        var accounts: [String: Account] = [:]
        try txn.scan(.payments) { _, value in
          guard response.paymentsEvaluated + response.notEvaluable < limit else { return false }
          scanned += 1
          if scanned > Self.maxBacktestScan {
            stopped = "read \(Self.maxBacktestScan) stored payments"
            return false
          }
          if scanned % 64 == 0, ContinuousClock.now > deadline || Task.isCancelled {
            stopped = "ran for \(Self.maxBacktestMilliseconds / 1000) s"
            return false
          }
          let payment = try Payment(record: value)
          if let start, payment.createdAt < start { return true }
          if let end, payment.createdAt >= end { return true }
          guard let stored = try txn.get(Array(payment.id.utf8), in: .riskDecisions) else {
            response.notEvaluable += 1
            return true
          }
          let (recorded, features) = try RiskDecision.decode(stored)
          let accountID = payment.instruction.debtorAccountID
          if accounts[accountID] == nil, let bytes = try txn.get(Array(accountID.utf8), in: .accounts) {
            accounts[accountID] = try Account(record: bytes)
          }
          guard let account = accounts[accountID] else {
            response.notEvaluable += 1
            return true
          }
          let decision = candidate.decide(
            RiskVariables.values(
              instruction: payment.instruction, creator: payment.creator, account: account, features: features, at: payment.createdAt))
          response.paymentsEvaluated += 1
          Self.count(decision.outcome, into: &response)
          for hit in decision.hits { response.hitsByRule[hit.ruleID, default: 0] += 1 }
          if decision.outcome != recorded.outcome {
            response.changed += 1
            if response.decisions.count < Self.maxBacktestDecisions {
              response.decisions.append(Banklink_V1_RuleDecision(decision, paymentID: payment.id))
            }
          }
          return true
        }
      }
    }
    // A partial backtest is not reported as if it were whole.
    if let stopped {
      throw GoogleRPCStatus(
        code: .resourceExhausted,
        message: "backtest stopped after it \(stopped), having evaluated \(response.paymentsEvaluated) payments: narrow start_time and end_time or lower max_payments",
        details: [])
    }
    return response
  }

  func evaluateExpression(
    request: Banklink_V1_EvaluateExpressionRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_EvaluateExpressionResponse {
    guard !request.expression.isEmpty else { throw APIError.invalidArgument("expression", "is required") }
    let declarations: Declarations
    let values: [Value]
    do {
      (declarations, values) = try JSONVariables.parse(request.variablesJson)
    } catch {
      throw APIError.invalidArgument("variables_json", error.description)
    }
    let program: Program
    do {
      program = try declarations.compile(request.expression)
    } catch {
      throw APIError.invalidArgument("expression", error.description)
    }
    var response = Banklink_V1_EvaluateExpressionResponse()
    response.type = program.type.description
    do {
      response.value = try program.evaluate(values).literal
    } catch {
      response.evaluationError = error.message
    }
    return response
  }
}
