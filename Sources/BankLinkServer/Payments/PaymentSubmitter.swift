import BankLinkBanks
import BankLinkCore
import Logging
import ServiceLifecycle

/// Delivers approved payments to the bank exactly once and applies the bank's status reports.
///
/// Exactly once rests on three facts: the outbox entry is written in the same transaction that
/// approves the payment; it is removed only after the bank acknowledged it; and every retry
/// (after a timeout, an outage or a crash) reuses the entry's message id and the payment's
/// EndToEndId, which the bank deduplicates. And nothing is sent that a cancel could still
/// stop: each payment is claimed (`submitting`) in a committed write before the bank call.
public final class PaymentSubmitter: Service {
  let ledger: PaymentLedger
  let connector: any PaymentInitiationConnector
  let intervalMilliseconds: Int64
  let logger: Logger

  public init(ledger: PaymentLedger, connector: any PaymentInitiationConnector, intervalMilliseconds: Int64, logger: Logger) {
    self.ledger = ledger
    self.connector = connector
    self.intervalMilliseconds = intervalMilliseconds
    self.logger = logger
  }

  public func run() async throws {
    let backoff = RetryBackoff(baseMilliseconds: self.intervalMilliseconds)
    var failures = 0
    while !Task.isCancelled && !Task.isShuttingDownGracefully {
      var delay = self.intervalMilliseconds
      do {
        // Status reports are read even when this round's submission failed: one undeliverable
        // message must not hide what the bank says about everything else.
        var submitError: (any Error)?
        do {
          try await self.submitPending()
        } catch {
          submitError = error
          ConnectorErrors.count(error, operation: "submit")
        }
        do {
          try await self.pollStatusReports()
        } catch {
          ConnectorErrors.count(error, operation: "status_reports")
          throw error
        }
        if let submitError { throw submitError }
        failures = 0
      } catch {
        failures += 1
        delay = backoff.delay(afterFailures: failures)
        self.logger.warning(
          "bank submission round failed; will retry with the same message ids",
          metadata: ["error": "\(error)", "retry_in_ms": "\(delay)"])
      }
      let pause = delay
      try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(pause)) }
    }
  }

  /// Claims outbox entries for delivery (a committed write, so no cancel can race the bank
  /// call), sends them, up to ``Limits/submissionBatchSize`` per message, and records each round
  /// in one transaction; stops at the first bank failure (the claimed entries stay and are sent
  /// again with the same ids). Returns how many entries the bank acknowledged.
  @discardableResult
  public func submitPending() async throws -> Int {
    var acknowledged = 0
    while true {
      let sending = try await self.ledger.claimForSubmission(limit: Limits.submissionBatchSize)
      if sending.isEmpty { return acknowledged }
      // On a timeout, an outage or a garbled answer this throws: the entries stay (their
      // payments stay `submitting`) and are sent again with the same ids; the bank deduplicates.
      let deliveries = try await self.deliver(sending.map { ($0.entry, $0.payment, $0.resend) })
      acknowledged += deliveries.filter { if case .submitted = $0 { true } else { false } }.count
      try await self.ledger.record(deliveries)
    }
  }

  /// Hands `sending` to the bank in one message. The acknowledgements must name exactly the
  /// transactions sent. When the bank refuses a message of several transactions, each is sent
  /// again on its own, so only a transaction the bank refuses by itself fails: one bad
  /// instruction must not fail the others (some of which the bank may already hold from an
  /// earlier, timed-out attempt). A refused re-send is left unresolved rather than failed (see
  /// ``PaymentLedger/Delivery/unresolved(_:reason:)``).
  private func deliver(_ sending: [(PaymentLedger.OutboxEntry, Payment, resend: Bool)]) async throws(BankError)
    -> [PaymentLedger.Delivery]
  {
    let deadline = ContinuousClock.now.advanced(by: .milliseconds(Limits.syncCallTimeoutMilliseconds))
    do throws(BankError) {
      let acknowledgements = try await self.connector.submitPayments(
        sending.map { self.ledger.submission(for: $0.0, $0.1) }, deadline: deadline)
      guard acknowledgements.map(\.endToEndID) == sending.map(\.1.endToEndID) else {
        throw BankError(
          .malformed, "the bank acknowledged \(acknowledgements.count) transactions that are not the \(sending.count) sent")
      }
      return sending.map { .submitted($0.0) }
    } catch {
      guard error.code == .rejected else { throw error }
      guard sending.count > 1 else {
        let reason = LogText.prefix(error.message, maxBytes: BankDataLimits.maxReasonBytes)
        if sending[0].resend {
          self.logger.error(
            "the bank refused a re-send; the payment stays submitting until the bank reports on it",
            metadata: ["payment": "\(sending[0].1.id)", "reason": "\(reason)"])
          return [.unresolved(sending[0].0, reason: reason)]
        }
        return [.refused(sending[0].0, reason: reason)]
      }
      var deliveries: [PaymentLedger.Delivery] = []
      for item in sending {
        deliveries += try await self.deliver([item])
      }
      return deliveries
    }
  }

  /// Applies the status reports the bank has after the stored cursor, at most
  /// ``BankDataLimits/maxStatusPagesPerRound`` pages per call. Reports that cannot be applied
  /// are recorded by the ledger and logged here at error level.
  @discardableResult
  public func pollStatusReports() async throws -> Int {
    var changed = 0
    var cursor = try self.ledger.statusCursor()
    for _ in 0..<BankDataLimits.maxStatusPagesPerRound {
      let page = try await self.connector.fetchStatusReports(
        after: cursor, limit: Limits.syncBatchSize,
        deadline: .now.advanced(by: .milliseconds(Limits.syncCallTimeoutMilliseconds)))
      if page.reports.isEmpty && page.nextCursor == cursor { return changed }
      guard page.reports.count <= Limits.syncBatchSize else {
        throw BankError(.malformed, "the bank returned \(page.reports.count) status reports for a page of \(Limits.syncBatchSize)")
      }
      let applied = try await self.ledger.apply(page.reports, nextCursor: page.nextCursor)
      changed += applied.changed
      for anomaly in applied.anomalies {
        self.logger.error(
          "bank status report not applied; recorded as an anomaly",
          metadata: ["subject": "\(LogText.prefix(anomaly.subject))", "anomaly": "\(anomaly.description)"])
      }
      cursor = page.nextCursor
      if !page.hasMore { return changed }
    }
    return changed
  }
}
