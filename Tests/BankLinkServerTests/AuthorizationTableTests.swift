import BankLinkCore
import BankLinkPKI
import BankLinkProto
import BankLinkServer
import GRPCCore
import Foundation
import Testing
import X509

@Suite("Authorization table")
struct AuthorizationTableTests {
  /// Every method of every service in the contract, from the generated descriptors.
  static let contract: [MethodDescriptor] =
    Banklink_V1_AccountService.Method.descriptors
    + Banklink_V1_PaymentService.Method.descriptors
    + Banklink_V1_MonitoringService.Method.descriptors
    + Banklink_V1_ReconciliationService.Method.descriptors
    + Banklink_V1_AdminService.Method.descriptors
    + Grpc_Health_V1_Health.Method.descriptors
    + Grpc_Reflection_V1_ServerReflection.Method.descriptors
    + Grpc_Reflection_V1alpha_ServerReflection.Method.descriptors

  @Test("every RPC of the contract has an entry, and the table lists nothing else")
  func coversContract() {
    let table = AuthorizationTable.standard
    for method in Self.contract {
      #expect(table.access(for: method) != nil, "\(method) is missing from the authorization table")
    }
    #expect(Set(table.entries.keys) == Set(Self.contract))
    #expect(Self.contract.count == 45)
  }

  @Test("only admins change rules, policy and principals")
  func adminOnly() {
    let table = AuthorizationTable.standard
    for method in [
      Banklink_V1_AdminService.Method.PutRuleSet.descriptor,
      Banklink_V1_AdminService.Method.EvaluateExpression.descriptor,
      Banklink_V1_AdminService.Method.ClearShadowRuleSet.descriptor,
      Banklink_V1_AdminService.Method.PutApprovalPolicy.descriptor,
      Banklink_V1_AdminService.Method.SetPrincipalRoles.descriptor,
      Banklink_V1_AdminService.Method.RevokeCertificate.descriptor,
      Banklink_V1_AdminService.Method.ReloadConfiguration.descriptor,
      Banklink_V1_AdminService.Method.EnrollOtp.descriptor,
    ] {
      #expect(table.access(for: method) == .roles([.admin]), "\(method)")
    }
  }

  static func peer(_ identity: String) throws -> PeerIdentity {
    let ca = try CertificateAuthority.generate(commonName: "Unit CA")
    return try #require(PeerIdentity(certificate: try ca.issue(.client, commonName: identity).certificate))
  }

  @Test("decisions: unauthenticated, unlisted method, unknown identity, wrong role, allowed")
  func decisions() throws {
    let table = AuthorizationTable.standard
    let principals = PrincipalTable([Principal(identity: "erp", roles: [.payer])])
    let create = Banklink_V1_PaymentService.Method.CreatePayment.descriptor
    let approve = Banklink_V1_PaymentService.Method.ApprovePayment.descriptor

    guard case .denied(let noPeer) = table.decide(method: create, peer: nil, principals: principals) else {
      Issue.record("a call without a peer identity was allowed")
      return
    }
    #expect(noPeer.code == .unauthenticated)

    let unlisted = MethodDescriptor(fullyQualifiedService: "banklink.v1.AdminService", method: "DropEverything")
    guard case .denied(let unlistedError) = table.decide(method: unlisted, peer: try Self.peer("erp"), principals: principals)
    else {
      Issue.record("a method outside the table was allowed")
      return
    }
    #expect(unlistedError.code == .permissionDenied)

    guard case .denied(let unknown) = table.decide(method: create, peer: try Self.peer("eve"), principals: principals) else {
      Issue.record("an unknown identity was allowed")
      return
    }
    #expect(unknown.code == .permissionDenied)

    guard case .denied(let wrongRole) = table.decide(method: approve, peer: try Self.peer("erp"), principals: principals) else {
      Issue.record("a payer was allowed to approve")
      return
    }
    #expect(wrongRole.code == .permissionDenied)
    #expect(wrongRole.message.contains("requires role approver"))

    guard case .allowed(let caller) = table.decide(method: create, peer: try Self.peer("erp"), principals: principals) else {
      Issue.record("a payer was refused CreatePayment")
      return
    }
    #expect(caller.principal.identity == "erp")
  }
}

@Suite("docs/authorization.md")
struct AuthorizationDocumentTests {
  @Test("the operator documentation lists exactly the table's methods and roles")
  func documentMatchesTable() throws {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent()
    let text = try String(contentsOf: root.appendingPathComponent("docs/authorization.md"), encoding: .utf8)
    var documented: [String: String] = [:]
    for line in text.split(separator: "\n") where line.hasPrefix("| `") {
      let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
      documented[cells[0].trimmingCharacters(in: CharacterSet(charactersIn: "`"))] = cells[1]
    }
    var expected: [String: String] = [:]
    for (method, access) in AuthorizationTable.standard.entries {
      switch access {
      case .anyPrincipal: expected[method.fullyQualifiedMethod] = "any principal"
      case .roles(let roles): expected[method.fullyQualifiedMethod] = roles.sorted().map(\.rawValue).joined(separator: ", ")
      }
    }
    #expect(documented == expected)
  }
}
