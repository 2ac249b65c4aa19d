import BankLinkCore
import BankLinkJournal
import BankLinkPKI
import BankLinkStore
import Foundation
import BankLinkProto
import GRPCCore
import SwiftProtobuf

/// `banklink.v1.AdminService`.
struct AdminServiceHandler: Banklink_V1_AdminService.SimpleServiceProtocol {
  typealias Method = Banklink_V1_AdminService.Method

  /// The daemon's store, where the journal is.
  let store: Store
  /// Checks checkpoints with the daemon's own certificate.
  let checkpoints: JournalCheckpoint.Verifier?

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
    let size = try pageSize(request.pageSize)
    var after = request.afterSequence
    if !request.pageToken.isEmpty {
      guard let data = Data(base64Encoded: request.pageToken), let text = String(data: data, encoding: .utf8),
        text.hasPrefix(Self.auditTokenPrefix), let sequence = UInt64(text.dropFirst(Self.auditTokenPrefix.count))
      else { throw APIError.invalidArgument("page_token", "not a token issued by this server") }
      after = max(after, sequence)
    }
    var filter = AuditFilter()
    if !request.object.isEmpty {
      guard request.object.utf8.count <= Limits.maxAuditObjectLength else {
        throw APIError.invalidArgument("object", "must be at most \(Limits.maxAuditObjectLength) bytes")
      }
      filter.object = request.object
    }
    if !request.principal.isEmpty {
      guard request.principal.utf8.count <= Limits.maxIdentityLength else {
        throw APIError.invalidArgument("principal", "must be at most \(Limits.maxIdentityLength) bytes")
      }
      filter.principal = request.principal
    }
    if !request.action.isEmpty {
      guard request.action.utf8.count <= Limits.maxAuditActionLength else {
        throw APIError.invalidArgument("action", "must be at most \(Limits.maxAuditActionLength) bytes")
      }
      filter.action = request.action
    }
    if request.hasStartTime {
      guard let start = Instant(request.startTime) else { throw APIError.invalidArgument("start_time", "not a valid timestamp") }
      filter.from = start
    }
    if request.hasEndTime {
      guard let end = Instant(request.endTime) else { throw APIError.invalidArgument("end_time", "not a valid timestamp") }
      filter.before = end
    }
    let page = try withStore {
      try self.store.withReadTransaction { txn in
        try AuditQuery.page(filter, after: after, limit: size, scanLimit: Limits.maxListScanRecords, in: txn)
      }
    }
    return .with {
      $0.entries = page.entries.map(Banklink_V1_AuditEntry.init)
      if let resume = page.resumeAfter {
        $0.nextPageToken = Data((Self.auditTokenPrefix + String(resume)).utf8).base64EncodedString()
      }
    }
  }

  static let auditTokenPrefix = "audit:"

  func verifyAuditJournal(
    request: Banklink_V1_VerifyAuditJournalRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_VerifyAuditJournalResponse {
    if request.toSequence != 0 && request.toSequence < request.fromSequence {
      throw APIError.invalidArgument("to_sequence", "must not be below from_sequence")
    }
    let report = try withStore {
      try self.store.withReadTransaction { txn in
        try JournalVerifier.verify(
          from: request.fromSequence, to: request.toSequence, checkpoints: self.checkpoints, in: txn)
      }
    }
    return .with {
      $0.valid = report.valid
      $0.entriesVerified = report.entriesVerified
      $0.firstInvalidSequence = report.firstInvalidSequence
      $0.headHash = Data(report.headHash)
      $0.message = report.message
      $0.checkpointsVerified = report.checkpointsVerified
      $0.lastCheckpointSequence = report.lastCheckpoint
      $0.checkpointsOtherCertificate = report.checkpointsOtherCertificate
    }
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
