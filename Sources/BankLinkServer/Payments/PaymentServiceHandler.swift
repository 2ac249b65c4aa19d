import BankLinkCore
import BankLinkPKI
import SwiftASN1
import X509
import BankLinkStore
import BankLinkProto
import Foundation
import GRPCCore
import GRPCProtobuf
import SwiftProtobuf

/// `banklink.v1.PaymentService`.
struct PaymentServiceHandler: Banklink_V1_PaymentService.SimpleServiceProtocol {
  typealias Method = Banklink_V1_PaymentService.Method

  let ledger: PaymentLedger
  /// Opens enrolled OTP secrets; nil when no key is configured (approvals needing OTP are then
  /// refused as not enrolled).
  let vault: OTPVault?

  func createPayment(
    request: Banklink_V1_CreatePaymentRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_CreatePaymentResponse {
    let caller = try Caller.required()
    try validIdempotencyKey(request.idempotencyKey)
    guard request.hasInstruction else { throw APIError.invalidArgument("instruction", "is required") }
    let instruction = try domainInstruction(request.instruction)
    let created = try await self.mapping {
      try await self.ledger.create(instruction, idempotencyKey: request.idempotencyKey, creator: caller.principal.identity)
    }
    let approval = try withStore { try self.ledger.approvalState(created.payment.id) }
    let decision = try withStore { try self.ledger.riskDecision(created.payment.id) }
    return .with {
      $0.payment = Banklink_V1_Payment(created.payment, approval: approval)
      if let decision { $0.payment.riskDecision = Banklink_V1_RuleDecision(decision, paymentID: created.payment.id) }
      $0.replayed = created.replayed
      if let receipt = created.receipt { $0.receipt = Banklink_V1_Receipt(receipt) }
    }
  }

  func createPaymentBatch(
    request: Banklink_V1_CreatePaymentBatchRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_CreatePaymentBatchResponse {
    let caller = try Caller.required()
    try validIdempotencyKey(request.idempotencyKey)
    var items: [PaymentInstruction] = []
    var violations: [FieldViolation] = []
    for (index, item) in request.items.enumerated() {
      do {
        items.append(try domainInstruction(item, prefix: "items[\(index)]."))
      } catch let status as GoogleRPCStatus {
        violations += status.details.compactMap(\.badRequest).flatMap(\.violations).map {
          FieldViolation(field: $0.field, description: $0.violationDescription)
        }
      }
    }
    guard violations.isEmpty else { throw badRequest(violations) }
    let created = try await self.mapping {
      try await self.ledger.createBatch(items, idempotencyKey: request.idempotencyKey, creator: caller.principal.identity)
    }
    return .with {
      $0.batchID = created.batchID
      $0.payments = created.payments.map(Banklink_V1_Payment.init)
      $0.replayed = created.replayed
      if let receipt = created.receipt { $0.receipt = Banklink_V1_Receipt(receipt) }
    }
  }

  func getPayment(request: Banklink_V1_GetPaymentRequest, context: ServerContext) async throws -> Banklink_V1_Payment {
    try self.payment(request)
  }

  /// What `GetPayment` answers: read transactions only, so the unary fast path
  /// (``UnaryFastPath``) serves it on the event loop too.
  func payment(_ request: Banklink_V1_GetPaymentRequest) throws -> Banklink_V1_Payment {
    let id = try validPaymentID(request.paymentID)
    guard let (payment, approval, decision) = try withStore({ try self.ledger.paymentWithDecisions(id) }) else {
      throw APIError.notFound("payment", id)
    }
    var message = Banklink_V1_Payment(payment, approval: approval)
    if let decision {
      message.riskDecision = Banklink_V1_RuleDecision(decision, paymentID: id)
    }
    return message
  }

  func listPayments(
    request: Banklink_V1_ListPaymentsRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ListPaymentsResponse {
    let size = try pageSize(request.pageSize)
    var filter = PaymentLedger.Filter()
    for (index, status) in request.statuses.enumerated() {
      guard let value = PaymentStatus(status) else {
        throw APIError.invalidArgument("statuses[\(index)]", "is not a payment status")
      }
      filter.statuses.insert(value)
    }
    if !request.debtorAccountID.isEmpty {
      filter.debtorAccountID = try validAccountID(request.debtorAccountID, field: "debtor_account_id")
    }
    if !request.creator.isEmpty {
      guard request.creator.utf8.count <= Limits.maxIdentityLength else {
        throw APIError.invalidArgument("creator", "must be at most \(Limits.maxIdentityLength) bytes")
      }
      filter.creator = request.creator
    }
    if request.hasCreateTimeStart {
      guard let start = Instant(request.createTimeStart) else {
        throw APIError.invalidArgument("create_time_start", "not a valid timestamp")
      }
      filter.createdFrom = start
    }
    if request.hasCreateTimeEnd {
      guard let end = Instant(request.createTimeEnd) else { throw APIError.invalidArgument("create_time_end", "not a valid timestamp") }
      filter.createdBefore = end
    }
    let after =
      request.pageToken.isEmpty ? nil : try PageToken.key(request.pageToken, .payments, maxBytes: Limits.maxPaymentIDLength)
    let page = try withStore { try self.ledger.list(filter, after: after, limit: size) }
    return try .with {
      $0.payments = try page.payments.map { payment in
        Banklink_V1_Payment(payment, approval: try withStore { try self.ledger.approvalState(payment.id) })
      }
      if let resumeAfter = page.resumeAfter {
        $0.nextPageToken = PageToken.encode(.payments, after: resumeAfter)
      }
    }
  }

  func cancelPayment(
    request: Banklink_V1_CancelPaymentRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_CancelPaymentResponse {
    let caller = try Caller.required()
    let id = try validPaymentID(request.paymentID)
    if let problem = PaymentValidation.textProblem(request.reason, maxLength: Limits.maxRemittanceLength) {
      throw APIError.invalidArgument("reason", problem)
    }
    if !request.requestID.isEmpty { try validIdempotencyKey(request.requestID, field: "request_id") }
    let cancelled = try await self.mapping {
      try await self.ledger.cancel(
        id, by: caller.principal.identity, isAdmin: caller.principal.holds(.admin), reason: request.reason,
        requestID: request.requestID)
    }
    return .with {
      $0.payment = Banklink_V1_Payment(cancelled.payment)
      if let receipt = cancelled.receipt { $0.receipt = Banklink_V1_Receipt(receipt) }
    }
  }

  func approvePayment(
    request: Banklink_V1_ApprovePaymentRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ApprovePaymentResponse {
    let caller = try Caller.required()
    let id = try validPaymentID(request.paymentID)
    if !request.requestID.isEmpty { try validIdempotencyKey(request.requestID, field: "request_id") }
    guard !request.signature.isEmpty else {
      throw APIError.invalidArgument("signature", "is required: sign the payment's approval_digest with your certificate's key")
    }
    guard request.signature.count <= Limits.maxApprovalSignatureBytes else {
      throw APIError.invalidArgument("signature", "must be at most \(Limits.maxApprovalSignatureBytes) bytes")
    }
    guard request.otpCode.isEmpty || (request.otpCode.utf8.count == Limits.otpDigits && request.otpCode.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 }) else {
      throw APIError.invalidArgument("otp_code", "must be \(Limits.otpDigits) digits")
    }
    if let problem = PaymentValidation.textProblem(request.comment, maxLength: Limits.maxApprovalCommentLength) {
      throw APIError.invalidArgument("comment", problem)
    }
    var serializer = DER.Serializer()
    try serializer.serialize(caller.peer.certificate)
    let approver = PaymentLedger.Approver(
      principal: caller.principal, certificate: serializer.serializedBytes, publicKey: caller.peer.certificate.publicKey)
    let approved = try await self.mapping {
      try await self.ledger.approve(
        id, by: approver, signature: Array(request.signature), otpCode: request.otpCode, comment: request.comment,
        requestID: request.requestID, vault: self.vault)
    }
    return .with {
      $0.payment = Banklink_V1_Payment(approved.payment, approval: approved.state)
      $0.receipt = Banklink_V1_Receipt(approved.receipt)
    }
  }

  func rejectPayment(
    request: Banklink_V1_RejectPaymentRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_RejectPaymentResponse {
    let caller = try Caller.required()
    let id = try validPaymentID(request.paymentID)
    if !request.requestID.isEmpty { try validIdempotencyKey(request.requestID, field: "request_id") }
    guard !request.reason.isEmpty else { throw APIError.invalidArgument("reason", "is required: say why the payment is refused") }
    if let problem = PaymentValidation.textProblem(request.reason, maxLength: Limits.maxRemittanceLength) {
      throw APIError.invalidArgument("reason", problem)
    }
    let (payment, receipt) = try await self.mapping {
      try await self.ledger.reject(id, by: caller.principal, reason: request.reason, requestID: request.requestID)
    }
    let state = try withStore { try self.ledger.approvalState(id) }
    return .with {
      $0.payment = Banklink_V1_Payment(payment, approval: state)
      $0.receipt = Banklink_V1_Receipt(receipt)
    }
  }

  func listPendingApprovals(
    request: Banklink_V1_ListPendingApprovalsRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_ListPendingApprovalsResponse {
    let caller = try Caller.required()
    let size = try pageSize(request.pageSize)
    let after =
      request.pageToken.isEmpty
      ? nil : try PageToken.key(request.pageToken, .pendingApprovals, maxBytes: Limits.maxPaymentIDLength)
    let page = try withStore { try self.ledger.pendingApprovals(for: caller.principal, after: after, limit: size) }
    return .with {
      $0.payments = page.payments.map { Banklink_V1_Payment($0.0, approval: $0.1) }
      if let resume = page.resumeAfter { $0.nextPageToken = PageToken.encode(.pendingApprovals, after: resume) }
    }
  }

  /// Maps the ledger's refusals and storage errors to gRPC statuses.
  private func mapping<T>(_ body: () async throws -> T) async throws -> T {
    do {
      return try await body()
    } catch let refusal as PaymentLedger.Refusal {
      throw refusal.status
    } catch let refusal as PaymentLedger.ApprovalRefusal {
      throw refusal.status
    } catch let error as StoreError {
      throw APIError.storage(error)
    }
  }
}

extension PaymentLedger.Refusal {
  var status: GoogleRPCStatus {
    switch self {
    case .invalid(let violations):
      return badRequest(violations)
    case .accountNotFound(let id):
      return GoogleRPCStatus(
        code: .invalidArgument, message: "instruction.debtor_account_id: no account '\(LogText.prefix(id))'",
        details: [.badRequest(violations: [.init(field: "instruction.debtor_account_id", description: "no such account")])])
    case .accountNotActive(let id, let status):
      return GoogleRPCStatus(
        code: .failedPrecondition, message: "account \(id) is \(status.rawValue); only active accounts can pay",
        details: [.preconditionFailure(violations: [.init(type: "ACCOUNT_STATUS", subject: id, description: "account is \(status.rawValue)")])])
    case .insufficientFunds(let available, let requested, let currency):
      let shortfall = Money(minorUnits: requested - available, currency: currency)
      return GoogleRPCStatus(
        code: .failedPrecondition,
        message: "insufficient available funds: shortfall \(shortfall) (available \(Money(minorUnits: available, currency: currency)))",
        details: [
          .preconditionFailure(violations: [.init(type: "INSUFFICIENT_FUNDS", subject: "instruction.amount", description: "shortfall \(shortfall)")]),
          .errorInfo(reason: "INSUFFICIENT_FUNDS", domain: APIError.domain, metadata: ["shortfall_minor_units": "\(requested - available)", "currency": currency.code]),
        ])
    case .balanceNotSynced(let id):
      return GoogleRPCStatus(
        code: .unavailable,
        message: "the balance of account \(id) has not been synced from its bank yet; retry shortly",
        details: [.errorInfo(reason: "BALANCE_NOT_SYNCED", domain: APIError.domain, metadata: ["account_id": id])])
    case .idempotencyConflict(let key, let paymentID):
      return GoogleRPCStatus(
        code: .alreadyExists,
        message: "idempotency_key '\(key)' was already used for a different request (payment \(paymentID))",
        details: [.errorInfo(reason: "IDEMPOTENCY_KEY_REUSED", domain: APIError.domain, metadata: ["payment_id": paymentID])])
    case .paymentNotFound(let id):
      return APIError.notFound("payment", id)
    case .notCreator(let id):
      return GoogleRPCStatus(code: .permissionDenied, message: "only the creator of payment \(id) or an admin may cancel it", details: [])
    case .batchRejected(let items):
      // Validation problems of any item make the batch INVALID_ARGUMENT; otherwise it is a
      // precondition (funds, account state) — with every failing item named either way.
      let invalid = items.flatMap { item -> [FieldViolation] in
        if case .invalid(let violations) = item.refusal { return violations }
        return []
      }
      if !invalid.isEmpty { return badRequest(invalid) }
      // A balance not synced yet is the only item failure a retry cures.
      if let unsynced = items.first(where: { if case .balanceNotSynced = $0.refusal { return true } else { return false } }) {
        return unsynced.refusal.status
      }
      let reported = items.prefix(Limits.maxReportedViolations)
      let more = items.count > reported.count ? "; and \(items.count - reported.count) more items" : ""
      return GoogleRPCStatus(
        code: .failedPrecondition,
        message: "batch refused, nothing created (\(items.count) items failed): "
          + reported.map { "items[\($0.index)]: \($0.refusal.status.message)" }.joined(separator: "; ") + more,
        details: [
          .preconditionFailure(violations: reported.map { .init(type: "BATCH_ITEM", subject: "items[\($0.index)]", description: $0.refusal.status.message) })
        ])
    case .riskWorkExceeded(let index):
      return GoogleRPCStatus(
        code: .resourceExhausted,
        message: "batch refused, nothing created: the risk rules' work for its items passed \(Limits.maxRiskStepsPerBatch) steps "
          + "at items[\(index)]; send it in smaller batches",
        details: [.errorInfo(reason: "RISK_WORK_EXCEEDED", domain: APIError.domain, metadata: ["item": "\(index)"])])
    case .notCancellable(let id, let status):
      let why =
        status == .submitting || status == .submitted || status == .accepted
        ? "it is with the bank (claimed for submission), so it can no longer be cancelled here; ask the bank to recall it"
        : "only payments not yet claimed for submission to the bank can be cancelled"
      return GoogleRPCStatus(
        code: .failedPrecondition, message: "payment \(id) is \(status.rawValue): \(why)",
        details: [.preconditionFailure(violations: [.init(type: "PAYMENT_STATUS", subject: id, description: status.rawValue)])])
    }
  }
}

extension PaymentLedger.ApprovalRefusal {
  /// When a lockout ends, as a caller reads it.
  static func lockEnd(_ until: Instant) -> String {
    until == OTPState.untilReenrolled ? "an admin enrols your OTP again" : until.isoTimestamp
  }

  var status: GoogleRPCStatus {
    func precondition(_ type: String, _ message: String) -> GoogleRPCStatus {
      GoogleRPCStatus(
        code: .failedPrecondition, message: message,
        details: [.preconditionFailure(violations: [.init(type: type, subject: "payment_id", description: message)])])
    }
    switch self {
    case .paymentNotFound(let id):
      return APIError.notFound("payment", id)
    case .notPendingApproval(let id, let status):
      return precondition("PAYMENT_STATUS", "payment \(id) is \(status.rawValue), not waiting for approval")
    case .ownPayment:
      return GoogleRPCStatus(
        code: .permissionDenied, message: "separation of duties: the creator of a payment may not approve or reject it", details: [])
    case .alreadyApproved(let level):
      return precondition("ALREADY_APPROVED", "you approved this payment already (level \(level)); one principal counts once")
    case .notEligible(let level, let detail):
      return GoogleRPCStatus(code: .permissionDenied, message: "you may not approve level \(level) of this payment: \(detail)", details: [])
    case .badSignature:
      return GoogleRPCStatus(
        code: .invalidArgument,
        message: "signature: does not verify with your certificate's key over the payment's approval_digest (fetch the payment again: the digest names the level)",
        details: [.badRequest(violations: [.init(field: "signature", description: "does not verify")])])
    case .otpRequired:
      return GoogleRPCStatus(
        code: .invalidArgument, message: "otp_code: policy requires a one-time password for this approval",
        details: [.badRequest(violations: [.init(field: "otp_code", description: "is required")])])
    case .otpNotEnrolled:
      return precondition("OTP_NOT_ENROLLED", "policy requires a one-time password and none is enrolled for you; an admin runs EnrollOtp")
    case .otpRejected(let failures, let lockedUntil):
      if let lockedUntil {
        return GoogleRPCStatus(
          code: .permissionDenied,
          message: "otp_code is wrong or already used; your approvals are locked until \(Self.lockEnd(lockedUntil))", details: [])
      }
      return GoogleRPCStatus(
        code: .permissionDenied,
        message: "otp_code is wrong or already used (\(failures) of \(Limits.maxOTPFailures) before a lockout)", details: [])
    case .otpLocked(let until):
      return GoogleRPCStatus(
        code: .permissionDenied, message: "your approvals are locked after repeated wrong one-time passwords until \(Self.lockEnd(until))",
        details: [])
    case .expired:
      return precondition("APPROVAL_EXPIRED", "the approval window has passed; the payment expired and its funds were released")
    case .requestIDReused(let requestID, let paymentID):
      return GoogleRPCStatus(
        code: .alreadyExists,
        message: "request_id '\(requestID)' was already used for payment \(paymentID)",
        details: [.errorInfo(reason: "REQUEST_ID_REUSED", domain: APIError.domain, metadata: ["payment_id": paymentID])])
    }
  }
}

/// INVALID_ARGUMENT naming every failing field, up to ``Limits/maxReportedViolations`` of them
/// (the status travels in trailers, which clients bound to a few KiB).
func badRequest(_ violations: [FieldViolation]) -> GoogleRPCStatus {
  let reported = violations.prefix(Limits.maxReportedViolations)
  let more = violations.count > reported.count ? "; and \(violations.count - reported.count) more" : ""
  return GoogleRPCStatus(
    code: .invalidArgument,
    message: reported.map { "\($0.field): \($0.description)" }.joined(separator: "; ") + more,
    details: [.badRequest(violations: reported.map { .init(field: $0.field, description: $0.description) })])
}

func validIdempotencyKey(_ key: String, field: String = "idempotency_key") throws {
  guard !key.isEmpty else { throw APIError.invalidArgument(field, "is required") }
  guard key.utf8.count <= Limits.maxIdempotencyKeyLength, key.utf8.allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) else {
    throw APIError.invalidArgument(field, "must be at most \(Limits.maxIdempotencyKeyLength) printable ASCII characters without spaces")
  }
}

func validPaymentID(_ id: String) throws -> String {
  guard !id.isEmpty else { throw APIError.invalidArgument("payment_id", "is required") }
  guard id.utf8.count <= Limits.maxPaymentIDLength, id.utf8.allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) else {
    throw APIError.invalidArgument("payment_id", "is not a payment id")
  }
  return id
}
