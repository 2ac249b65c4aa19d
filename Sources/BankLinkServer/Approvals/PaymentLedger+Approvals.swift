import BankLinkCore
import BankLinkJournal
import BankLinkPKI
import BankLinkStore
import Crypto
import Foundation
import SwiftASN1
import X509

/// Approvals: approve (signature and one-time password), reject, expire, list what a caller may
/// approve, and the check that runs again before release (docs/approvals.md).
extension PaymentLedger {
  /// Who is approving, from the connection: the principal and the certificate it presented.
  public struct Approver: Sendable {
    public var principal: Principal
    /// DER of the client certificate of this connection.
    public var certificate: [UInt8]
    public var publicKey: Certificate.PublicKey

    public init(principal: Principal, certificate: [UInt8], publicKey: Certificate.PublicKey) {
      self.principal = principal
      self.certificate = certificate
      self.publicKey = publicKey
    }
  }

  /// Why an approval or rejection was refused. Mapped to gRPC statuses by the handler; each
  /// names the condition without quoting secrets.
  public enum ApprovalRefusal: Error, Sendable, Hashable {
    case paymentNotFound(String)
    case notPendingApproval(paymentID: String, status: PaymentStatus)
    case ownPayment
    case alreadyApproved(level: Int)
    case notEligible(level: Int, detail: String)
    case badSignature
    case otpRequired
    case otpNotEnrolled
    case otpRejected(failures: Int, lockedUntil: Instant?)
    case otpLocked(until: Instant)
    case expired
    /// The caller's `request_id` already decided another payment.
    case requestIDReused(requestID: String, paymentID: String)

    /// The reason journaled with a refused approval; nil for refusals that journal themselves
    /// (OTP failures, expiry) or change nothing worth recording (a reused request id).
    var journalReason: String? {
      switch self {
      case .paymentNotFound: "payment_not_found"
      case .notPendingApproval: "not_pending_approval"
      case .ownPayment: "own_payment"
      case .alreadyApproved: "already_approved"
      case .notEligible: "not_eligible"
      case .badSignature: "bad_signature"
      case .otpRequired: "otp_required"
      case .otpNotEnrolled: "otp_not_enrolled"
      case .otpLocked: "otp_locked"
      case .otpRejected, .expired, .requestIDReused: nil
      }
    }
  }

  public struct Approved: Sendable, Hashable {
    public var payment: Payment
    public var state: ApprovalState
    public var receipt: JournalReceipt
    /// A retry with the same `request_id`: the payment as it is now, the original receipt.
    public var replayed = false
  }

  /// What `approve` did. Some refusals change state that must be committed (an OTP failure is
  /// counted and journaled; a payment past its deadline expires): they are results, not throws,
  /// so that the transaction commits, and the caller throws after.
  enum ApprovalOutcome: Sendable {
    case approved(Approved)
    case refused(ApprovalRefusal)
  }

  // MARK: Approve

  /// Records one approval of `paymentID` by `approver`, in one transaction: separation of duties,
  /// the level in order, the signature over the approval digest, the one-time password (accepted
  /// once), and — with the last approval required — the release (`approved` and its outbox
  /// entry). Two approvers racing for the last slot: LMDB serialises them; one releases, the
  /// other finds the payment no longer pending.
  public func approve(
    _ paymentID: String, by approver: Approver, signature: [UInt8], otpCode: String, comment: String, requestID: String = "",
    vault: OTPVault?
  ) async throws -> Approved {
    let now = self.now()
    let outcome: ApprovalOutcome = try await self.writer.write { txn in
      let requestKey = requestID.isEmpty
        ? nil : DecisionRequest.key(principal: approver.principal.identity, decision: .approve, requestID: requestID)
      if let requestKey, let earlier = try DecisionRequest.load(requestKey, in: txn) {
        guard earlier.paymentID == paymentID else {
          return .refused(.requestIDReused(requestID: requestID, paymentID: earlier.paymentID))
        }
        let (payment, receipt) = try Self.replayed(earlier, in: txn)
        guard let state = try ApprovalState.load(paymentID, in: txn) else {
          throw StoreError(code: .corrupted, message: "approved payment \(paymentID) has no approval state")
        }
        return .approved(Approved(payment: payment, state: state, receipt: receipt, replayed: true))
      }
      let outcome = try Self.approve(
        paymentID, by: approver, signature: signature, otpCode: otpCode, comment: comment, vault: vault, at: now, txn: &txn)
      // A refusal is an event too (self-approval, a bad signature, a payment that is not
      // waiting): journaled with the reason, in a transaction that commits. OTP failures and
      // expiry journal themselves.
      if case .refused(let refusal) = outcome, let reason = refusal.journalReason {
        try AuditJournal.append(
          &txn, at: now, principal: approver.principal.identity, action: "payment.approval_refused",
          object: paymentID, details: ["reason": reason])
      }
      if case .approved(let approved) = outcome, let requestKey {
        try DecisionRequest.save(requestKey, paymentID: paymentID, sequence: approved.receipt.sequence, txn: &txn)
      }
      return outcome
    }
    switch outcome {
    case .approved(let approved): return approved
    case .refused(let refusal): throw refusal
    }
  }

  /// The payment as it is now and the receipt of the decision an earlier request made.
  private static func replayed(
    _ earlier: (paymentID: String, sequence: UInt64), in txn: some ReadableTransaction
  ) throws -> (Payment, JournalReceipt) {
    guard let bytes = try txn.get(Array(earlier.paymentID.utf8), in: .payments),
      let entry = try AuditJournal.entry(earlier.sequence, in: txn)
    else {
      throw StoreError(code: .corrupted, message: "a decision request points at a missing payment or journal entry")
    }
    return (try Payment(record: bytes), entry.receipt)
  }

  /// The approval itself, inside the caller's write transaction.
  private static func approve(
    _ paymentID: String, by approver: Approver, signature: [UInt8], otpCode: String, comment: String, vault: OTPVault?,
    at now: Instant, txn: inout WriteTransaction
  ) throws -> ApprovalOutcome {
    guard let bytes = try txn.get(Array(paymentID.utf8), in: .payments) else { return .refused(.paymentNotFound(paymentID)) }
    var payment = try Payment(record: bytes)
    guard payment.status == .pendingApproval, var state = try ApprovalState.load(paymentID, in: txn) else {
      return .refused(.notPendingApproval(paymentID: paymentID, status: payment.status))
    }
    if !(now < state.deadline) {
      try Self.expire(&payment, at: now, txn: &txn)
      return .refused(.expired)
    }
    let identity = approver.principal.identity
    guard !payment.creator.utf8.elementsEqual(identity.utf8) else { return .refused(.ownPayment) }
    if let earlier = state.approvals.first(where: { $0.approver.utf8.elementsEqual(identity.utf8) }) {
      return .refused(.alreadyApproved(level: earlier.level))
    }
    guard let level = state.currentLevel else {
      return .refused(.notPendingApproval(paymentID: paymentID, status: payment.status))
    }
    let requirement = state.requirement.levels[level - 1]
    guard requirement.admits(approver.principal, amountMinor: payment.instruction.amount.minorUnits) else {
      return .refused(.notEligible(level: level, detail: Self.describe(requirement, amount: payment.instruction.amount)))
    }
    guard approver.principal.mayApprove(payment.instruction.amount) else {
      let limit = approver.principal.approvalLimits[payment.instruction.amount.currency]
        .map { "your approval limit is \(Money(minorUnits: $0, currency: payment.instruction.amount.currency))" }
        ?? "your approval limits do not include \(payment.instruction.amount.currency)"
      return .refused(.notEligible(level: level, detail: limit))
    }
    // The signature first: it needs the certificate's private key, so a stolen password alone
    // cannot burn one-time codes.
    let digest = ApprovalDigest.digest(
      paymentID: paymentID, instruction: payment.instruction, policyVersion: state.policyVersion, level: level)
    guard CertificateSignatures.isValid(signature, for: digest, by: approver.publicKey) else {
      return .refused(.badSignature)
    }
    if state.requirement.requireOTP {
      if let refusal = try Self.checkOTP(otpCode, principal: identity, vault: vault, at: now, txn: &txn) {
        return .refused(refusal)
      }
    }
    state.approvals.append(.init(
      approver: identity, level: level, time: now, signature: signature, certificate: approver.certificate, comment: comment))
    var details: AuditPayload = [
      "level": String(level),
      "approvals_at_level": String(state.approvals.filter { $0.level == level }.count),
      "required_at_level": String(requirement.required),
      "approval_digest": Hex.encode(digest),
      "signature_sha256": Hex.encode(Array(SHA256.hash(data: signature))),
      "certificate_sha256": Hex.encode(Array(SHA256.hash(data: approver.certificate))),
    ]
    if !comment.isEmpty { details["comment"] = comment }
    if state.currentLevel == nil {
      _ = payment.apply(.approvalsCompleted, at: now)
      try PendingApprovals.leave(paymentID, txn: &txn)
      try OutboxRecord.enqueue(payment, txn: &txn)
      try txn.putPayment(payment, key: Array(paymentID.utf8))
      details["status"] = payment.status.rawValue
    }
    try state.save(paymentID, txn: &txn)
    let receipt = try AuditJournal.append(&txn, at: now, principal: identity, action: "payment.approval", object: paymentID, details: details)
    return .approved(Approved(payment: payment, state: state, receipt: receipt))
  }

  /// Checks `code` for `principal`; on a failure counts it (and locks after
  /// ``Limits/maxOTPFailures``), journals it, and returns the refusal — written in the caller's
  /// transaction, which commits.
  static func checkOTP(
    _ code: String, principal: String, vault: OTPVault?, at now: Instant, txn: inout WriteTransaction
  ) throws -> ApprovalRefusal? {
    guard !code.isEmpty else { return .otpRequired }
    var state = try OTPState.load(principal, in: txn)
    if now < state.lockedUntil { return .otpLocked(until: state.lockedUntil) }
    guard let vault, let sealed = try txn.get(Array(principal.utf8), in: .otpSecrets) else { return .otpNotEnrolled }
    let secret = try vault.unseal(sealed, for: principal)
    if let step = TOTP.matchingStep(code, secret: secret, at: now), step > state.lastStep {
      state.lastStep = step
      state.failures = 0
      state.lockouts = 0
      try state.save(principal, txn: &txn)
      return nil
    }
    // Wrong, or a code already used (replayed): both count.
    state.failures += 1
    var locked: Instant?
    if state.failures >= Limits.maxOTPFailures {
      state.failures = 0
      state.lockouts += 1
      // Lockout after lockout with no right code between them: a guesser, not a typo. Locked
      // until an admin enrols the principal's OTP again.
      state.lockedUntil =
        state.lockouts >= Limits.maxOTPLockouts ? OTPState.untilReenrolled : now.adding(milliseconds: Limits.otpLockoutSeconds * 1000)
      locked = state.lockedUntil
    }
    try state.save(principal, txn: &txn)
    let untilReenrolled = locked == OTPState.untilReenrolled
    try AuditJournal.append(
      &txn, at: now, principal: principal, action: locked == nil ? "otp.failed" : "otp.locked", object: principal,
      details: locked.map {
        untilReenrolled
          ? ["locked_until": "re-enrolment", "lockouts": String(state.lockouts)]
          : ["locked_until_ms": String($0.millisecondsSinceEpoch), "lockouts": String(state.lockouts)]
      } ?? ["failures": String(state.failures)])
    if let locked {
      try AlertLog.raise(
        &txn, at: now, severity: untilReenrolled ? .critical : .warning, kind: .authenticationFailure,
        message: untilReenrolled
          ? "approvals of '\(principal)' locked until an admin enrols their OTP again, after \(state.lockouts) lockouts in a row "
            + "(\(state.lockouts * Limits.maxOTPFailures) wrong one-time passwords): someone may be guessing with their certificate"
          : "approvals of '\(principal)' locked until \(locked.isoTimestamp) after \(Limits.maxOTPFailures) wrong one-time passwords",
        details: ["principal": principal])
    }
    return .otpRejected(failures: state.failures, lockedUntil: locked)
  }

  // MARK: Reject, expire

  /// Rejects a payment waiting for approval (terminal; the reservation is released), by an
  /// approver who could approve its current level, never its creator.
  public func reject(
    _ paymentID: String, by principal: Principal, reason: String, requestID: String = ""
  ) async throws -> (Payment, JournalReceipt) {
    let now = self.now()
    return try await self.writer.write { txn in
      let requestKey = requestID.isEmpty
        ? nil : DecisionRequest.key(principal: principal.identity, decision: .reject, requestID: requestID)
      if let requestKey, let earlier = try DecisionRequest.load(requestKey, in: txn) {
        guard earlier.paymentID == paymentID else {
          throw ApprovalRefusal.requestIDReused(requestID: requestID, paymentID: earlier.paymentID)
        }
        return try Self.replayed(earlier, in: txn)
      }
      guard let bytes = try txn.get(Array(paymentID.utf8), in: .payments) else { throw ApprovalRefusal.paymentNotFound(paymentID) }
      var payment = try Payment(record: bytes)
      guard payment.status == .pendingApproval, let state = try ApprovalState.load(paymentID, in: txn),
        let level = state.currentLevel
      else { throw ApprovalRefusal.notPendingApproval(paymentID: paymentID, status: payment.status) }
      guard !payment.creator.utf8.elementsEqual(principal.identity.utf8) else { throw ApprovalRefusal.ownPayment }
      let requirement = state.requirement.levels[level - 1]
      guard requirement.admits(principal, amountMinor: payment.instruction.amount.minorUnits) else {
        throw ApprovalRefusal.notEligible(level: level, detail: Self.describe(requirement, amount: payment.instruction.amount))
      }
      _ = payment.apply(.rejectedByApprover, at: now, reason: reason)
      try PendingApprovals.leave(paymentID, txn: &txn)
      try Reservations.releaseIfDue(payment, txn: &txn)
      try txn.putPayment(payment, key: Array(paymentID.utf8))
      let receipt = try AuditJournal.append(
        &txn, at: now, principal: principal.identity, action: "payment.rejected", object: paymentID,
        details: ["reason": reason, "level": String(level)])
      if let requestKey { try DecisionRequest.save(requestKey, paymentID: paymentID, sequence: receipt.sequence, txn: &txn) }
      return (payment, receipt)
    }
  }

  static func expire(_ payment: inout Payment, at now: Instant, txn: inout WriteTransaction) throws {
    guard case .success = payment.apply(.approvalWindowExpired, at: now, reason: "the approval window passed") else { return }
    try PendingApprovals.leave(payment.id, txn: &txn)
    try Reservations.releaseIfDue(payment, txn: &txn)
    try txn.putPayment(payment)
    try AuditJournal.append(&txn, at: now, principal: "system", action: "payment.expired", object: payment.id)
  }

  /// Expires payments whose approval window has passed, at most `limit` per call; returns how
  /// many. Index entries of payments that left `pending_approval` otherwise are removed.
  @discardableResult
  public func expireOverdue(limit: Int = Limits.maxListScanRecords) async throws -> Int {
    let now = self.now()
    return try await self.writer.write { txn in
      var due: [[UInt8]] = []
      try txn.scan(.approvalDeadlines, from: nil) { key, _ in
        guard due.count < limit else { return false }
        var reader = RecordReader(key)
        guard try reader.readInt64() <= now.millisecondsSinceEpoch else { return false }
        due.append(key)
        return true
      }
      var expired = 0
      for key in due {
        let paymentID = String(decoding: key.dropFirst(8), as: UTF8.self)
        _ = try txn.delete(key, in: .approvalDeadlines)
        guard let bytes = try txn.get(Array(paymentID.utf8), in: .payments) else { continue }
        var payment = try Payment(record: bytes)
        guard payment.status == .pendingApproval else { continue }
        try Self.expire(&payment, at: now, txn: &txn)
        expired += 1
      }
      return expired
    }
  }

  // MARK: Read

  /// The approval state of a payment, if it needed approvals.
  public func approvalState(_ paymentID: String) throws -> ApprovalState? {
    try self.store.withReadTransaction { try ApprovalState.load(paymentID, in: $0) }
  }

  /// A payment with its approval state and its risk decision, read in one snapshot (so a
  /// `GetPayment` never shows a state from before an approval beside the approval itself).
  public func paymentWithDecisions(_ paymentID: String) throws -> (Payment, ApprovalState?, RiskDecision?)? {
    try self.store.withReadTransaction { txn in
      let key = Array(paymentID.utf8)
      guard let payment = try txn.get(key, in: .payments).map(Payment.init(record:)) else { return nil }
      let decision = try txn.get(key, in: .riskDecisions).map { try RiskDecision.decode($0).0 }
      return (payment, try ApprovalState.load(paymentID, in: txn), decision)
    }
  }

  /// What the risk rules decided when the payment was created (nil: no rules were in force).
  public func riskDecision(_ paymentID: String) throws -> RiskDecision? {
    try self.store.withReadTransaction { txn in
      try txn.get(Array(paymentID.utf8), in: .riskDecisions).map { try RiskDecision.decode($0).0 }
    }
  }

  /// Payments `principal` may approve now (never their own, nor ones they approved), oldest
  /// first, after `afterID`; reads at most `scanLimit` pending payments per call.
  public func pendingApprovals(
    for principal: Principal, after afterID: String?, limit: Int, scanLimit: Int = Limits.maxListScanRecords
  ) throws -> (payments: [(Payment, ApprovalState)], resumeAfter: String?) {
    try self.store.withReadTransaction { txn in
      var found: [(Payment, ApprovalState)] = []
      var scanned = 0
      var lastRead: String?
      var more = false
      try txn.scan(.pendingApprovals, from: afterID.map { Array($0.utf8) + [0] }) { key, _ in
        if scanned == scanLimit || found.count == limit {
          more = true
          return false
        }
        scanned += 1
        let id = String(decoding: key, as: UTF8.self)
        lastRead = id
        guard let bytes = try txn.get(key, in: .payments), let state = try ApprovalState.load(id, in: txn) else { return true }
        let payment = try Payment(record: bytes)
        guard payment.status == .pendingApproval, let level = state.currentLevel,
          !payment.creator.utf8.elementsEqual(principal.identity.utf8), !state.hasApproved(principal.identity),
          state.requirement.levels[level - 1].admits(principal, amountMinor: payment.instruction.amount.minorUnits),
          principal.mayApprove(payment.instruction.amount)
        else { return true }
        found.append((payment, state))
        return true
      }
      return (found, more ? lastRead : nil)
    }
  }

  // MARK: Release check

  /// Verifies, from the stored bytes alone, that a payment about to be handed to the bank was
  /// approved as its pinned requirement demands: every stored approval's signature over the
  /// digest of the *stored* instruction, by the stored certificate; distinct approvers, none
  /// the creator, enough at every level. And against the payment's `payment.created` journal
  /// entry (hash-chained, so not rewritten without breaking the chain or a signed checkpoint):
  /// the stored instruction is the one created, and a payment created needing approvals still
  /// has its approval record. Nil when it holds (or the payment needed none).
  static func releaseProblem(_ payment: Payment, in txn: some ReadableTransaction) throws -> String? {
    let created = try AuditJournal.entries(about: payment.id, limit: 1, in: txn).first.flatMap { entry in
      entry.action == "payment.created" ? (sequence: entry.sequence, details: entry.details) : nil
    }
    guard let state = try ApprovalState.load(payment.id, in: txn) else {
      if let created, created.details["policy_rule"] != nil {
        return "its approval record is missing, but it was created needing approvals (journal entry \(created.sequence))"
      }
      return Self.instructionProblem(payment, created: created)
    }
    var seen = Set<String>()
    for (index, approval) in state.approvals.enumerated() {
      guard seen.insert(approval.approver).inserted else { return "approval \(index + 1): \(approval.approver) approved twice" }
      guard !approval.approver.utf8.elementsEqual(payment.creator.utf8) else { return "approval \(index + 1) is by the creator" }
      guard (1...state.requirement.levels.count).contains(approval.level) else { return "approval \(index + 1) names no level of the requirement" }
      guard let certificate = try? Certificate(derEncoded: approval.certificate) else {
        return "approval \(index + 1): the stored certificate does not parse"
      }
      let digest = ApprovalDigest.digest(
        paymentID: payment.id, instruction: payment.instruction, policyVersion: state.policyVersion, level: approval.level)
      guard CertificateSignatures.isValid(approval.signature, for: digest, by: certificate.publicKey) else {
        return "approval \(index + 1) by \(approval.approver): the signature does not verify against the stored instruction"
      }
    }
    if let level = state.currentLevel { return "level \(level) of the requirement is not complete" }
    return Self.instructionProblem(payment, created: created)
  }

  /// Whether the stored instruction is the one its creation journaled (entries of builds that
  /// journaled no digest are not checked).
  private static func instructionProblem(_ payment: Payment, created: (sequence: UInt64, details: [String: String])?) -> String? {
    guard let created, let journaled = created.details["instruction_sha256"] else { return nil }
    guard journaled == IdempotencyRecord.fingerprint(payment.instruction.canonicalRecord) else {
      return "the stored instruction is not the one journaled at its creation (journal entry \(created.sequence))"
    }
    return nil
  }

  static func describe(_ level: ApprovalPolicy.Level, amount: Money) -> String {
    var who: [String] = level.roles.map { "role \($0.rawValue)" }
    who += level.principals.prefix(5).map { "principal \(LogText.prefix($0))" }
    var text = "it needs " + who.joined(separator: " or ")
    if let limit = level.maxAmountMinor {
      text += ", for amounts up to \(Money(minorUnits: limit, currency: amount.currency))"
    }
    return text
  }
}

extension PaymentLedger {
  /// Stores a new OTP secret for `principal`, sealed, replacing any earlier one (its codes stop
  /// working at once), resets its OTP state, and journals the enrolment (never the secret).
  /// What an enrolment did: the secret stored, or refused (and the refusal journaled).
  public enum OTPEnrolment: Sendable {
    case enrolled(JournalReceipt)
    /// An admin enrolling themselves: their certificate's key would then be the only thing
    /// between an attacker and both factors of their own approvals. Another admin enrols them.
    case refusedSelfEnrolment(JournalReceipt)
  }

  public func enrollOTP(
    _ principal: String, secret: [UInt8], vault: OTPVault, by admin: String, at now: Instant
  ) async throws -> OTPEnrolment {
    if admin.utf8.elementsEqual(principal.utf8) {
      return .refusedSelfEnrolment(
        try await self.writer.write { txn in
          try AuditJournal.append(
            &txn, at: now, principal: admin, action: "otp.enrol_refused", object: principal, details: ["reason": "self_enrolment"])
        })
    }
    let sealed = try vault.seal(secret, for: principal)
    return .enrolled(try await self.writer.write { txn in
      let replaced = try txn.get(Array(principal.utf8), in: .otpSecrets) != nil
      try txn.put(Array(principal.utf8), sealed, in: .otpSecrets)
      try OTPState().save(principal, txn: &txn)
      return try AuditJournal.append(
        &txn, at: now, principal: admin, action: "otp.enrolled", object: principal,
        details: ["replaced": replaced ? "true" : "false"])
    })
  }
}

extension PaymentLedger {
  /// Schema 1 → 2 for the daemon's store: the audit records become the journal's chain
  /// (``AuditJournal/migration``), and payments left in `pending_approval` by earlier builds —
  /// which waited for approvals that did not exist yet — get the requirement of the default
  /// policy (one approver, with OTP), a window from the migration, and a place in the approval
  /// queue. Without this they could be neither approved nor expired, only cancelled.
  public static func schemaMigration(now: @escaping @Sendable () -> Instant) -> SchemaMigration {
    SchemaMigration(from: 1, description: "chain the audit records; give waiting payments an approval requirement") { txn in
      try AuditJournal.migration.apply(&txn)
      var waiting: [Payment] = []
      try txn.scan(.payments, from: nil) { _, value in
        let payment = try Payment(record: value)
        if payment.status == .pendingApproval { waiting.append(payment) }
        return true
      }
      let time = now()
      let requirement = ApprovalPolicy.Requirement(
        levels: [ApprovalPolicy.Level(required: 1, roles: [.approver])], windowSeconds: Limits.defaultApprovalWindowSeconds,
        requireOTP: true)
      for payment in waiting where try ApprovalState.load(payment.id, in: txn) == nil {
        let state = ApprovalState(
          policyVersion: 0, ruleID: "migrated-from-schema-1", requirement: requirement,
          deadline: time.adding(milliseconds: requirement.windowSeconds * 1000))
        try state.save(payment.id, txn: &txn)
        try PendingApprovals.enter(payment.id, deadline: state.deadline, txn: &txn)
        try AuditJournal.append(
          &txn, at: time, principal: "system", action: "payment.approval_required", object: payment.id,
          details: [
            "policy_version": "0", "policy_rule": state.ruleID,
            "approval_deadline_ms": String(state.deadline.millisecondsSinceEpoch), "migrated_from_schema": "1",
          ])
      }
    }
  }
}
