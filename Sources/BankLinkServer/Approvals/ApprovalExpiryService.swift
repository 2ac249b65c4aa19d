import BankLinkCore
import Logging
import ServiceLifecycle

/// Expires payments whose approval window passed (releasing their reservations), every
/// ``Limits/approvalExpiryPollMilliseconds``. An approval arriving after the deadline but before
/// this pass expires the payment itself: the deadline holds to the millisecond either way.
public final class ApprovalExpiryService: Service {
  let ledger: PaymentLedger
  let logger: Logger

  public init(ledger: PaymentLedger, logger: Logger) {
    self.ledger = ledger
    self.logger = logger
  }

  public func run() async throws {
    while !Task.isCancelled && !Task.isShuttingDownGracefully {
      do {
        let expired = try await self.ledger.expireOverdue()
        if expired > 0 { self.logger.info("payments expired: approval window passed", metadata: ["count": "\(expired)"]) }
      } catch {
        self.logger.error("expiring overdue approvals failed; will retry", metadata: ["error": "\(error)"])
      }
      try? await cancelWhenGracefulShutdown {
        try await Task.sleep(for: .milliseconds(Limits.approvalExpiryPollMilliseconds))
      }
    }
  }
}
