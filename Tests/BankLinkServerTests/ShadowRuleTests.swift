import BankLinkClient
import BankLinkCore
import BankLinkJournal
import BankLinkProto
import BankLinkServer
import BankLinkStore
import BankLinkTestSupport
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import SwiftProtobuf
import Testing

/// Shadow rule sets (run beside the active set on live payments, recorded and compared, never
/// enforced) and the approval policy's `risk_outcomes`, over real mutual TLS.
@Suite("Shadow rule sets")
struct ShadowRuleTests {
  static let principals = RiskRuleTests.principals + [Principal(identity: "auditor", roles: [.auditor])]

  static func putShadow(_ server: TestServer, _ set: Banklink_V1_RuleSet, expected: UInt64 = 0) async throws -> Banklink_V1_PutRuleSetResponse {
    try await RiskRuleTests.admin(server) { try await $0.putRuleSet(.with { $0.ruleSet = set; $0.shadow = true; $0.expectedVersion = expected }) }
  }

  static func report(
    _ server: TestServer, as who: String = "admin", version: UInt64 = 0, pageSize: Int32 = 0, token: String = ""
  ) async throws -> Banklink_V1_ShadowReport {
    try await RiskRuleTests.admin(server, who) { admin in
      try await admin.getShadowReport(.with {
        $0.shadowVersion = version
        $0.pageSize = pageSize
        $0.pageToken = token
      })
    }
  }

  static func pairs(_ report: Banklink_V1_ShadowReport) -> [String: Int64] {
    Dictionary(uniqueKeysWithValues: report.outcomes.map { ("\($0.active)->\($0.shadow)", $0.payments) })
  }

  @Test("a shadow set runs beside the active one: every payment compared, nothing enforced, differences newest first, stopped on request")
  func shadowBesideActive() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let active = try await RiskRuleTests.put(
        server,
        RiskRuleTests.ruleSet(
          [RiskRuleTests.rule("sanctioned", "payment.creditor.country in lists.sanctioned", .block, severity: .critical)],
          lists: ["sanctioned": ["KP"]]))
      #expect(active.ruleSet.version == 1)
      let shadow = try await Self.putShadow(
        server,
        RiskRuleTests.ruleSet([
          RiskRuleTests.rule("very-large", "payment.amount > 500000", .block),
          RiskRuleTests.rule("crypto", "payment.purpose.contains('crypto')", .review),
        ]))
      #expect(shadow.ruleSet.version == 2, "active and shadow sets share one version counter")
      // Putting the active set again takes the next number, never the shadow's.
      #expect(try await RiskRuleTests.put(server, active.ruleSet).ruleSet.version == 3)
      let shown = try await RiskRuleTests.admin(server) { try await $0.getRuleSet(.with { $0.shadow = true }) }
      #expect(shown.version == 2 && shown.rules.map(\.id) == ["very-large", "crypto"])
      #expect(try await RiskRuleTests.admin(server) { try await $0.getRuleSet(.init()) }.version == 3)

      let plain = try await RiskRuleTests.create(server, "s-1", RiskRuleTests.instruction(1_000))
      let large = try await RiskRuleTests.create(server, "s-2", RiskRuleTests.instruction(600_000))
      let sanctioned = try await RiskRuleTests.create(server, "s-3", RiskRuleTests.instruction(1_000, country: "KP"))
      let crypto = try await RiskRuleTests.create(server, "s-4", RiskRuleTests.instruction(2_000, purpose: "buy crypto"))
      #expect(plain.status == .approved)
      #expect(large.status != .blocked, "the shadow block is recorded, not applied")
      #expect(large.riskDecision.outcome == .allow)
      #expect(sanctioned.status == .blocked, "the active set still decides")
      #expect(crypto.status == .approved)

      let report = try await Self.report(server)
      #expect(report.shadowVersion == 2 && report.running)
      #expect(report.putBy == "admin")
      #expect(report.paymentsEvaluated == 4)
      #expect(report.changed == 3)
      #expect(
        Self.pairs(report) == ["allow->allow": 1, "allow->block": 1, "block->allow": 1, "allow->review": 1], "\(report.outcomes)")
      #expect(report.hitsByRule == ["very-large": 1, "crypto": 1])
      #expect(report.differences.map(\.paymentID) == [crypto.paymentID, sanctioned.paymentID, large.paymentID], "newest first")
      let largeDifference = try #require(report.differences.last)
      #expect(largeDifference.activeOutcome == .allow && largeDifference.activeRuleSetVersion == 3)
      #expect(largeDifference.shadow.outcome == .block)
      #expect(largeDifference.shadow.hits.first?.because == ["payment.amount (600000) > 500000"])

      // Pages: two, then the last one; a token is refused for another version or list.
      let first = try await Self.report(server, pageSize: 2)
      #expect(first.differences.map(\.paymentID) == [crypto.paymentID, sanctioned.paymentID])
      #expect(!first.nextPageToken.isEmpty)
      let second = try await Self.report(server, pageSize: 2, token: first.nextPageToken)
      #expect(second.differences.map(\.paymentID) == [large.paymentID])
      #expect(second.nextPageToken.isEmpty)
      let otherVersion = await #expect(throws: RPCError.self) {
        _ = try await Self.report(server, version: 9, token: first.nextPageToken)
      }
      #expect(otherVersion?.code == .invalidArgument && otherVersion?.message.contains("page_token") == true)
      let badSize = await #expect(throws: RPCError.self) { _ = try await Self.report(server, pageSize: 51) }
      #expect(badSize?.code == .invalidArgument && badSize?.message.contains("page_size") == true)

      // Auditors read the report; a viewer may not, nor may an auditor stop the shadow set.
      #expect(try await Self.report(server, as: "auditor").paymentsEvaluated == 4)
      let viewer = await #expect(throws: RPCError.self) { _ = try await Self.report(server, as: "viewer") }
      #expect(viewer?.code == .permissionDenied)
      let auditorStop = await #expect(throws: RPCError.self) {
        _ = try await RiskRuleTests.admin(server, "auditor") { try await $0.clearShadowRuleSet(.init()) }
      }
      #expect(auditorStop?.code == .permissionDenied)

      // Stop: a stale expected version is refused; then the report stays, and stops counting.
      let stale = await #expect(throws: RPCError.self) {
        _ = try await RiskRuleTests.admin(server) { try await $0.clearShadowRuleSet(.with { $0.expectedVersion = 1 }) }
      }
      #expect(stale?.code == .aborted)
      let stopped = try await RiskRuleTests.admin(server) { try await $0.clearShadowRuleSet(.with { $0.expectedVersion = 2 }) }
      #expect(stopped.stoppedVersion == 2)
      #expect(try await RiskRuleTests.admin(server) { try await $0.clearShadowRuleSet(.init()) }.stoppedVersion == 0)
      _ = try await RiskRuleTests.create(server, "s-5", RiskRuleTests.instruction(700_000))
      let after = try await Self.report(server)
      #expect(after.shadowVersion == 2 && !after.running)
      #expect(after.paymentsEvaluated == 4)
      #expect(try await RiskRuleTests.admin(server) { try await $0.getRuleSet(.with { $0.shadow = true }) }.version == 0)

      let actions = try server.payments.auditEntries(limit: 1_000).map(\.action)
      #expect(actions.filter { $0 == "rules.shadow_changed" }.count == 1)
      #expect(actions.filter { $0 == "rules.shadow_cleared" }.count == 1)
    }
  }

  @Test("a shadow set with no active set: payments allowed as before, the shadow's would-be blocks counted; no report before any shadow ran")
  func shadowWithoutActive() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let none = await #expect(throws: RPCError.self) { _ = try await Self.report(server) }
      #expect(none?.code == .notFound)

      _ = try await Self.putShadow(
        server,
        RiskRuleTests.ruleSet([
          RiskRuleTests.rule("any", "payment.amount >= 1000", .block),
          RiskRuleTests.rule("new-creditor", "features.first_time_creditor", .review),
        ]))
      let payment = try await RiskRuleTests.create(server, "n-1", RiskRuleTests.instruction(5_000))
      #expect(payment.status == .approved)
      #expect(!payment.hasRiskDecision, "no active set: no decision on the payment")
      // The features still counted the payment: a second one to the creditor is not first-time.
      _ = try await RiskRuleTests.create(server, "n-2", RiskRuleTests.instruction(6_000))
      let report = try await Self.report(server)
      #expect(report.paymentsEvaluated == 2)
      #expect(Self.pairs(report) == ["allow->block": 2])
      #expect(report.hitsByRule == ["any": 2, "new-creditor": 1], "the first payment made the creditor known")
      #expect(report.differences.map(\.activeRuleSetVersion) == [0, 0])
      let unknown = await #expect(throws: RPCError.self) { _ = try await Self.report(server, version: 42) }
      #expect(unknown?.code == .notFound && unknown?.message.contains("shadow_version") == true)
    }
  }

  @Test("the approval policy's risk_outcomes: a rule for reviewed payments decides their requirement; BLOCK is refused by name")
  func policyRiskOutcomes() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let level = Banklink_V1_ApprovalLevel.with { $0.requiredApprovals = 1; $0.roles = [.approver] }
      func policy(_ outcomes: [Banklink_V1_RuleAction]) -> Banklink_V1_ApprovalPolicy {
        .with {
          $0.rules = [
            .with {
              $0.id = "reviewed"
              $0.match = .with { $0.riskOutcomes = outcomes }
              $0.requirement = .with {
                $0.levels = [level, level]
                $0.approvalWindowSeconds = 3_600
                $0.requireOtp = true
              }
            }
          ]
        }
      }
      let refused = await #expect(throws: RPCError.self) {
        _ = try await RiskRuleTests.admin(server) { try await $0.putApprovalPolicy(.with { $0.policy = policy([.block]) }) }
      }
      #expect(refused?.code == .invalidArgument)
      #expect(refused?.message.contains("policy.rules[0].match.risk_outcomes[0]") == true, "\(refused?.message ?? "")")
      _ = try await RiskRuleTests.admin(server) { try await $0.putApprovalPolicy(.with { $0.policy = policy([.review]) }) }
      let shown = try await RiskRuleTests.admin(server) { try await $0.getApprovalPolicy(.init()) }
      #expect(shown.rules.first?.match.riskOutcomes == [.review])
      _ = try await RiskRuleTests.put(server, RiskRuleTests.ruleSet([RiskRuleTests.rule("large", "payment.amount >= 50000", .review)]))

      let reviewed = try await RiskRuleTests.create(server, "p-1", RiskRuleTests.instruction(60_000))
      #expect(reviewed.status == .pendingApproval)
      let state = try #require(try server.payments.approvalState(reviewed.paymentID))
      #expect(state.requirement.levels.count == 2, "the policy's rule for reviewed payments, with no level added")
      #expect(state.ruleID == "reviewed")
      let allowed = try await RiskRuleTests.create(server, "p-2", RiskRuleTests.instruction(1_000))
      #expect(allowed.status == .approved, "an allowed payment does not match a rule for reviewed ones")
    }
  }
}
