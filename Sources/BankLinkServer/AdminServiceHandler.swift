import BankLinkCore
import BankLinkPKI
import BankLinkProto
import GRPCCore
import SwiftProtobuf

/// `banklink.v1.AdminService`.
struct AdminServiceHandler: Banklink_V1_AdminService.SimpleServiceProtocol {
  typealias Method = Banklink_V1_AdminService.Method

  func whoAmI(request: Banklink_V1_WhoAmIRequest, context: ServerContext) async throws -> Banklink_V1_WhoAmIResponse {
    let caller = try Caller.required()
    return .with {
      $0.identity = caller.peer.identity
      $0.identitySource = caller.peer.source.rawValue
      $0.roles = caller.principal.roles.sorted().map(Banklink_V1_Role.init)
      $0.certificateSerial = caller.peer.serialNumberHex
      $0.certificateNotAfter = Google_Protobuf_Timestamp(date: caller.peer.notValidAfter)
      $0.certificateSubject = caller.peer.subject
    }
  }

  func getRuleSet(request: Banklink_V1_GetRuleSetRequest, context: ServerContext) async throws -> Banklink_V1_RuleSet {
    throw unimplemented(Method.GetRuleSet.descriptor)
  }

  func validateRuleSet(
    request: Banklink_V1_ValidateRuleSetRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ValidateRuleSetResponse {
    throw unimplemented(Method.ValidateRuleSet.descriptor)
  }

  func putRuleSet(request: Banklink_V1_PutRuleSetRequest, context: ServerContext) async throws -> Banklink_V1_PutRuleSetResponse {
    throw unimplemented(Method.PutRuleSet.descriptor)
  }

  func testRuleSet(request: Banklink_V1_TestRuleSetRequest, context: ServerContext) async throws -> Banklink_V1_TestRuleSetResponse {
    throw unimplemented(Method.TestRuleSet.descriptor)
  }

  func getApprovalPolicy(
    request: Banklink_V1_GetApprovalPolicyRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ApprovalPolicy {
    throw unimplemented(Method.GetApprovalPolicy.descriptor)
  }

  func putApprovalPolicy(
    request: Banklink_V1_PutApprovalPolicyRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_PutApprovalPolicyResponse {
    throw unimplemented(Method.PutApprovalPolicy.descriptor)
  }

  func listPrincipals(
    request: Banklink_V1_ListPrincipalsRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ListPrincipalsResponse {
    throw unimplemented(Method.ListPrincipals.descriptor)
  }

  func setPrincipalRoles(
    request: Banklink_V1_SetPrincipalRolesRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_SetPrincipalRolesResponse {
    throw unimplemented(Method.SetPrincipalRoles.descriptor)
  }

  func enrollOtp(request: Banklink_V1_EnrollOtpRequest, context: ServerContext) async throws -> Banklink_V1_EnrollOtpResponse {
    throw unimplemented(Method.EnrollOtp.descriptor)
  }

  func revokeCertificate(
    request: Banklink_V1_RevokeCertificateRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_RevokeCertificateResponse {
    throw unimplemented(Method.RevokeCertificate.descriptor)
  }

  func listAuditEntries(
    request: Banklink_V1_ListAuditEntriesRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ListAuditEntriesResponse {
    throw unimplemented(Method.ListAuditEntries.descriptor)
  }

  func verifyAuditJournal(
    request: Banklink_V1_VerifyAuditJournalRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_VerifyAuditJournalResponse {
    throw unimplemented(Method.VerifyAuditJournal.descriptor)
  }
}

extension Banklink_V1_Role {
  init(_ role: Role) {
    switch role {
    case .viewer: self = .viewer
    case .payer: self = .payer
    case .approver: self = .approver
    case .auditor: self = .auditor
    case .admin: self = .admin
    }
  }
}
