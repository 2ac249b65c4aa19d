import BankLinkClient
import BankLinkCore
import BankLinkJournal
import BankLinkProto
import BankLinkRules
import BankLinkServer
import BankLinkStore
import BankLinkTestSupport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import SwiftProtobuf
import Testing

/// Risk rules on every payment, over real mutual TLS: rule sets put and checked, decisions
/// (allow, review, block, fail closed) with their explanations, features kept in LMDB, alerts,
/// dry runs, backtests and the expression playground.
@Suite("Risk rules")
struct RiskRuleTests {
  static let principals = [
    Principal(identity: "admin", roles: [.admin]),
    Principal(identity: "viewer", roles: [.viewer]),
    Principal(identity: "erp", roles: [.payer]),
  ]

  typealias Admin = Banklink_V1_AdminService.Client<HTTP2ClientTransport.Posix>
  typealias Payments = Banklink_V1_PaymentService.Client<HTTP2ClientTransport.Posix>

  static func admin<T: Sendable>(_ server: TestServer, _ who: String = "admin", _ body: (Admin) async throws -> T) async throws -> T {
    try await withBankLinkClient(server.client(try server.pki.client(commonName: who))) { try await body(Admin(wrapping: $0)) }
  }

  static func payments<T: Sendable>(_ server: TestServer, _ body: (Payments) async throws -> T) async throws -> T {
    try await withBankLinkClient(server.client(try server.pki.client(commonName: "erp"))) { try await body(Payments(wrapping: $0)) }
  }

  static func rule(
    _ id: String, _ expression: String, _ action: Banklink_V1_RuleAction, severity: Banklink_V1_Severity = .warning,
    shadow: Bool = false, score: Int32 = 10
  ) -> Banklink_V1_Rule {
    .with {
      $0.id = id
      $0.expression = expression
      $0.action = action
      $0.severity = severity
      $0.shadow = shadow
      $0.score = score
      $0.description_p = "rule \(id)"
    }
  }

  static func ruleSet(_ rules: [Banklink_V1_Rule], lists: [String: [String]] = [:]) -> Banklink_V1_RuleSet {
    .with {
      $0.rules = rules
      $0.lists = lists.map { name, values in .with { $0.name = name; $0.values = values } }
    }
  }

  static func put(_ server: TestServer, _ set: Banklink_V1_RuleSet) async throws -> Banklink_V1_PutRuleSetResponse {
    try await Self.admin(server) { try await $0.putRuleSet(.with { $0.ruleSet = set }) }
  }

  static func instruction(
    _ minorUnits: Int64, country: String = "CN", account: String = "3201 5501 0400 0087 761", purpose: String = "Freight INV-77"
  ) -> Banklink_V1_PaymentInstruction {
    .with {
      $0.debtorAccountID = "icbc-cny-001"
      $0.amount = .with { $0.minorUnits = minorUnits; $0.currencyCode = "CNY" }
      $0.creditor = .with {
        $0.name = "Jiangsu Hengrui Logistics Co., Ltd."
        $0.accountNumber = account
        $0.bic = "PCBCCNBJ"
        $0.country = country
      }
      $0.purpose = purpose
      $0.type = .domestic
    }
  }

  static func create(_ server: TestServer, _ key: String, _ instruction: Banklink_V1_PaymentInstruction) async throws -> Banklink_V1_Payment {
    try await Self.payments(server) { try await $0.createPayment(.with { $0.idempotencyKey = key; $0.instruction = instruction }) }.payment
  }

  static func alerts(_ server: TestServer) throws -> [Alert] {
    try server.payments.writer.store.withReadTransaction {
      try AlertLog.page(after: 0, limit: 1_000, scanLimit: 10_000, filter: AlertFilter(), in: $0).alerts
    }
  }

  @Test("the example rule set of docs/ compiles against the declared variables")
  func exampleRuleSet() throws {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
      .appendingPathComponent("docs/rules.example.json").path
    let json = try String(contentsOfFile: path, encoding: .utf8)
    switch CompiledRuleSet.parse(json: json) {
    case .success(let compiled):
      #expect(compiled.ruleSet.rules.count >= 8)
      #expect(compiled.ruleSet.rules.contains { $0.shadow })
      #expect(compiled.ruleSet.lists["sanctioned_countries"]?.contains("KP") == true)
    case .failure(let failure):
      Issue.record("the example does not compile: \(failure.issues)")
    }
  }

  @Test("a blocking rule: BLOCKED with its explanation, nothing reserved or sent, a critical alert, journaled, shown by GetPayment")
  func block() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let put = try await Self.put(
        server,
        Self.ruleSet(
          [Self.rule("sanctioned", "payment.creditor.country in lists.sanctioned", .block, severity: .critical, score: 100)],
          lists: ["sanctioned": ["KP", "IR"]]))
      #expect(put.ruleSet.version == 1)
      let availableBefore = try #require(try server.payments.available(accountID: "icbc-cny-001"))

      let blocked = try await Self.create(server, "b-1", Self.instruction(10_000, country: "KP"))
      #expect(blocked.status == .blocked)
      #expect(blocked.statusReason.contains("sanctioned"), "\(blocked.statusReason)")
      #expect(blocked.riskDecision.outcome == .block)
      #expect(blocked.riskDecision.score == 100)
      let hit = try #require(blocked.riskDecision.hits.first)
      #expect(hit.ruleID == "sanctioned")
      #expect(hit.because == [#"payment.creditor.country ("KP") in lists.sanctioned"#])
      #expect(try server.payments.available(accountID: "icbc-cny-001") == availableBefore, "a blocked payment reserves nothing")
      #expect(try server.payments.outbox(limit: 10).isEmpty)
      #expect(try await server.submitter.submitPending() == 0)

      // GetPayment shows the decision; a replay of the create answers the same blocked payment.
      let fetched = try await Self.payments(server) { try await $0.getPayment(.with { $0.paymentID = blocked.paymentID }) }
      #expect(fetched.riskDecision == blocked.riskDecision)
      let replay = try await Self.create(server, "b-1", Self.instruction(10_000, country: "KP"))
      #expect(replay.paymentID == blocked.paymentID && replay.status == .blocked)

      let alert = try #require(try Self.alerts(server).first { $0.paymentID == blocked.paymentID })
      #expect(alert.kind == .riskHit && alert.severity == .critical)
      #expect(alert.message.contains("blocked"))
      let created = try server.payments.auditEntries(limit: 1_000).first { $0.object == blocked.paymentID && $0.action == "payment.created" }
      #expect(created?.payload.contains(#""risk_outcome":"block""#) == true, "\(String(describing: created?.payload))")
      #expect(created?.payload.contains(#""risk_hits":"sanctioned""#) == true)

      // Another country passes.
      let allowed = try await Self.create(server, "b-2", Self.instruction(10_000, country: "CN"))
      #expect(allowed.status == .approved)
      #expect(allowed.riskDecision.outcome == .allow && allowed.riskDecision.hits.isEmpty)
    }
  }

  @Test("review adds an approval level under the threshold; a rule failing at run time reviews (fail closed); shadow rules never act")
  func reviewFailClosedShadow() async throws {
    try await withTestServer(principals: Self.principals) { server in
      _ = try await Self.put(
        server,
        Self.ruleSet([
          Self.rule("large", "payment.amount >= 50000", .review),
          Self.rule("broken", "payment.purpose == 'boom' && 1 / (payment.amount - payment.amount) > 0", .allow),
          Self.rule("shadow-block", "payment.amount > 0", .block, shadow: true),
        ]))
      let reviewed = try await Self.create(server, "r-1", Self.instruction(60_000))
      #expect(reviewed.status == .pendingApproval, "under the 1,000,000 threshold, but the rules asked for review")
      #expect(reviewed.riskDecision.outcome == .review)
      #expect(reviewed.riskDecision.hits.map(\.ruleID) == ["large", "shadow-block"])
      #expect(reviewed.riskDecision.hits.first?.because == ["payment.amount (60000) >= 50000"])
      #expect(reviewed.riskDecision.hits.last?.shadow == true)
      let approval = try #require(try server.payments.approvalState(reviewed.paymentID))
      #expect(approval.requirement.levels.count == 1)
      #expect(try Self.alerts(server).contains { $0.paymentID == reviewed.paymentID && $0.kind == .riskHit })

      let failing = try await Self.create(server, "r-2", Self.instruction(1_000, purpose: "boom"))
      #expect(failing.status == .pendingApproval)
      let error = try #require(failing.riskDecision.hits.first { $0.ruleID == "broken" })
      #expect(error.action == .review && error.error.contains("division by zero"))

      let small = try await Self.create(server, "r-3", Self.instruction(1_000))
      #expect(small.status == .approved, "the shadow block is recorded, not applied")
      #expect(small.riskDecision.outcome == .allow)
      #expect(small.riskDecision.hits.map(\.ruleID) == ["shadow-block"])
    }
  }

  @Test("a batch's items share one budget of rule work: past it the batch is refused whole (RESOURCE_EXHAUSTED), nothing created")
  func batchRuleBudget() async throws {
    try await withTestServer(principals: Self.principals) { server in
      // A rule that runs into its own evaluation budget (a review, fail closed) on every item.
      let names = (0..<1_000).map { "name-\($0)" }
      _ = try await Self.put(
        server,
        Self.ruleSet([Self.rule("heavy", "lists.big.exists(a, lists.big.exists(b, a == b + 'x'))", .review)], lists: ["big": names]))
      let items = (0..<(Limits.maxRiskStepsPerBatch / RuleLimits.maxEvaluationSteps + 5)).map { _ in Self.instruction(1_000) }
      let refused = await #expect(throws: RPCError.self) {
        try await Self.payments(server) { try await $0.createPaymentBatch(.with { $0.idempotencyKey = "heavy"; $0.items = items }) }
      }
      #expect(refused?.code == .resourceExhausted && refused?.message.contains("smaller batches") == true, "\(String(describing: refused))")
      #expect(try refused?.unpackGoogleRPCStatus()?.details.compactMap(\.errorInfo).first?.reason == "RISK_WORK_EXCEEDED")
      let listed = try await Self.payments(server) { try await $0.listPayments(.with { $0.pageSize = 100 }) }
      #expect(listed.payments.isEmpty)
      // The same rule on one payment: decided (review, the rule stopped by its own budget).
      let one = try await Self.create(server, "one", Self.instruction(1_000))
      #expect(one.riskDecision.outcome == .review && one.riskDecision.hits.first?.error.contains("budget") == true)
      // The same heavy rule in a shadow set never refuses a batch: the items past its budget are
      // left out of its report.
      _ = try await Self.put(
        server,
        Self.ruleSet(
          [Self.rule("heavy", "lists.big.exists(a, lists.big.exists(b, a == b + 'x'))", .review, shadow: true)], lists: ["big": names]))
      let created = try await Self.payments(server) {
        try await $0.createPaymentBatch(.with { $0.idempotencyKey = "heavy-shadow"; $0.items = items })
      }
      #expect(created.payments.count == items.count)
    }
  }

  @Test("review on a policy already at five levels asks the last level for one more approver; a non-bool dyn rule reviews")
  func reviewAtMostLevels() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let level = Banklink_V1_ApprovalLevel.with { $0.requiredApprovals = 1; $0.roles = [.approver] }
      _ = try await Self.admin(server) { admin in
        try await admin.putApprovalPolicy(.with {
          $0.policy = .with {
            $0.rules = [
              .with {
                $0.id = "five"
                $0.match = .with { $0.minAmountMinor = 1 }
                $0.requirement = .with {
                  $0.levels = Array(repeating: level, count: Limits.maxApprovalLevels)
                  $0.approvalWindowSeconds = 3_600
                  $0.requireOtp = false
                }
              }
            ]
          }
        })
      }
      _ = try await Self.put(
        server, Self.ruleSet([Self.rule("large", "payment.amount >= 50000", .review), Self.rule("odd", "dyn(payment.amount)", .allow)]))
      let reviewed = try await Self.create(server, "l-1", Self.instruction(60_000))
      #expect(reviewed.status == .pendingApproval)
      // The approval record reads back (it used to get a sixth level it could not hold).
      let state = try #require(try server.payments.approvalState(reviewed.paymentID))
      #expect(state.requirement.levels.count == Limits.maxApprovalLevels)
      #expect(state.requirement.levels.last?.required == 2)
      let odd = try #require(reviewed.riskDecision.hits.first { $0.ruleID == "odd" })
      #expect(odd.action == .review && odd.error.contains("not bool"), "\(odd)")
    }
  }

  @Test("sanctions and blocklists see through the client's country and account punctuation")
  func normalisation() async throws {
    try await withTestServer(principals: Self.principals) { server in
      _ = try await Self.put(
        server,
        Self.ruleSet(
          [
            Self.rule("country", "payment.creditor.bic_country in lists.sanctioned", .block),
            Self.rule("blocked", "payment.creditor.account in lists.blocked", .block),
          ], lists: ["sanctioned": ["KP"], "blocked": ["62170000ABC123"]]))
      var viaBank = Self.instruction(10_000, country: "DE")
      viaBank.creditor.bic = "KKBCKPPY"
      #expect(try await Self.create(server, "n-1", viaBank).status == .blocked)
      let dashed = try await Self.create(server, "n-2", Self.instruction(10_000, account: "6217-0000 abc-123"))
      #expect(dashed.status == .blocked, "\(dashed.statusReason)")
      #expect(try await Self.create(server, "n-3", Self.instruction(10_000)).status == .approved)
    }
  }

  @Test("features are kept per account in LMDB: windows, first-time creditor, duplicates, amount baseline")
  func features() async throws {
    try await withTestServer(principals: Self.principals) { server in
      _ = try await Self.put(
        server,
        Self.ruleSet([
          Self.rule("dup", "features.duplicates_24h >= 2 && features.count_1h >= 2 && !features.first_time_creditor", .review),
          Self.rule("new", "features.first_time_creditor", .allow, shadow: true),
          Self.rule("habit", "features.history_count >= 5 && features.amount_zscore > 4.0", .review),
        ]))
      let first = try await Self.create(server, "f-0", Self.instruction(1_000))
      #expect(first.riskDecision.hits.map(\.ruleID) == ["new"])
      let second = try await Self.create(server, "f-1", Self.instruction(1_000))
      #expect(second.riskDecision.hits.isEmpty, "one earlier duplicate is not two")
      let third = try await Self.create(server, "f-2", Self.instruction(1_000))
      #expect(third.riskDecision.outcome == .review)
      #expect(third.riskDecision.hits.first?.because.contains("features.duplicates_24h (2) >= 2") == true, "\(third.riskDecision)")
      // A different creditor is new; similar amounts build the baseline.
      for index in 0..<5 {
        _ = try await Self.create(server, "f-b\(index)", Self.instruction(1_000 + Int64(index) * 10, account: "6222 0000 1111 \(index)"))
      }
      let odd = try await Self.create(server, "f-odd", Self.instruction(900_000, account: "6222 0000 2222 1"))
      let habit = try #require(odd.riskDecision.hits.first { $0.ruleID == "habit" }, "\(odd.riskDecision)")
      #expect(habit.because.contains { $0.hasPrefix("features.amount_zscore (") && $0.hasSuffix(") > 4.0") }, "\(habit.because)")
    }
  }

  @Test("rule sets are checked when put: each problem names its field, line and column; admin only; versions conflict")
  func putValidation() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let bad = Self.ruleSet([
        Self.rule("a", "payment.amount > ", .review),
        Self.rule("b", "payment.nope == 1", .review),
        Self.rule("c", "payment.amount + 1", .review),
        Self.rule("a", "true", .review),
        Self.rule("e", "lists.missing.size() > 0", .block),
        .with { $0.id = "f"; $0.expression = "true" },
        Self.rule("g", "payment.purpose.matches('(a')", .review),
      ])
      let validation = try await Self.admin(server) { try await $0.validateRuleSet(.with { $0.ruleSet = bad }) }
      #expect(!validation.valid)
      let byField = Dictionary(validation.issues.map { ($0.field, $0.message) }, uniquingKeysWith: { a, _ in a })
      #expect(byField["rules[0].expression"]?.contains("1:18: syntax error") == true, "\(byField)")
      #expect(byField["rules[1].expression"]?.contains("undefined field 'nope'") == true)
      #expect(byField["rules[2].expression"]?.contains("must be a bool expression") == true)
      #expect(byField["rules[3].id"]?.contains("used by an earlier rule") == true)
      #expect(byField["rules[4].expression"]?.contains("undefined field 'missing'") == true)
      #expect(byField["rules[5].action"] != nil)
      #expect(byField["rules[6].expression"]?.contains("invalid regex") == true)

      let refused = await #expect(throws: RPCError.self) { _ = try await Self.put(server, bad) }
      #expect(refused?.code == .invalidArgument)
      #expect(refused?.message.contains("rule_set.rules[0].expression") == true)

      let viewer = await #expect(throws: RPCError.self) {
        _ = try await Self.admin(server, "viewer") { try await $0.putRuleSet(.with { $0.ruleSet = Self.ruleSet([]) }) }
      }
      #expect(viewer?.code == .permissionDenied)

      let good = Self.ruleSet([Self.rule("ok", "payment.amount > 0", .allow)])
      #expect(try await Self.put(server, good).ruleSet.version == 1)
      let conflict = await #expect(throws: RPCError.self) {
        _ = try await Self.admin(server) { try await $0.putRuleSet(.with { $0.ruleSet = good; $0.expectedVersion = 7 }) }
      }
      #expect(conflict?.code == .aborted)
      let shown = try await Self.admin(server) { try await $0.getRuleSet(.init()) }
      #expect(shown.version == 1)
      #expect(shown.rules.map(\.id) == ["ok"])
      #expect(shown.updatedBy == "admin")
      let changes = try server.payments.auditEntries(limit: 1_000).filter { $0.action == "rules.changed" }
      #expect(changes.count == 1 && changes[0].payload.contains(#""version":"1""#), "\(changes.map(\.payload))")

      // Oversized: more rules than the limit.
      let many = Self.ruleSet((0...RiskLimits.maxRules).map { Self.rule("r\($0)", "true", .allow) })
      let tooMany = try await Self.admin(server) { try await $0.validateRuleSet(.with { $0.ruleSet = many }) }
      #expect(tooMany.issues.contains { $0.field == "rules" })
    }
  }

  @Test("a dry run on one instruction, and a backtest over recorded decisions that counts hits and changes")
  func dryRunAndBacktest() async throws {
    try await withTestServer(principals: Self.principals) { server in
      _ = try await Self.put(server, Self.ruleSet([Self.rule("huge", "payment.amount >= 5000000", .review)]))
      for (index, amount) in [1_000, 2_000, 300_000, 6_000_000].enumerated() {
        _ = try await Self.create(server, "bt-\(index)", Self.instruction(Int64(amount)))
      }
      let stricter = Self.ruleSet([Self.rule("big", "payment.amount >= 200000", .block), Self.rule("huge", "payment.amount >= 5000000", .review)])
      let dry = try await Self.admin(server) { try await $0.testRuleSet(.with { $0.ruleSet = stricter; $0.payment = Self.instruction(250_000) }) }
      #expect(dry.decisions.first?.outcome == .block)
      #expect(dry.blocked == 1 && dry.paymentsEvaluated == 1)

      let backtest = try await Self.admin(server) {
        try await $0.testRuleSet(.with { $0.ruleSet = stricter; $0.backtest = .with { $0.maxPayments = 100 } })
      }
      #expect(backtest.paymentsEvaluated == 4)
      #expect(backtest.blocked == 2 && backtest.allowed == 2)
      #expect(backtest.hitsByRule == ["big": 2, "huge": 1])
      #expect(backtest.changed == 2, "300,000 allowed → block, 6,000,000 review → block")
      #expect(Set(backtest.decisions.map(\.outcome)) == [.block])

      let badLimit = await #expect(throws: RPCError.self) {
        _ = try await Self.admin(server) { try await $0.testRuleSet(.with { $0.backtest = .with { $0.maxPayments = 1_000_000 } }) }
      }
      #expect(badLimit?.code == .invalidArgument && badLimit?.message.contains("backtest.max_payments") == true)
    }
  }

  @Test("the playground: values, run-time errors, refusals with line and column, bad JSON")
  func evaluateExpression() async throws {
    try await withTestServer(principals: Self.principals) { server in
      try await Self.admin(server) { admin in
        let value = try await admin.evaluateExpression(.with {
          $0.expression = "amount > 100 && country in ['KP', 'IR'] ? [amount, rate] : []"
          $0.variablesJson = #"{"amount": 150, "country": "KP", "rate": 0.5}"#
        })
        #expect(value.value == "[150, 0.5]" && value.type == "list(dyn)")
        let failed = try await admin.evaluateExpression(.with { $0.expression = "amount / 0 > 1"; $0.variablesJson = #"{"amount": 1}"# })
        #expect(failed.evaluationError == "division by zero" && failed.type == "bool")
        let refused = await #expect(throws: RPCError.self) {
          _ = try await admin.evaluateExpression(.with { $0.expression = "amount +\n  'a'"; $0.variablesJson = #"{"amount": 1}"# })
        }
        #expect(refused?.code == .invalidArgument && refused?.message.contains("expression: 1:1: no matching overload") == true, "\(String(describing: refused))")
        let badJSON = await #expect(throws: RPCError.self) {
          _ = try await admin.evaluateExpression(.with { $0.expression = "true"; $0.variablesJson = #"{"a": }"# })
        }
        #expect(badJSON?.code == .invalidArgument && badJSON?.message.hasPrefix("variables_json") == true)
      }
    }
  }
}
