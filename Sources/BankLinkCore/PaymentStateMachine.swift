/// Lifecycle state of a payment. The legal transitions are decided here and nowhere else.
///
/// ```
/// pending_risk → pending_approval → approved → submitting → submitted → accepted → settled → returned
///      │               │  │  │          │            │           │           │
///      ├→ blocked      │  │  └→ expired  │            └→ failed   └→ failed   └→ (settled is final
///      └→ approved     │  └→ rejected    └→ failed                               unless returned)
///                      └→ cancelled (also from pending_risk and approved, never once claimed)
/// ```
///
/// `approved → blocked` too: the check before release found the stored approvals no longer
/// verify against the stored instruction.
///
/// `submitting` is the claim: the submitter commits it *before* it calls the bank, so a cancel
/// serialised after the claim sees that the instruction may already be with the bank and is
/// refused, and a cancel serialised before it makes the submitter discard the entry.
public enum PaymentStatus: String, Sendable, Hashable, CaseIterable {
  case pendingRisk = "pending_risk"
  case pendingApproval = "pending_approval"
  case approved
  /// Claimed for submission: the instruction is on its way to the bank (or already there; the
  /// acknowledgement has not been recorded). No longer cancellable.
  case submitting
  case submitted
  case accepted
  case settled
  case rejected
  case blocked
  case cancelled
  case failed
  case returned
  case expired

  /// Terminal states release the funds reserved for the payment.
  public var isTerminal: Bool {
    switch self {
    case .rejected, .blocked, .cancelled, .failed, .returned, .expired: true
    // Settled is not terminal: a settled payment can still be returned.
    default: false
    }
  }

  /// Whether the payment's amount is still reserved against the account's available balance:
  /// from creation until the bank books it (settled) or the payment ends without paying.
  public var holdsReservation: Bool {
    switch self {
    case .pendingRisk, .pendingApproval, .approved, .submitting, .submitted, .accepted: true
    case .settled, .rejected, .blocked, .cancelled, .failed, .returned, .expired: false
    }
  }

  /// Whether the payment may still be cancelled: only before the submitter claims it for the
  /// bank (see ``PaymentStatus/submitting``).
  public var isCancellable: Bool {
    switch self {
    case .pendingRisk, .pendingApproval, .approved: true
    default: false
    }
  }
}

/// Something that happens to a payment.
public enum PaymentEvent: Sendable, Hashable {
  /// The risk evaluator allowed the payment; `needsApproval` says whether policy asks for
  /// approvals before release.
  case riskCleared(needsApproval: Bool)
  case riskBlocked
  case approvalsCompleted
  case rejectedByApprover
  case cancelled
  case approvalWindowExpired
  /// The check before release found the stored approvals no longer verify (the instruction or
  /// an approval was altered after approval): the payment is never sent.
  case releaseCheckFailed
  /// The submitter claimed the payment for delivery, in a commit before the bank call.
  case claimedForSubmission
  /// The outbox delivered the instruction to the bank.
  case submitted
  /// pain.002 ACTC / ACSP / ACWC: accepted for execution.
  case bankAccepted
  /// pain.002 ACSC (or a statement match): booked.
  case bankSettled
  /// pain.002 RJCT.
  case bankRejected
  /// The beneficiary's bank sent the money back.
  case returned
}

/// A refused transition: the payment stays where it is.
public struct PaymentTransitionError: Error, Sendable, Hashable, CustomStringConvertible {
  public var from: PaymentStatus
  public var event: PaymentEvent

  public init(from: PaymentStatus, event: PaymentEvent) {
    self.from = from
    self.event = event
  }

  public var description: String { "a payment in state \(self.from.rawValue) cannot take event \(self.event)" }
}

public enum PaymentStateMachine {
  /// The state after `event`, or the refusal. Bank reports may arrive late, twice or out of
  /// order: an event that a later state already implies (e.g. `bankAccepted` after `settled`)
  /// leaves the state unchanged rather than failing, so applying reports is idempotent.
  public static func apply(_ event: PaymentEvent, to state: PaymentStatus) -> Result<PaymentStatus, PaymentTransitionError> {
    let refused = Result<PaymentStatus, PaymentTransitionError>.failure(.init(from: state, event: event))
    switch (state, event) {
    case (.pendingRisk, .riskCleared(let needsApproval)):
      return .success(needsApproval ? .pendingApproval : .approved)
    case (.pendingRisk, .riskBlocked):
      return .success(.blocked)
    case (.pendingApproval, .approvalsCompleted):
      return .success(.approved)
    case (.pendingApproval, .rejectedByApprover):
      return .success(.rejected)
    case (.pendingApproval, .approvalWindowExpired):
      return .success(.expired)
    case (.approved, .releaseCheckFailed):
      return .success(.blocked)
    case (.pendingRisk, .cancelled), (.pendingApproval, .cancelled), (.approved, .cancelled):
      return .success(.cancelled)
    case (.approved, .claimedForSubmission), (.submitting, .claimedForSubmission):
      return .success(.submitting)
    case (.approved, .submitted), (.submitting, .submitted):
      // From approved only for a report proving the bank holds a payment claimed by an
      // earlier build (which sent without claiming).
      return .success(.submitted)
    case (.submitting, .bankAccepted):
      return .success(.accepted)
    case (.submitting, .bankSettled):
      return .success(.settled)
    case (.submitting, .bankRejected):
      return .success(.failed)

    // Bank reports, tolerant of duplicates and reordering.
    case (.submitted, .bankAccepted), (.accepted, .bankAccepted):
      return .success(.accepted)
    case (.settled, .bankAccepted), (.returned, .bankAccepted), (.failed, .bankAccepted):
      return .success(state)
    case (.submitted, .bankSettled), (.accepted, .bankSettled), (.settled, .bankSettled):
      return .success(.settled)
    case (.returned, .bankSettled):
      return .success(.returned)
    case (.submitted, .bankRejected), (.accepted, .bankRejected), (.failed, .bankRejected):
      return .success(.failed)
    case (.settled, .returned), (.returned, .returned):
      return .success(.returned)
    case (.submitted, .submitted), (.accepted, .submitted), (.settled, .submitted), (.failed, .submitted),
      (.returned, .submitted):
      // A resubmission acknowledged after a later report: nothing to change.
      return .success(state)
    default:
      return refused
    }
  }

  /// Maps an ISO 20022 pain.002 transaction status code to the event it means, or nil for
  /// codes that carry no lifecycle change (e.g. PDNG, RCVD).
  public static func event(forBankStatus code: String) -> PaymentEvent? {
    switch code.uppercased() {
    case "ACTC", "ACCP", "ACSP", "ACWC", "ACFC": .bankAccepted
    case "ACSC", "ACCC": .bankSettled
    case "RJCT": .bankRejected
    default: nil
    }
  }
}
