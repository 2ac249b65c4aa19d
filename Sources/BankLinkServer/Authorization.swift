import BankLinkCore
import BankLinkPKI
import BankLinkProto
import GRPCCore

/// Who may call a method.
public enum Access: Sendable, Hashable {
  /// Any principal in the principals table, whatever its roles (health checks, WhoAmI).
  case anyPrincipal
  /// A principal holding at least one of these roles.
  case roles(Set<Role>)
}

/// The single authorization table: every RPC the daemon serves and who may call it. A method not
/// listed here is denied, whatever the caller's roles; a test checks that every method of the
/// contract is listed. docs/authorization.md renders this table for operators.
public struct AuthorizationTable: Sendable {
  public let entries: [MethodDescriptor: Access]

  public init(_ entries: [MethodDescriptor: Access]) {
    self.entries = entries
  }

  public func access(for method: MethodDescriptor) -> Access? {
    self.entries[method]
  }

  /// Every role may query: "viewer and above".
  static let readers: Access = .roles(Set(Role.allCases))

  public static let standard: AuthorizationTable = {
    typealias Accounts = Banklink_V1_AccountService.Method
    typealias Payments = Banklink_V1_PaymentService.Method
    typealias Monitoring = Banklink_V1_MonitoringService.Method
    typealias Reconciliation = Banklink_V1_ReconciliationService.Method
    typealias Admin = Banklink_V1_AdminService.Method
    typealias Health = Grpc_Health_V1_Health.Method
    typealias Reflection = Grpc_Reflection_V1_ServerReflection.Method
    typealias ReflectionAlpha = Grpc_Reflection_V1alpha_ServerReflection.Method
    let entries: [(MethodDescriptor, Access)] = [
      // Health and identity: any known principal.
      (Health.Check.descriptor, .anyPrincipal),
      (Health.List.descriptor, .anyPrincipal),
      (Health.Watch.descriptor, .anyPrincipal),
      (Admin.WhoAmI.descriptor, .anyPrincipal),
      // Server reflection (grpcurl, Postman): the API's shape, for any known principal.
      (Reflection.ServerReflectionInfo.descriptor, .anyPrincipal),
      (ReflectionAlpha.ServerReflectionInfo.descriptor, .anyPrincipal),

      // Queries: every role.
      (Accounts.ListAccounts.descriptor, readers),
      (Accounts.GetBalance.descriptor, readers),
      (Accounts.ListTransactions.descriptor, readers),
      (Payments.GetPayment.descriptor, readers),
      (Payments.ListPayments.descriptor, readers),
      (Monitoring.SubscribeAlerts.descriptor, readers),
      (Monitoring.ListAlerts.descriptor, readers),

      // Payments: payers create; creators (payer) or admins cancel; approvers decide.
      (Payments.CreatePayment.descriptor, .roles([.payer])),
      (Payments.CreatePaymentBatch.descriptor, .roles([.payer])),
      (Payments.ImportPaymentFile.descriptor, .roles([.payer])),
      (Payments.CancelPayment.descriptor, .roles([.payer, .admin])),
      (Payments.ApprovePayment.descriptor, .roles([.approver])),
      (Payments.RejectPayment.descriptor, .roles([.approver])),
      (Payments.ListPendingApprovals.descriptor, .roles([.approver])),

      // Monitoring: admins acknowledge alerts.
      (Monitoring.AcknowledgeAlert.descriptor, .roles([.admin])),

      // Reconciliation: reconcilers and admins import and reconcile; auditors read too.
      (Reconciliation.ImportStatement.descriptor, .roles([.reconciler, .admin])),
      (Reconciliation.ListStatements.descriptor, .roles([.auditor, .reconciler, .admin])),
      (Reconciliation.GetStatement.descriptor, .roles([.auditor, .reconciler, .admin])),
      (Reconciliation.Reconcile.descriptor, .roles([.reconciler, .admin])),
      (Reconciliation.GetReconciliationReport.descriptor, .roles([.auditor, .reconciler, .admin])),
      (Reconciliation.MatchEntry.descriptor, .roles([.reconciler, .admin])),
      (Reconciliation.UnmatchEntry.descriptor, .roles([.reconciler, .admin])),

      // Administration: admins change rules, policy and principals.
      (Admin.GetRuleSet.descriptor, .roles([.admin, .auditor])),
      (Admin.ValidateRuleSet.descriptor, .roles([.admin])),
      (Admin.PutRuleSet.descriptor, .roles([.admin])),
      (Admin.TestRuleSet.descriptor, .roles([.admin])),
      (Admin.EvaluateExpression.descriptor, .roles([.admin])),
      (Admin.ClearShadowRuleSet.descriptor, .roles([.admin])),
      (Admin.GetShadowReport.descriptor, .roles([.admin, .auditor])),
      (Admin.GetApprovalPolicy.descriptor, .roles([.admin, .auditor])),
      (Admin.PutApprovalPolicy.descriptor, .roles([.admin])),
      (Admin.ListPrincipals.descriptor, .roles([.admin, .auditor])),
      (Admin.SetPrincipalRoles.descriptor, .roles([.admin])),
      (Admin.EnrollOtp.descriptor, .roles([.admin])),
      (Admin.RevokeCertificate.descriptor, .roles([.admin])),

      // Audit: auditors and admins.
      (Admin.ListAuditEntries.descriptor, .roles([.auditor, .admin])),
      (Admin.VerifyAuditJournal.descriptor, .roles([.auditor, .admin])),
      // A copy of everything the daemon holds: admins only, and journaled.
      (Admin.Backup.descriptor, .roles([.admin])),
      // Puts a new configuration (certificates, CA bundle, principals, policy) in force.
      (Admin.ReloadConfiguration.descriptor, .roles([.admin])),
    ]
    return AuthorizationTable(Dictionary(entries, uniquingKeysWith: { _, _ in
      preconditionFailure("a method is listed twice in the authorization table")
    }))
  }()

  /// Decides whether `peer` may call `method`. Refusals are values carrying the gRPC error the
  /// caller receives; nothing here has side effects.
  public func decide(
    method: MethodDescriptor,
    peer: PeerIdentity?,
    principals: PrincipalTable
  ) -> Decision {
    guard let peer else {
      // Mutual TLS makes this unreachable for a correctly configured transport; refuse anyway.
      return .denied(RPCError(code: .unauthenticated, message: "a client certificate with a URI SAN or common name is required"))
    }
    guard let access = self.access(for: method) else {
      return .denied(RPCError(code: .permissionDenied, message: "\(method) is not in the authorization table"))
    }
    guard let principal = principals.principal(for: peer.identity) else {
      return .denied(RPCError(
        code: .permissionDenied,
        message: "identity '\(peer.identity)' is not a known principal"
      ))
    }
    switch access {
    case .anyPrincipal:
      return .allowed(Caller(principal: principal, peer: peer))
    case .roles(let allowed):
      guard principal.roles.isDisjoint(with: allowed) else {
        return .allowed(Caller(principal: principal, peer: peer))
      }
      let needed = allowed.sorted().map(\.rawValue)
      let held = principal.roles.isEmpty ? "no roles" : "roles " + principal.roles.sorted().map(\.rawValue).joined(separator: ", ")
      let requirement = needed.count == 1 ? "role \(needed[0])" : "one of the roles \(needed.joined(separator: ", "))"
      return .denied(RPCError(
        code: .permissionDenied,
        message: "\(method) requires \(requirement); '\(peer.identity)' holds \(held)"
      ))
    }
  }

  public enum Decision: Sendable {
    case allowed(Caller)
    case denied(RPCError)
  }
}

/// The authenticated, authorized caller of the current RPC.
public struct Caller: Sendable, Hashable {
  public var principal: Principal
  public var peer: PeerIdentity

  public init(principal: Principal, peer: PeerIdentity) {
    self.principal = principal
    self.peer = peer
  }

  /// Set by ``AuthorizationInterceptor`` for the handler of every authorized call.
  @TaskLocal public static var current: Caller?

  /// The current caller; an internal error if a handler runs without the interceptor.
  public static func required() throws -> Caller {
    guard let caller = Caller.current else {
      throw RPCError(code: .internalError, message: "the call was not authorized by the interceptor")
    }
    return caller
  }
}
