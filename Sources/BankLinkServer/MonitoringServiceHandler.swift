import BankLinkCore
import BankLinkJournal
import BankLinkProto
import BankLinkStore
import Foundation
import GRPCCore
import GRPCProtobuf
import SwiftProtobuf

/// `banklink.v1.MonitoringService`: the alert log, streamed, listed and acknowledged
/// (docs/alerts.md).
struct MonitoringServiceHandler: Banklink_V1_MonitoringService.SimpleServiceProtocol {
  typealias Method = Banklink_V1_MonitoringService.Method

  let store: Store
  let writer: GroupCommitWriter
  let hub: AlertHub
  let now: @Sendable () -> Instant

  func subscribeAlerts(
    request: Banklink_V1_SubscribeAlertsRequest,
    response: RPCWriter<Banklink_V1_SubscribeAlertsResponse>,
    context: ServerContext
  ) async throws {
    let caller = try Caller.required()
    let filter = try Self.filter(minSeverity: request.minSeverity, kinds: request.kinds, accountID: request.accountID)
    let head = try withStore { try self.store.withReadTransaction { try AlertLog.head($0) } }
    var cursor: UInt64
    if request.fromStart {
      guard request.afterSequence == 0 else {
        throw APIError.invalidArgument("after_sequence", "must be 0 with from_start")
      }
      cursor = 0
    } else if request.afterSequence == 0 {
      cursor = head
    } else {
      guard request.afterSequence <= head else {
        throw RPCError(
          code: .outOfRange,
          message: "after_sequence \(request.afterSequence) is beyond the last alert (\(head)); resume from a sequence you were sent")
      }
      cursor = request.afterSequence
    }
    // Registered before the replay: an alert committed while the backlog is read wakes the
    // loop below, so none falls between the replay and the live part.
    let subscription: AlertHub.Subscription
    do {
      subscription = try self.hub.subscribe(
        principal: caller.principal.identity, mayUseReserved: caller.principal.holds(.admin) || caller.principal.holds(.auditor))
    } catch .tooManySubscribers {
      throw RPCError(code: .resourceExhausted, message: "too many alert subscriptions (limit \(Limits.maxAlertSubscribers))")
    } catch .tooManyForPrincipal {
      throw RPCError(
        code: .resourceExhausted,
        message: "'\(caller.principal.identity)' holds \(Limits.maxAlertSubscribersPerPrincipal) alert subscriptions already")
    } catch .shuttingDown {
      throw RPCError(code: .unavailable, message: "the daemon is shutting down; subscribe again after it restarts")
    }
    defer { subscription.cancel() }
    // A client that goes away (stream reset, connection closed) ends the subscription at once:
    // the feed waits on the hub, not on the network, and would otherwise hold its slot until
    // the next alert's write failed — with no alerts, forever (and a principal that reconnects
    // would run into its subscription limit).
    try await withRPCCancellationHandler {
      try await self.feed(subscription, after: cursor, filter: filter, response: response)
    } onCancelRPC: {
      subscription.cancel()
    }
  }

  private func feed(
    _ subscription: AlertHub.Subscription, after cursor: UInt64, filter: AlertFilter,
    response: RPCWriter<Banklink_V1_SubscribeAlertsResponse>
  ) async throws {
    try await AlertFeed.run(
      store: self.store, hub: self.hub, subscription: subscription, after: cursor, filter: filter,
      send: { alerts in try await response.write(contentsOf: alerts.lazy.map { alert in .with { $0.alert = Banklink_V1_Alert(alert) } }) },
      caughtUp: { head in try await response.write(.with { $0.caughtUp = .with { $0.headSequence = head } }) })
  }

  func listAlerts(request: Banklink_V1_ListAlertsRequest, context: ServerContext) async throws -> Banklink_V1_ListAlertsResponse {
    let size = try pageSize(request.pageSize)
    var filter = try Self.filter(minSeverity: request.minSeverity, kinds: request.kinds, accountID: request.accountID)
    filter.unacknowledgedOnly = request.unacknowledgedOnly
    let after: UInt64 = request.pageToken.isEmpty ? 0 : try PageToken.sequence(request.pageToken, .alerts)
    let page = try withStore {
      try self.store.withReadTransaction { txn in
        try AlertLog.page(after: after, limit: size, scanLimit: Limits.maxListScanRecords, filter: filter, in: txn)
      }
    }
    return .with {
      $0.alerts = page.alerts.map(Banklink_V1_Alert.init)
      if page.more { $0.nextPageToken = PageToken.encode(.alerts, after: page.scannedThrough) }
    }
  }

  func acknowledgeAlert(
    request: Banklink_V1_AcknowledgeAlertRequest,
    context: ServerContext
  ) async throws -> Banklink_V1_AcknowledgeAlertResponse {
    let caller = try Caller.required()
    guard request.sequence > 0 else { throw APIError.invalidArgument("sequence", "is required") }
    if !request.requestID.isEmpty { try validIdempotencyKey(request.requestID, field: "request_id") }
    if let problem = PaymentValidation.textProblem(request.comment, maxLength: Limits.maxApprovalCommentLength) {
      throw APIError.invalidArgument("comment", problem)
    }
    let now = self.now()
    let sequence = request.sequence
    let identity = caller.principal.identity
    let comment = request.comment
    let (alert, receipt, ownSubject) = try await self.mappingStorage {
      try await self.writer.write { txn -> (Alert?, JournalReceipt?, String?) in
        guard var alert = try AlertLog.alert(sequence, in: txn) else { return (nil, nil, nil) }
        let object = "alerts/\(sequence)"
        // Never one's own: an alert about the caller (their OTP lockout, say) or about a
        // payment they created is for someone else to close.
        if let subject = try Self.ownSubject(of: alert, identity: identity, in: txn) { return (alert, nil, subject) }
        if !alert.acknowledgedBy.isEmpty {
          // Acknowledged already (a retry, or someone else): the alert as it is and the receipt
          // of its acknowledgement; nothing changes.
          let entries = try AuditJournal.entries(about: object, limit: Limits.maxJournalEntriesPerObject, in: txn)
          return (alert, entries.last { $0.action == "alert.acknowledged" }?.receipt, nil)
        }
        alert.acknowledgedBy = identity
        alert.acknowledgedAt = now
        alert.acknowledgeComment = comment
        try AlertLog.save(alert, txn: &txn)
        var details: AuditPayload = ["kind": alert.kind.rawValue, "severity": alert.severity.name]
        if !comment.isEmpty { details["comment"] = comment }
        let receipt = try AuditJournal.append(&txn, at: now, principal: identity, action: "alert.acknowledged", object: object, details: details)
        return (alert, receipt, nil)
      }
    }
    guard let alert else { throw APIError.notFound("alert", String(sequence)) }
    if let ownSubject {
      throw GoogleRPCStatus(
        code: .permissionDenied, message: "alert \(sequence) is about \(ownSubject): another principal acknowledges it",
        details: [.errorInfo(reason: "OWN_ALERT", domain: APIError.domain)])
    }
    return .with {
      $0.alert = Banklink_V1_Alert(alert)
      if let receipt { $0.receipt = Banklink_V1_Receipt(receipt) }
    }
  }

  /// What makes `alert` the caller's own, or nil: it names them (`details.principal`), or its
  /// payment is one they created.
  static func ownSubject(of alert: Alert, identity: String, in txn: some ReadableTransaction) throws -> String? {
    if let principal = alert.details["principal"], principal.utf8.elementsEqual(identity.utf8) { return "you" }
    if !alert.paymentID.isEmpty, let bytes = try txn.get(Array(alert.paymentID.utf8), in: .payments),
      try Payment(record: bytes).creator.utf8.elementsEqual(identity.utf8)
    {
      return "payment \(alert.paymentID), which you created"
    }
    return nil
  }

  private func mappingStorage<T>(_ body: () async throws -> T) async throws -> T {
    do { return try await body() } catch let error as StoreError { throw APIError.storage(error) }
  }

  /// The filter of a subscription or a list; an unknown kind or severity names its field.
  static func filter(minSeverity: Banklink_V1_Severity, kinds: [Banklink_V1_AlertKind], accountID: String) throws -> AlertFilter {
    var filter = AlertFilter()
    switch minSeverity {
    case .unspecified, .info: filter.minSeverity = .info
    case .warning: filter.minSeverity = .warning
    case .critical: filter.minSeverity = .critical
    case .UNRECOGNIZED(let value): throw APIError.invalidArgument("min_severity", "\(value) is not a severity")
    }
    guard kinds.count <= Limits.maxAlertFilterKinds else {
      throw APIError.invalidArgument("kinds", "at most \(Limits.maxAlertFilterKinds) kinds")
    }
    for (index, kind) in kinds.enumerated() {
      guard let value = AlertKind(kind) else { throw APIError.invalidArgument("kinds[\(index)]", "\(kind) is not an alert kind") }
      filter.kinds.insert(value)
    }
    if !accountID.isEmpty {
      guard accountID.utf8.count <= Limits.maxAccountIDLength else {
        throw APIError.invalidArgument("account_id", "must be at most \(Limits.maxAccountIDLength) bytes")
      }
      filter.accountID = accountID
    }
    return filter
  }
}

extension AlertKind {
  static let protoPairs: [(AlertKind, Banklink_V1_AlertKind)] = [
    (.riskHit, .riskHit), (.anomaly, .anomaly), (.balanceThreshold, .balanceThreshold), (.bankRejection, .bankRejection),
    (.reconciliationBreak, .reconciliationBreak), (.authenticationFailure, .authenticationFailure),
    (.bankUnavailable, .bankUnavailable), (.tampering, .tampering), (.certificateExpiry, .certificateExpiry),
    (.rejectionBurst, .rejectionBurst),
    (.bankFileQuarantined, .bankFileQuarantined), (.configurationRefused, .configurationRefused),
  ]

  init?(_ proto: Banklink_V1_AlertKind) {
    guard let kind = Self.protoPairs.first(where: { $0.1 == proto })?.0 else { return nil }
    self = kind
  }

  var proto: Banklink_V1_AlertKind { Self.protoPairs.first { $0.0 == self }!.1 }
}

extension Banklink_V1_Alert {
  init(_ alert: Alert) {
    self = .with {
      $0.sequence = alert.sequence
      $0.time = alert.time.timestamp
      $0.severity =
        switch alert.severity {
        case .info: .info
        case .warning: .warning
        case .critical: .critical
        }
      $0.kind = alert.kind.proto
      $0.paymentID = alert.paymentID
      $0.accountID = alert.accountID
      $0.message = alert.message
      $0.details = alert.details
      $0.acknowledgedBy = alert.acknowledgedBy
      if let at = alert.acknowledgedAt { $0.acknowledgeTime = at.timestamp }
      $0.acknowledgeComment = alert.acknowledgeComment
    }
  }
}
