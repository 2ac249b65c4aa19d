/// A payment order as the daemon records it.
public struct Payment: Sendable, Hashable {
  /// Time-ordered id (`pay-<creation ms>-<sequence>`): lexical order is creation order.
  public var id: String
  public var instruction: PaymentInstruction
  public var status: PaymentStatus
  /// Identity of the principal that created the payment.
  public var creator: String
  public var idempotencyKey: String
  /// ISO 20022 EndToEndId sent to the bank; unique per payment.
  public var endToEndID: String
  public var batchID: String
  public var createdAt: Instant
  public var updatedAt: Instant
  /// Why the payment is in its state (cancellation reason, bank reason text, …).
  public var statusReason: String
  /// The bank's pain.002 status code, verbatim (empty until the bank reports).
  public var bankStatusCode: String
  public var bankReasonCode: String

  public init(
    id: String, instruction: PaymentInstruction, status: PaymentStatus, creator: String, idempotencyKey: String,
    endToEndID: String, batchID: String = "", createdAt: Instant, updatedAt: Instant, statusReason: String = "",
    bankStatusCode: String = "", bankReasonCode: String = ""
  ) {
    self.id = id
    self.instruction = instruction
    self.status = status
    self.creator = creator
    self.idempotencyKey = idempotencyKey
    self.endToEndID = endToEndID
    self.batchID = batchID
    self.createdAt = createdAt
    self.updatedAt = updatedAt
    self.statusReason = statusReason
    self.bankStatusCode = bankStatusCode
    self.bankReasonCode = bankReasonCode
  }

  /// Applies `event` through the state machine, stamping the time; the payment is unchanged
  /// when the transition is refused.
  public mutating func apply(_ event: PaymentEvent, at time: Instant, reason: String = "") -> Result<PaymentStatus, PaymentTransitionError> {
    let result = PaymentStateMachine.apply(event, to: self.status)
    if case .success(let next) = result, next != self.status {
      self.status = next
      self.updatedAt = time
      if !reason.isEmpty { self.statusReason = reason }
    }
    return result
  }
}
