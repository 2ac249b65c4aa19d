import BankLinkCore
import BankLinkStore

/// A payment's approval state (`approvals`, by payment id): the requirement it was pinned to at
/// creation and the approvals given so far, each with the signature and the certificate that
/// made it, so that the release check can verify them again from the stored bytes alone.
public struct ApprovalState: Sendable, Hashable {
  public var policyVersion: UInt64
  public var ruleID: String
  public var requirement: ApprovalPolicy.Requirement
  public var deadline: Instant
  public var approvals: [Approval]

  public struct Approval: Sendable, Hashable {
    public var approver: String
    /// 1-based.
    public var level: Int
    public var time: Instant
    public var signature: [UInt8]
    /// DER of the certificate the approver connected with: its key made the signature.
    public var certificate: [UInt8]
    public var comment: String
  }

  /// The level (1-based) still needing approvals, or nil when every level is complete.
  public var currentLevel: Int? {
    for (index, level) in self.requirement.levels.enumerated() {
      if self.approvals.filter({ $0.level == index + 1 }).count < level.required { return index + 1 }
    }
    return nil
  }

  public func hasApproved(_ identity: String) -> Bool {
    self.approvals.contains { $0.approver.utf8.elementsEqual(identity.utf8) }
  }

  static let recordFormat: UInt8 = 1

  var record: [UInt8] {
    var writer = RecordWriter(capacity: 256 + self.approvals.count * 800)
    writer.write(Self.recordFormat)
    writer.write(self.policyVersion)
    writer.write(self.ruleID)
    writer.write(UInt32(self.requirement.levels.count))
    for level in self.requirement.levels {
      writer.write(UInt32(level.required))
      writer.write(UInt32(level.roles.count))
      for role in level.roles { writer.write(role.rawValue) }
      writer.write(UInt32(level.principals.count))
      for principal in level.principals { writer.write(principal) }
      writer.write(level.maxAmountMinor ?? -1)
    }
    writer.write(self.requirement.windowSeconds)
    writer.write(UInt8(self.requirement.requireOTP ? 1 : 0))
    writer.write(self.deadline.millisecondsSinceEpoch)
    writer.write(UInt32(self.approvals.count))
    for approval in self.approvals {
      writer.write(approval.approver)
      writer.write(UInt32(approval.level))
      writer.write(approval.time.millisecondsSinceEpoch)
      writer.write(UInt32(approval.signature.count))
      writer.writeRaw(approval.signature)
      writer.write(UInt32(approval.certificate.count))
      writer.writeRaw(approval.certificate)
      writer.write(approval.comment)
    }
    return writer.bytes
  }

  init(
    policyVersion: UInt64, ruleID: String, requirement: ApprovalPolicy.Requirement, deadline: Instant, approvals: [Approval] = []
  ) {
    self.policyVersion = policyVersion
    self.ruleID = ruleID
    self.requirement = requirement
    self.deadline = deadline
    self.approvals = approvals
  }

  init(record: [UInt8]) throws {
    var reader = RecordReader(record)
    guard try reader.readUInt8() == Self.recordFormat else {
      throw StoreError(code: .corrupted, message: "unknown approval record format")
    }
    self.policyVersion = try reader.readUInt64()
    self.ruleID = try reader.readString()
    var levels: [ApprovalPolicy.Level] = []
    for _ in 0..<min(Int(try reader.readUInt32()), Limits.maxApprovalLevels) {
      let required = Int(try reader.readUInt32())
      var roles: [Role] = []
      for _ in 0..<min(Int(try reader.readUInt32()), Role.allCases.count) {
        guard let role = Role(rawValue: try reader.readString()) else {
          throw StoreError(code: .corrupted, message: "approval record names an unknown role")
        }
        roles.append(role)
      }
      var principals: [String] = []
      for _ in 0..<min(Int(try reader.readUInt32()), Limits.maxPolicyMatchValues) { principals.append(try reader.readString()) }
      let limit = try reader.readInt64()
      levels.append(.init(required: required, roles: roles, principals: principals, maxAmountMinor: limit < 0 ? nil : limit))
    }
    let window = try reader.readInt64()
    let otp = try reader.readUInt8() == 1
    self.requirement = .init(levels: levels, windowSeconds: window, requireOTP: otp)
    self.deadline = Instant(millisecondsSinceEpoch: try reader.readInt64())
    var approvals: [Approval] = []
    for _ in 0..<min(Int(try reader.readUInt32()), Limits.maxApprovalLevels * Limits.maxApprovalsPerLevel) {
      let approver = try reader.readString()
      let level = Int(try reader.readUInt32())
      let time = Instant(millisecondsSinceEpoch: try reader.readInt64())
      let signature = try reader.readBytes(Int(try reader.readUInt32()))
      let certificate = try reader.readBytes(Int(try reader.readUInt32()))
      approvals.append(.init(
        approver: approver, level: level, time: time, signature: signature, certificate: certificate, comment: try reader.readString()))
    }
    self.approvals = approvals
    try reader.finish()
  }

  static func load(_ paymentID: String, in txn: some ReadableTransaction) throws -> ApprovalState? {
    try txn.get(Array(paymentID.utf8), in: .approvals).map(ApprovalState.init(record:))
  }

  func save(_ paymentID: String, txn: inout WriteTransaction) throws {
    try txn.put(Array(paymentID.utf8), self.record, in: .approvals)
  }
}

/// The indexes of payments waiting for approval: `pending_approvals` (payment id → empty, in
/// creation order, for `ListPendingApprovals`) and `approval_deadlines` (deadline, payment id →
/// empty, for expiry). Both are left when a payment leaves `pending_approval`, however it leaves.
enum PendingApprovals {
  static func deadlineKey(_ deadline: Instant, _ paymentID: String) -> [UInt8] {
    var writer = RecordWriter(capacity: 8 + paymentID.utf8.count)
    writer.write(deadline.millisecondsSinceEpoch)
    writer.writeRaw(Array(paymentID.utf8))
    return writer.bytes
  }

  static func enter(_ paymentID: String, deadline: Instant, txn: inout WriteTransaction) throws {
    try txn.put(Array(paymentID.utf8), [], in: .pendingApprovals)
    try txn.put(Self.deadlineKey(deadline, paymentID), [], in: .approvalDeadlines)
  }

  static func leave(_ paymentID: String, txn: inout WriteTransaction) throws {
    guard try txn.delete(Array(paymentID.utf8), in: .pendingApprovals) else { return }
    if let state = try ApprovalState.load(paymentID, in: txn) {
      _ = try txn.delete(Self.deadlineKey(state.deadline, paymentID), in: .approvalDeadlines)
    }
  }
}

/// One-time-password state per principal (`otp_state`): the last time step accepted (a code is
/// accepted once: never a step at or before it), failures in a row, and a lockout.
struct OTPState: Sendable, Hashable {
  var lastStep: Int64 = Int64.min
  var failures: Int = 0
  var lockedUntil: Instant = Instant(millisecondsSinceEpoch: 0)
  /// Lockouts in a row without a right code between them (``Limits/maxOTPLockouts``).
  var lockouts: Int = 0

  /// `lockedUntil` of approvals locked until the OTP is enrolled again (which resets the state).
  static let untilReenrolled = Instant(millisecondsSinceEpoch: Int64.max)

  /// 1: last step, failures, locked until; 2: and the lockouts in a row.
  static let recordFormat: UInt8 = 2

  static func load(_ principal: String, in txn: some ReadableTransaction) throws -> OTPState {
    guard let bytes = try txn.get(Array(principal.utf8), in: .otpState) else { return OTPState() }
    var reader = RecordReader(bytes)
    let format = try reader.readUInt8()
    guard format == 1 || format == Self.recordFormat else { throw StoreError(code: .corrupted, message: "unknown OTP state format") }
    var state = OTPState(
      lastStep: try reader.readInt64(), failures: Int(try reader.readUInt32()),
      lockedUntil: Instant(millisecondsSinceEpoch: try reader.readInt64()))
    if format == 2 { state.lockouts = Int(try reader.readUInt32()) }
    try reader.finish()
    return state
  }

  func save(_ principal: String, txn: inout WriteTransaction) throws {
    var writer = RecordWriter(capacity: 32)
    writer.write(Self.recordFormat)
    writer.write(self.lastStep)
    writer.write(UInt32(self.failures))
    writer.write(self.lockedUntil.millisecondsSinceEpoch)
    writer.write(UInt32(clamping: self.lockouts))
    try txn.put(Array(principal.utf8), writer.bytes, in: .otpState)
  }
}

/// The `request_id` of an approval or a rejection (`idempotency`, beside the payments' keys):
/// a retry after a lost reply gets the original answer instead of "already approved".
///
/// Key: (principal, 0x00, 0x01, decision, 0x00, request id). The 0x01 cannot start a payment's
/// idempotency key (printable ASCII only), so the two never collide. Value: format, payment id,
/// and the journal sequence of the decision, whose receipt a replay returns.
enum DecisionRequest {
  enum Decision: String, Sendable {
    case approve, reject
  }

  static let recordFormat: UInt8 = 1

  static func key(principal: String, decision: Decision, requestID: String) -> [UInt8] {
    Array(principal.utf8) + [0, 1] + Array(decision.rawValue.utf8) + [0] + Array(requestID.utf8)
  }

  /// The payment and journal sequence an earlier request with this id decided, if any.
  static func load(_ key: [UInt8], in txn: some ReadableTransaction) throws -> (paymentID: String, sequence: UInt64)? {
    guard let bytes = try txn.get(key, in: .idempotency) else { return nil }
    var reader = RecordReader(bytes)
    guard try reader.readUInt8() == Self.recordFormat else {
      throw StoreError(code: .corrupted, message: "unknown decision request record format")
    }
    let found = (paymentID: try reader.readString(), sequence: try reader.readUInt64())
    try reader.finish()
    return found
  }

  static func save(_ key: [UInt8], paymentID: String, sequence: UInt64, txn: inout WriteTransaction) throws {
    var writer = RecordWriter(capacity: 16 + paymentID.utf8.count)
    writer.write(Self.recordFormat)
    writer.write(paymentID)
    writer.write(sequence)
    try txn.put(key, writer.bytes, in: .idempotency)
  }
}
