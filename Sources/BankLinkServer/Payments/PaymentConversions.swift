import BankLinkCore
import BankLinkPKI
import Foundation
import BankLinkProto
import SwiftProtobuf

extension PaymentStatus {
  var proto: Banklink_V1_PaymentStatus {
    switch self {
    case .pendingRisk: .pendingRisk
    case .pendingApproval: .pendingApproval
    case .approved: .approved
    case .submitting: .submitting
    case .submitted: .submitted
    case .accepted: .accepted
    case .settled: .settled
    case .rejected: .rejected
    case .blocked: .blocked
    case .cancelled: .cancelled
    case .failed: .failed
    case .returned: .returned
    case .expired: .expired
    }
  }

  init?(_ proto: Banklink_V1_PaymentStatus) {
    guard let status = PaymentStatus.allCases.first(where: { $0.proto == proto }) else { return nil }
    self = status
  }
}

extension PaymentType {
  var proto: Banklink_V1_PaymentType {
    switch self {
    case .internalTransfer: .internalTransfer
    case .domestic: .domestic
    case .crossBorder: .crossBorder
    case .payrollItem: .payrollItem
    }
  }

  init?(_ proto: Banklink_V1_PaymentType) {
    guard let type = PaymentType.allCases.first(where: { $0.proto == proto }) else { return nil }
    self = type
  }
}

extension Banklink_V1_PaymentType {
  init(_ type: PaymentType) { self = type.proto }
}

extension Role {
  init?(_ proto: Banklink_V1_Role) {
    guard let role = Role.allCases.first(where: { Banklink_V1_Role($0) == proto }) else { return nil }
    self = role
  }
}

extension Banklink_V1_Payment {
  /// The payment, with its approvals, the digest the next approver signs and the deadline when
  /// it needed approvals.
  init(_ payment: Payment, approval: ApprovalState?) {
    self.init(payment)
    guard let approval else { return }
    self.approvals = approval.approvals.map { given in
      .with {
        $0.approver = given.approver
        $0.level = Int32(given.level)
        $0.time = given.time.timestamp
        $0.signature = Data(given.signature)
        $0.comment = given.comment
      }
    }
    self.approvalDeadline = approval.deadline.timestamp
    self.approvalPolicyVersion = approval.policyVersion
    if payment.status == .pendingApproval, let level = approval.currentLevel {
      self.approvalLevel = Int32(level)
      self.approvalDigest = Data(ApprovalDigest.digest(
        paymentID: payment.id, instruction: payment.instruction, policyVersion: approval.policyVersion, level: level))
    }
  }

  init(_ payment: Payment) {
    self.init()
    self.paymentID = payment.id
    self.instruction = .with {
      $0.debtorAccountID = payment.instruction.debtorAccountID
      $0.creditor = .with {
        $0.name = payment.instruction.creditor.name
        $0.accountNumber = payment.instruction.creditor.accountNumber
        $0.iban = payment.instruction.creditor.iban
        $0.bic = payment.instruction.creditor.bic
        $0.country = payment.instruction.creditor.country
      }
      $0.amount = Banklink_V1_Money(payment.instruction.amount)
      $0.purpose = payment.instruction.purpose
      $0.requestedExecutionDate = payment.instruction.requestedExecutionDate
      $0.type = payment.instruction.type.proto
    }
    self.status = payment.status.proto
    if !payment.bankStatusCode.isEmpty {
      self.bankStatus = .with {
        $0.code = payment.bankStatusCode
        $0.reasonCode = payment.bankReasonCode
      }
    }
    self.creator = payment.creator
    self.idempotencyKey = payment.idempotencyKey
    self.endToEndID = payment.endToEndID
    self.batchID = payment.batchID
    self.createTime = payment.createdAt.timestamp
    self.updateTime = payment.updatedAt.timestamp
    self.statusReason = payment.statusReason
  }
}

/// Converts a request's instruction to the domain; INVALID_ARGUMENT names what cannot even be
/// represented (unknown currency or type). The rest is checked by ``PaymentValidation``.
func domainInstruction(_ proto: Banklink_V1_PaymentInstruction, prefix: String = "instruction.") throws -> PaymentInstruction {
  var violations: [FieldViolation] = []
  let currency = CurrencyCode(proto.amount.currencyCode)
  if currency == nil {
    violations.append(.init(field: prefix + "amount.currency_code", description: "must be an ISO 4217 code such as CNY"))
  }
  let type: PaymentType?
  switch proto.type {
  case .internalTransfer: type = .internalTransfer
  case .domestic: type = .domestic
  case .crossBorder: type = .crossBorder
  case .payrollItem: type = .payrollItem
  case .unspecified, .UNRECOGNIZED: type = nil
  }
  if type == nil {
    violations.append(.init(field: prefix + "type", description: "must be one of internal_transfer, domestic, cross_border, payroll_item"))
  }
  guard let currency, let type else { throw badRequest(violations) }
  return PaymentInstruction(
      debtorAccountID: proto.debtorAccountID,
      creditor: Creditor(
        name: proto.creditor.name, accountNumber: proto.creditor.accountNumber, iban: proto.creditor.iban,
        bic: proto.creditor.bic, country: proto.creditor.country),
      amount: Money(minorUnits: proto.amount.minorUnits, currency: currency),
      purpose: proto.purpose,
      requestedExecutionDate: proto.requestedExecutionDate,
      type: type)
}
