import BankLinkClient
import BankLinkCore
import BankLinkJournal
import BankLinkPKI
import BankLinkProto
import BankLinkServer
import BankLinkTestSupport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import SwiftProtobuf
import Synchronization
import Testing
import X509

/// Principals managed at run time over real mutual TLS: `SetPrincipalRoles`, `ListPrincipals`,
/// the self-grant and last-admin rules, per-approver limits, and `request_id` on decisions.
@Suite("Principals at run time")
struct PrincipalTests {
  static let principals = [
    Principal(identity: "admin", roles: [.admin]),
    Principal(identity: "admin2", roles: [.admin]),
    Principal(identity: "audit", roles: [.auditor]),
    Principal(identity: "alice", roles: [.approver]),
    Principal(identity: "erp", roles: [.payer]),
  ]

  typealias Admin = Banklink_V1_AdminService.Client<HTTP2ClientTransport.Posix>

  static func admin<T: Sendable>(_ server: TestServer, _ who: String, _ body: (Admin) async throws -> T) async throws -> T {
    try await withBankLinkClient(server.client(try server.pki.client(commonName: who))) { try await body(Admin(wrapping: $0)) }
  }

  static func set(_ identity: String, _ roles: [Banklink_V1_Role], limits: [(String, Int64)] = []) -> Banklink_V1_SetPrincipalRolesRequest {
    .with {
      $0.identity = identity
      $0.roles = roles
      $0.approvalLimits = limits.map { code, minor in .with { $0.currencyCode = code; $0.minorUnits = minor } }
    }
  }

  @Test("a new identity gets roles at run time: in force on the next call of an open connection, listed, journaled, reloaded from the store")
  func grantAtRunTime() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let dave = try server.pki.client(commonName: "dave")
      try await withBankLinkClient(server.client(dave)) { client in
        let daveAdmin = Admin(wrapping: client)
        let unknown = await #expect(throws: RPCError.self) { _ = try await daveAdmin.whoAmI(.init()) }
        #expect(unknown?.code == .permissionDenied && unknown?.message.contains("not a known principal") == true)

        let set = try await Self.admin(server, "admin") {
          try await $0.setPrincipalRoles(Self.set("dave", [.viewer, .approver], limits: [("CNY", 10_000_000)]))
        }
        #expect(set.principal.roles == [.viewer, .approver])
        #expect(set.principal.approvalLimits.map(\.minorUnits) == [10_000_000])
        #expect(set.receipt.journalSequence > 0)

        // The same connection, the next call: dave is known now.
        let me = try await daveAdmin.whoAmI(.init())
        #expect(me.roles == [.viewer, .approver])
        _ = try await Banklink_V1_AccountService.Client(wrapping: client).listAccounts(.init())

        // Journaled with the receipt the reply carried.
        let entries = try server.payments.auditEntries(limit: 1_000).filter { $0.object == "principals/dave" }
        #expect(entries.map(\.action) == ["principal.roles_set"])
        #expect(entries.first?.sequence == set.receipt.journalSequence && entries.first?.principal == "admin")
        #expect(entries.first?.payload.contains(#""roles":"viewer,approver""#) == true, "\(entries.first?.payload ?? "")")

        // Listed, by an auditor, page by page.
        let listed = try await Self.admin(server, "audit") { admin in
          var all: [Banklink_V1_Principal] = []
          var token = ""
          repeat {
            let page = try await admin.listPrincipals(.with { $0.pageSize = 2; $0.pageToken = token })
            #expect(page.principals.count <= 2)
            all += page.principals
            token = page.nextPageToken
          } while !token.isEmpty
          return all
        }
        #expect(listed.map(\.identity) == ["admin", "admin2", "alice", "audit", "dave", "erp"])
        #expect(listed.first { $0.identity == "dave" }?.approvalLimits.first?.currencyCode == "CNY")

        // A daemon starting on this store puts dave in force before serving.
        let directory = PrincipalDirectory(PrincipalTable(Self.principals))
        #expect(directory.current.principal(for: "dave") == nil)
        try PrincipalRegistry(writer: server.payments.writer, directory: directory, now: WallClock.now).loadStored()
        #expect(directory.current.principal(for: "dave")?.roles == [.viewer, .approver])
        #expect(directory.current.principal(for: "dave")?.approvalLimits == [CurrencyCode("CNY")!: 10_000_000])
        #expect(directory.configured.principal(for: "dave") == nil)

        // No roles: known, but only WhoAmI and health.
        _ = try await Self.admin(server, "admin") { try await $0.setPrincipalRoles(Self.set("dave", [])) }
        #expect(try await daveAdmin.whoAmI(.init()).roles.isEmpty)
        let denied = await #expect(throws: RPCError.self) {
          _ = try await Banklink_V1_AccountService.Client(wrapping: client).listAccounts(.init())
        }
        #expect(denied?.code == .permissionDenied)
      }
    }
  }

  @Test("an admin cannot grant themselves a role or a looser limit, and the last admin stays; refusals are journaled")
  func selfGrantAndLastAdmin() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let selfGrant = await #expect(throws: RPCError.self) {
        _ = try await Self.admin(server, "admin") { try await $0.setPrincipalRoles(Self.set("admin", [.admin, .approver])) }
      }
      #expect(selfGrant?.code == .permissionDenied && selfGrant?.message.contains("grant themselves") == true, "\(String(describing: selfGrant))")

      // admin2 becomes an approver with a limit (granted by admin); then may tighten it, not loosen it.
      _ = try await Self.admin(server, "admin") {
        try await $0.setPrincipalRoles(Self.set("admin2", [.admin, .approver], limits: [("CNY", 100_000)]))
      }
      let looser = await #expect(throws: RPCError.self) {
        _ = try await Self.admin(server, "admin2") {
          try await $0.setPrincipalRoles(Self.set("admin2", [.admin, .approver], limits: [("CNY", 200_000)]))
        }
      }
      #expect(looser?.code == .permissionDenied && looser?.message.contains("loosen") == true)
      let unlimited = await #expect(throws: RPCError.self) {
        _ = try await Self.admin(server, "admin2") { try await $0.setPrincipalRoles(Self.set("admin2", [.admin, .approver])) }
      }
      #expect(unlimited?.code == .permissionDenied)
      let otherCurrency = await #expect(throws: RPCError.self) {
        _ = try await Self.admin(server, "admin2") {
          try await $0.setPrincipalRoles(Self.set("admin2", [.admin, .approver], limits: [("CNY", 100_000), ("USD", 1)]))
        }
      }
      #expect(otherCurrency?.code == .permissionDenied)
      let tighter = try await Self.admin(server, "admin2") {
        try await $0.setPrincipalRoles(Self.set("admin2", [.admin], limits: [("CNY", 50_000)]))
      }
      #expect(tighter.principal.roles == [.admin])

      // The two admins race to remove each other: exactly one wins, one admin is left.
      @Sendable func demote(_ other: String, by who: String) async -> Bool {
        do {
          _ = try await Self.admin(server, who) { try await $0.setPrincipalRoles(Self.set(other, [.viewer])) }
          return true
        } catch {
          return false
        }
      }
      async let first = demote("admin2", by: "admin")
      async let second = demote("admin", by: "admin2")
      let results = await [first, second]
      #expect(results.filter { $0 }.count == 1)
      let admins = server.server.principals.current.principals.filter { $0.holds(.admin) }.map(\.identity)
      #expect(admins.count == 1, "\(admins)")
      let survivor = try #require(admins.first)

      // The survivor cannot drop their own admin role (keeping their limits as they are): they
      // are the last.
      let limits = server.server.principals.current.principal(for: survivor)!.approvalLimits.map { ($0.key.code, $0.value) }
      let last = await #expect(throws: RPCError.self) {
        _ = try await Self.admin(server, survivor) { try await $0.setPrincipalRoles(Self.set(survivor, [], limits: limits)) }
      }
      #expect(last?.code == .failedPrecondition && last?.message.contains("last principal holding admin") == true, "\(String(describing: last))")

      let refused = try server.payments.auditEntries(limit: 1_000).filter { $0.action == "principal.change_refused" }
      #expect(refused.filter { $0.payload.contains(#""reason":"self_grant""#) }.count == 4)
      #expect(refused.contains { $0.payload.contains(#""reason":"last_admin""#) && $0.principal == survivor })
    }
  }

  @Test("bad input names the field; only admins set, only admins and auditors list")
  func badInputAndRoles() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let cases: [(Banklink_V1_SetPrincipalRolesRequest, String)] = [
        (Self.set("", [.viewer]), "identity"),
        (Self.set("名字", [.viewer]), "identity"),
        (Self.set("dave", [.unspecified]), "roles[0]"),
        (Self.set("dave", [.viewer, .viewer]), "roles[1]"),
        (Self.set("dave", [.approver], limits: [("cny", 100)]), "approval_limits[0].currency_code"),
        (Self.set("dave", [.approver], limits: [("CNY", 0)]), "approval_limits[0].minor_units"),
        (Self.set("dave", [.approver], limits: [("CNY", 100), ("CNY", 200)]), "approval_limits[1].currency_code"),
        (Self.set("dave", [.approver], limits: (0...Limits.maxApprovalLimitsPerPrincipal).map { ("C\(String(format: "%02d", $0))", 1) }),
         "approval_limits"),
      ]
      for (request, field) in cases {
        let error = await #expect(throws: RPCError.self) {
          _ = try await Self.admin(server, "admin") { try await $0.setPrincipalRoles(request) }
        }
        #expect(error?.code == .invalidArgument && error?.message.hasPrefix(field + ":") == true, "\(field): \(String(describing: error))")
      }
      #expect(server.server.principals.current.principal(for: "dave") == nil, "nothing half-written")

      let auditorSets = await #expect(throws: RPCError.self) {
        _ = try await Self.admin(server, "audit") { try await $0.setPrincipalRoles(Self.set("audit", [.admin])) }
      }
      #expect(auditorSets?.code == .permissionDenied)
      let approverLists = await #expect(throws: RPCError.self) {
        _ = try await Self.admin(server, "alice") { try await $0.listPrincipals(.init()) }
      }
      #expect(approverLists?.code == .permissionDenied)
      let badToken = await #expect(throws: RPCError.self) {
        _ = try await Self.admin(server, "audit") { try await $0.listPrincipals(.with { $0.pageToken = "bm9wZQ==" }) }
      }
      #expect(badToken?.code == .invalidArgument && badToken?.message.hasPrefix("page_token") == true)
    }
  }

  @Test("a per-approver limit: above it, or in a currency it does not list, the approver may not approve nor sees the payment")
  func approverLimits() async throws {
    let policy = Banklink_V1_ApprovalPolicy.with {
      $0.rules = [
        .with {
          $0.id = "any"
          $0.match = .with { $0.minAmountMinor = 1 }
          $0.requirement = .with {
            $0.levels = [.with { $0.requiredApprovals = 1; $0.roles = [.approver] }]
            $0.approvalWindowSeconds = 3_600
            $0.requireOtp = true
          }
        }
      ]
    }
    try await ApprovalTests.withApprovals(policy: policy) { server, people in
      let payment = try await ApprovalTests.create(server, people["erp"]!, key: "limited", amount: 500_000)
      #expect(payment.status == .pendingApproval)
      let alice = people["alice"]!
      func setAlice(_ limits: [(String, Int64)]) async throws {
        _ = try await withBankLinkClient(server.client(people["admin"]!.files)) {
          try await Admin(wrapping: $0).setPrincipalRoles(Self.set("alice", [.approver], limits: limits))
        }
      }
      func queue() async throws -> [String] {
        try await ApprovalTests.payments(server, alice) { try await $0.listPendingApprovals(.init()).payments.map(\.paymentID) }
      }
      #expect(try await queue() == [payment.paymentID])

      try await setAlice([("CNY", 400_000)])
      #expect(try await queue().isEmpty)
      let over = await #expect(throws: RPCError.self) { _ = try await ApprovalTests.approve(server, alice, payment.paymentID) }
      #expect(over?.code == .permissionDenied && over?.message.contains("your approval limit is 4000.00 CNY") == true, "\(String(describing: over))")

      try await setAlice([("USD", 100_000_000)])
      let otherCurrency = await #expect(throws: RPCError.self) { _ = try await ApprovalTests.approve(server, alice, payment.paymentID) }
      #expect(otherCurrency?.code == .permissionDenied && otherCurrency?.message.contains("do not include CNY") == true)

      try await setAlice([("CNY", 500_000)])
      #expect(try await queue() == [payment.paymentID])
      let approved = try await ApprovalTests.approve(server, alice, payment.paymentID)
      #expect(approved.payment.status == .approved)
    }
  }

  @Test("request_id: a retried approval or rejection gets the original receipt; the same id on another payment is refused")
  func decisionRequestIDs() async throws {
    try await ApprovalTests.withApprovals(policy: ApprovalTests.twoLevels(secondLevel: ["carol"])) { server, people in
      let first = try await ApprovalTests.create(server, people["erp"]!, key: "retry-1", amount: 500_000)
      let second = try await ApprovalTests.create(server, people["erp"]!, key: "retry-2", amount: 500_000)
      let alice = people["alice"]!
      let code = TOTP.code(secret: alice.secret, step: TOTP.step(at: WallClock.now()))
      func approve(_ payment: Banklink_V1_Payment, requestID: String) async throws -> Banklink_V1_ApprovePaymentResponse {
        try await ApprovalTests.payments(server, alice) { payments in
          try await payments.approvePayment(.with {
            $0.paymentID = payment.paymentID
            $0.signature = Data(try CertificateSignatures.sign(Array(payment.approvalDigest), with: alice.key))
            $0.otpCode = code
            $0.requestID = requestID
          })
        }
      }
      let original = try await approve(first, requestID: "approve-1")
      let retried = try await approve(first, requestID: "approve-1")
      #expect(retried.receipt == original.receipt)
      #expect(retried.payment.approvals.map(\.approver) == ["alice"])
      let reused = await #expect(throws: RPCError.self) { _ = try await approve(second, requestID: "approve-1") }
      #expect(reused?.code == .alreadyExists && reused?.message.contains(first.paymentID) == true, "\(String(describing: reused))")
      // Without the id, a second attempt is one: refused as already approved.
      let again = await #expect(throws: RPCError.self) { _ = try await approve(first, requestID: "") }
      #expect(again?.code == .failedPrecondition)

      let carol = people["carol"]!
      func reject(_ payment: Banklink_V1_Payment) async throws -> Banklink_V1_RejectPaymentResponse {
        try await ApprovalTests.payments(server, carol) {
          try await $0.rejectPayment(.with { $0.paymentID = payment.paymentID; $0.reason = "duplicate invoice"; $0.requestID = "reject-1" })
        }
      }
      let rejected = try await reject(first)
      #expect(rejected.payment.status == .rejected)
      let rejectedAgain = try await reject(first)
      #expect(rejectedAgain.receipt == rejected.receipt && rejectedAgain.payment.status == .rejected)
      let entries = try server.payments.auditEntries(limit: 1_000).filter { $0.object == first.paymentID }.map(\.action)
      #expect(entries == ["payment.created", "payment.approval", "payment.approval_refused", "payment.rejected"])
    }
  }
}
