import BankLinkCore
import Testing

@Suite("Payment state machine")
struct PaymentStateMachineTests {
  static func apply(_ events: [PaymentEvent], from state: PaymentStatus = .pendingRisk) -> PaymentStatus? {
    var current = state
    for event in events {
      guard case .success(let next) = PaymentStateMachine.apply(event, to: current) else { return nil }
      current = next
    }
    return current
  }

  @Test("the happy paths")
  func happyPaths() {
    #expect(Self.apply([.riskCleared(needsApproval: true), .approvalsCompleted, .submitted, .bankAccepted, .bankSettled]) == .settled)
    #expect(Self.apply([.riskCleared(needsApproval: false), .submitted, .bankSettled]) == .settled)
    #expect(Self.apply([.riskBlocked]) == .blocked)
    #expect(Self.apply([.riskCleared(needsApproval: true), .rejectedByApprover]) == .rejected)
    #expect(Self.apply([.riskCleared(needsApproval: true), .approvalWindowExpired]) == .expired)
    #expect(Self.apply([.riskCleared(needsApproval: false), .submitted, .bankRejected]) == .failed)
    #expect(Self.apply([.riskCleared(needsApproval: false), .submitted, .bankSettled, .returned]) == .returned)
  }

  @Test("cancel only before submission")
  func cancel() {
    for state in PaymentStatus.allCases {
      let result = PaymentStateMachine.apply(.cancelled, to: state)
      if state.isCancellable {
        #expect(result == .success(.cancelled), "\(state)")
      } else {
        #expect(result == .failure(.init(from: state, event: .cancelled)), "\(state)")
      }
    }
  }

  @Test("duplicate and out-of-order bank reports are idempotent")
  func tolerantReports() {
    let submitted = Self.apply([.riskCleared(needsApproval: false), .submitted])
    #expect(submitted == .submitted)
    // Settled arrives before accepted, then accepted and settled again.
    #expect(Self.apply([.bankSettled, .bankAccepted, .bankSettled, .submitted], from: .submitted) == .settled)
    // A rejection repeated.
    #expect(Self.apply([.bankRejected, .bankRejected, .bankAccepted], from: .submitted) == .failed)
  }

  @Test("terminal states refuse lifecycle events; reservations are held only while in flight")
  func terminal() {
    for state in PaymentStatus.allCases where state.isTerminal {
      #expect(!state.holdsReservation)
      for event in [PaymentEvent.approvalsCompleted, .riskCleared(needsApproval: false), .cancelled] {
        #expect((try? PaymentStateMachine.apply(event, to: state).get()) == nil, "\(state) accepted \(event)")
      }
    }
    #expect(!PaymentStatus.settled.holdsReservation)
    #expect(PaymentStatus.submitted.holdsReservation)
  }

  @Test("pain.002 codes map to events")
  func bankCodes() {
    #expect(PaymentStateMachine.event(forBankStatus: "ACTC") == .bankAccepted)
    #expect(PaymentStateMachine.event(forBankStatus: "acsp") == .bankAccepted)
    #expect(PaymentStateMachine.event(forBankStatus: "ACSC") == .bankSettled)
    #expect(PaymentStateMachine.event(forBankStatus: "RJCT") == .bankRejected)
    #expect(PaymentStateMachine.event(forBankStatus: "PDNG") == nil)
  }
}
