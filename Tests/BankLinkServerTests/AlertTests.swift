import BankLinkBanks
import BankLinkClient
import BankLinkCore
import BankLinkJournal
import BankLinkProto
import BankLinkServer
import BankLinkStore
import BankLinkTestSupport
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import Logging
import SwiftProtobuf
import Synchronization
import Testing

/// Alerts over real mutual TLS and real LMDB: replay then live, filters, resume, the lag bound,
/// acknowledgement, and the alerts raised by the bank's availability.
@Suite("Alerts")
struct AlertTests {
  static let principals = [
    Principal(identity: "viewer", roles: [.viewer]),
    Principal(identity: "admin", roles: [.admin]),
  ]

  typealias Monitoring = Banklink_V1_MonitoringService.Client<HTTP2ClientTransport.Posix>

  static func monitoring<T: Sendable>(_ server: TestServer, _ who: String, _ body: (Monitoring) async throws -> T) async throws -> T {
    try await withBankLinkClient(server.client(try server.pki.client(commonName: who))) { try await body(Monitoring(wrapping: $0)) }
  }

  /// Raises `count` alerts in one committed transaction, as a cause would.
  @discardableResult
  static func raise(
    _ server: TestServer, _ count: Int, severity: AlertSeverity = .warning, kind: AlertKind = .anomaly, account: String = "icbc-cny-001"
  ) async throws -> UInt64 {
    try await server.payments.writer.write { txn in
      var last: UInt64 = 0
      for index in 0..<count {
        last = try AlertLog.raise(
          &txn, at: WallClock.now(), severity: severity, kind: kind, accountID: account, message: "test alert \(index)",
          details: ["index": String(index)])
      }
      return last
    }
  }

  /// Reads a subscription until `stop` says so; returns the alerts' sequences and whether the
  /// CaughtUp marker came (and after how many alerts).
  static func read(
    _ stream: RPCAsyncSequence<Banklink_V1_SubscribeAlertsResponse, any Error>,
    until stop: ([UInt64], Bool) -> Bool
  ) async throws -> (sequences: [UInt64], caughtUpAfter: Int?) {
    var sequences: [UInt64] = []
    var caughtUpAfter: Int?
    for try await event in stream {
      switch event.event {
      case .alert(let alert): sequences.append(alert.sequence)
      case .caughtUp: caughtUpAfter = sequences.count
      case nil: break
      }
      if stop(sequences, caughtUpAfter != nil) { break }
    }
    return (sequences, caughtUpAfter)
  }

  @Test("from the start: the stored alerts, CaughtUp, then live alerts as they commit — each once, in order; resume after a sequence")
  func replayThenLive() async throws {
    try await withTestServer(principals: Self.principals, initialSync: false) { server in
      try await Self.raise(server, 5)
      let (seen, caughtUpAfter) = try await Self.monitoring(server, "viewer") { monitoring in
        try await monitoring.subscribeAlerts(.with { $0.fromStart = true }) { response in
          let stream = response.messages
          // Live alerts raised once the replay is under way.
          async let raised = { () async throws -> Void in
            try await Task.sleep(for: .milliseconds(200))
            try await Self.raise(server, 3)
            try await Self.raise(server, 2)
          }()
          let result = try await Self.read(stream) { sequences, _ in sequences.count == 10 }
          try await raised
          return result
        }
      }
      #expect(seen == Array(1...10))
      #expect(caughtUpAfter == 5)

      // Resume after 7: exactly 8, 9, 10, then CaughtUp.
      let resumed = try await Self.monitoring(server, "viewer") { monitoring in
        try await monitoring.subscribeAlerts(.with { $0.afterSequence = 7 }) { response in
          try await Self.read(response.messages) { _, caughtUp in caughtUp }
        }
      }
      #expect(resumed.sequences == [8, 9, 10] && resumed.caughtUpAfter == 3)

      // After 0 without from_start: live only.
      let live = try await Self.monitoring(server, "viewer") { monitoring in
        try await monitoring.subscribeAlerts(.init()) { response in
          let stream = response.messages
          async let raised = { () async throws -> Void in
            try await Task.sleep(for: .milliseconds(200))
            try await Self.raise(server, 1)
          }()
          let result = try await Self.read(stream) { sequences, _ in sequences.count == 1 }
          try await raised
          return result
        }
      }
      #expect(live.sequences == [11] && live.caughtUpAfter == 0)
    }
  }

  @Test("filters by severity, kind and account; bad filters and sequences from the future are refused")
  func filtersAndBadInput() async throws {
    try await withTestServer(principals: Self.principals, initialSync: false) { server in
      try await Self.raise(server, 2, severity: .info, kind: .anomaly)
      try await Self.raise(server, 2, severity: .critical, kind: .tampering, account: "icbc-cny-002")
      try await Self.raise(server, 1, severity: .warning, kind: .bankRejection)
      let critical = try await Self.monitoring(server, "viewer") { monitoring in
        try await monitoring.subscribeAlerts(.with { $0.fromStart = true; $0.minSeverity = .critical }) { response in
          try await Self.read(response.messages) { _, caughtUp in caughtUp }
        }
      }
      #expect(critical.sequences == [3, 4])
      let listed = try await Self.monitoring(server, "viewer") { monitoring in
        try await monitoring.listAlerts(.with { $0.kinds = [.bankRejection, .anomaly]; $0.accountID = "icbc-cny-001" }).alerts.map(\.sequence)
      }
      #expect(listed == [1, 2, 5])

      let cases: [(Banklink_V1_SubscribeAlertsRequest, RPCError.Code, String)] = [
        (.with { $0.afterSequence = 99 }, .outOfRange, "beyond the last alert"),
        (.with { $0.kinds = [.unspecified] }, .invalidArgument, "kinds[0]"),
        (.with { $0.kinds = [.init(rawValue: 42)!] }, .invalidArgument, "kinds[0]"),
        (.with { $0.fromStart = true; $0.afterSequence = 1 }, .invalidArgument, "after_sequence"),
        (.with { $0.accountID = String(repeating: "a", count: Limits.maxAccountIDLength + 1) }, .invalidArgument, "account_id"),
      ]
      for (request, code, text) in cases {
        let error = await #expect(throws: RPCError.self) {
          try await Self.monitoring(server, "viewer") { monitoring in
            try await monitoring.subscribeAlerts(request) { response in
              for try await _ in response.messages {}
            }
          }
        }
        #expect(error?.code == code && error?.message.contains(text) == true, "\(text): \(String(describing: error))")
      }
    }
  }

  @Test("a subscriber too far behind is ended with RESOURCE_EXHAUSTED naming where to resume, and resumes there without a gap")
  func lagBound() async throws {
    try await withTestServer(principals: Self.principals, initialSync: false) { server in
      let total = Int(Limits.maxAlertSubscriberLag) + 2 * Limits.alertReplayPageSize
      let (received, error) = try await Self.monitoring(server, "viewer") { monitoring in
        try await monitoring.subscribeAlerts(.init()) { response in
          var received: [UInt64] = []
          var failure: RPCError?
          do {
            for try await event in response.messages {
              if case .caughtUp = event.event { try await Self.raise(server, total) }
              if case .alert(let alert) = event.event { received.append(alert.sequence) }
            }
          } catch let error as RPCError {
            failure = error
          }
          return (received, failure)
        }
      }
      #expect(error?.code == .resourceExhausted, "\(String(describing: error))")
      let last = try #require(received.last)
      #expect(received == Array(1...last))
      #expect(error?.message.contains("resume with after_sequence \(last)") == true, "\(String(describing: error))")
      // Resuming from there delivers the rest, once.
      let rest = try await Self.monitoring(server, "viewer") { monitoring in
        try await monitoring.subscribeAlerts(.with { $0.afterSequence = last }) { response in
          try await Self.read(response.messages) { _, caughtUp in caughtUp }
        }
      }
      #expect(rest.sequences == Array((last + 1)...UInt64(total)))
    }
  }

  @Test("a subscriber that stops reading delays neither the writers nor the other subscribers")
  func stalledSubscriber() async throws {
    try await withTestServer(principals: Self.principals, initialSync: false) { server in
      try await Self.monitoring(server, "viewer") { stalledClient in
        try await stalledClient.subscribeAlerts(.init()) { stalled in
          var iterator = stalled.messages.makeAsyncIterator()
          _ = try await iterator.next()  // CaughtUp, then never read again
          // Enough alerts to fill the stalled stream's HTTP/2 window many times over.
          for _ in 0..<5 { try await Self.raise(server, 1_000) }
          let other = try await Self.monitoring(server, "viewer") { monitoring in
            try await monitoring.subscribeAlerts(.with { $0.fromStart = true }) { response in
              try await Self.read(response.messages) { _, caughtUp in caughtUp }
            }
          }
          #expect(other.sequences.count == 5_000)
          // Writers are unaffected: one more commit returns.
          #expect(try await Self.raise(server, 1) == 5_001)
        }
      }
    }
  }

  @Test("subscription slots: the last ones are kept for admins and auditors; a replay goes out in writes of at most 32 alerts")
  func subscriptionSlotsAndWrites() async throws {
    try await withTestServer(principals: Self.principals, initialSync: false) { server in
      let hub = server.server.alerts
      var held: [AlertHub.Subscription] = []
      defer { for subscription in held { subscription.cancel() } }
      // Two callers at their per-principal limit, short of the reserved slots.
      for _ in 0..<Limits.maxAlertSubscribersPerPrincipal { held.append(try hub.subscribe(principal: "v1")) }
      let second = Limits.maxAlertSubscribers - Limits.reservedAlertSubscribers - Limits.maxAlertSubscribersPerPrincipal
      for _ in 0..<second { held.append(try hub.subscribe(principal: "v2")) }
      #expect(throws: AlertHub.Refusal.tooManySubscribers) { _ = try hub.subscribe(principal: "v2") }
      #expect(throws: AlertHub.Refusal.tooManySubscribers) { _ = try hub.subscribe(principal: "v3") }
      held.append(try hub.subscribe(principal: "admin", mayUseReserved: true))
      for subscription in held { subscription.cancel() }
      held = []

      // A backlog of 100 alerts replayed: no write carries more than 32.
      _ = try await Self.raise(server, 100)
      struct Done: Error {}
      let sizes = Mutex<[Int]>([])
      let subscription = try hub.subscribe(principal: "viewer")
      defer { subscription.cancel() }
      await #expect(throws: Done.self) {
        try await AlertFeed.run(
          store: server.payments.writer.store, hub: hub, subscription: subscription, after: 0, filter: AlertFilter(),
          send: { alerts in sizes.withLock { $0.append(alerts.count) } }, caughtUp: { _ in throw Done() })
      }
      let written = sizes.withLock { $0 }
      #expect(written.reduce(0, +) == 100 && written.allSatisfy { $0 <= Limits.alertsPerWrite }, "\(written)")
    }
  }

  @Test("acknowledge: admins only, audited with a receipt, once; a retry returns the same receipt")
  func acknowledge() async throws {
    try await withTestServer(principals: Self.principals, initialSync: false) { server in
      try await Self.raise(server, 2)
      let denied = await #expect(throws: RPCError.self) {
        _ = try await Self.monitoring(server, "viewer") { try await $0.acknowledgeAlert(.with { $0.sequence = 1 }) }
      }
      #expect(denied?.code == .permissionDenied)
      let acknowledged = try await Self.monitoring(server, "admin") {
        try await $0.acknowledgeAlert(.with { $0.sequence = 1; $0.comment = "false positive: test data" })
      }
      #expect(acknowledged.alert.acknowledgedBy == "admin" && acknowledged.alert.acknowledgeComment == "false positive: test data")
      #expect(acknowledged.receipt.journalSequence > 0)
      let again = try await Self.monitoring(server, "admin") { try await $0.acknowledgeAlert(.with { $0.sequence = 1 }) }
      #expect(again.receipt == acknowledged.receipt && again.alert.acknowledgeComment == "false positive: test data")
      let journal = try server.payments.auditEntries(limit: 100).filter { $0.object == "alerts/1" }
      #expect(journal.map(\.action) == ["alert.acknowledged"] && journal.first?.principal == "admin")
      let open = try await Self.monitoring(server, "viewer") { try await $0.listAlerts(.with { $0.unacknowledgedOnly = true }).alerts }
      #expect(open.map(\.sequence) == [2])
      let missing = await #expect(throws: RPCError.self) {
        _ = try await Self.monitoring(server, "admin") { try await $0.acknowledgeAlert(.with { $0.sequence = 3 }) }
      }
      #expect(missing?.code == .notFound)
      // An alert about the admin themselves (their OTP lockout, say) is another admin's to close.
      let own = try await server.payments.writer.write { txn in
        try AlertLog.raise(
          &txn, at: WallClock.now(), severity: .warning, kind: .authenticationFailure, message: "approvals of 'admin' locked",
          details: ["principal": "admin"])
      }
      let refused = await #expect(throws: RPCError.self) {
        _ = try await Self.monitoring(server, "admin") { try await $0.acknowledgeAlert(.with { $0.sequence = own }) }
      }
      #expect(refused?.code == .permissionDenied, "\(String(describing: refused))")
      #expect(try refused?.unpackGoogleRPCStatus()?.details.compactMap(\.errorInfo).first?.reason == "OWN_ALERT")
      #expect(try server.payments.auditEntries(limit: 100).filter { $0.object == "alerts/\(own)" }.isEmpty)
    }
  }

  @Test("the bank unreachable for three rounds raises one critical alert; answering again for two raises one recovery")
  func bankAvailability() async throws {
    try await withTestServer(principals: Self.principals) { server in
      var faults = BankSimulator.Faults()
      faults.outage = true
      server.simulator.setFaults(faults)
      var logger = Logger(label: "test")
      logger.logLevel = .error
      let service = AccountSyncService(
        connector: server.simulator, cache: server.cache, configuration: .init(intervalMilliseconds: 20), logger: logger,
        now: WallClock.now)
      let run = Task { try await service.run() }
      defer { run.cancel() }
      func alerts() throws -> [Alert] {
        try server.payments.writer.store.withReadTransaction {
          try AlertLog.page(after: 0, limit: 100, scanLimit: 100, filter: AlertFilter(), in: $0).alerts.filter { $0.kind == .bankUnavailable }
        }
      }
      try await Self.waitFor { try alerts().count >= 1 }
      // Many more failed rounds: still one alert for the episode.
      try await Task.sleep(for: .milliseconds(300))
      #expect(try alerts().map(\.severity) == [.critical])
      server.simulator.setFaults(BankSimulator.Faults())
      try await Self.waitFor { try alerts().count >= 2 }
      try await Task.sleep(for: .milliseconds(300))
      let episode = try alerts()
      #expect(episode.map(\.severity) == [.critical, .info])
      #expect(episode.last?.details["recovered"] == "true")
    }
  }

  @Test("a subscriber that goes away while no alert is raised gives its slot back at once, not at the next alert")
  func departedSubscriberReleased() async throws {
    try await withTestServer(principals: Self.principals, initialSync: false) { server in
      let hub = server.server.alerts
      for _ in 0..<3 {
        // Subscribe, see CaughtUp, then leave (the client resets the stream and closes).
        let caughtUp = try await Self.monitoring(server, "viewer") { monitoring in
          try await monitoring.subscribeAlerts(.init()) { response in
            try await Self.read(response.messages) { _, caughtUp in caughtUp }.caughtUpAfter
          }
        }
        #expect(caughtUp == 0)
        try await Self.waitFor { hub.subscriberCount == 0 }
      }
      #expect(hub.subscriberCount == 0)
      #expect(try server.payments.writer.store.withReadTransaction { try AlertLog.head($0) } == 0, "no alert was raised meanwhile")
    }
  }

  @Test("a burst of rejections raises one critical alert per episode; the episode ends when rejections thin out, then a new burst raises again")
  func rejectionBurst() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let store = server.payments.writer.store
      let start = Instant(millisecondsSinceEpoch: 1_800_000_000_000)
      func reject(_ index: Int, atSecond second: Int64) throws {
        try store.withWriteTransaction { txn in
          try RejectionBurst.note(
            paymentID: "pay-\(index)", accountID: "icbc-cny-001", at: start.adding(milliseconds: second * 1_000), txn: &txn)
        }
      }
      func bursts() throws -> [Alert] {
        try store.withReadTransaction {
          try AlertLog.page(after: 0, limit: 100, scanLimit: 100, filter: AlertFilter(), in: $0).alerts.filter { $0.kind == .rejectionBurst }
        }
      }
      for index in 0..<(Limits.rejectionBurstCount - 1) { try reject(index, atSecond: Int64(index)) }
      #expect(try bursts().isEmpty, "one short of the count")
      try reject(4, atSecond: 60)
      let first = try bursts()
      #expect(first.map(\.severity) == [.critical])
      #expect(first.first?.details["count"] == String(Limits.rejectionBurstCount))
      #expect(first.first?.paymentID == "pay-4")
      // More in the same episode: nothing more.
      for index in 5..<20 { try reject(index, atSecond: 60 + Int64(index)) }
      #expect(try bursts().count == 1)
      // A rejection after the window has passed finds it empty: the episode ends.
      let later = Limits.rejectionBurstWindowSeconds + 200
      try reject(20, atSecond: later)
      #expect(try bursts().count == 1, "one rejection after a quiet window ends the episode without an alert")
      for index in 21..<(21 + Limits.rejectionBurstCount - 1) { try reject(index, atSecond: later + Int64(index)) }
      #expect(try bursts().count == 2, "a new burst is a new episode")
    }
  }

  @Test("a balance floor: one warning when a reservation takes available below it, not one per round; one recovery 5 % above")
  func balanceFloor() async throws {
    try await withTestServer(principals: Self.principals) { server in
      let (_, cached, reserved) = try #require(try server.cache.accountAndBalance("icbc-cny-001"))
      let available = try #require(cached).balance.ledger.minorUnits - reserved
      var logger = Logger(label: "test")
      logger.logLevel = .error
      func service(floor: Int64) -> AccountSyncService {
        AccountSyncService(
          connector: server.simulator, cache: server.cache, configuration: .init(balanceFloors: ["icbc-cny-001": floor]),
          logger: logger, now: WallClock.now)
      }
      func alerts() throws -> [Alert] {
        try server.payments.writer.store.withReadTransaction {
          try AlertLog.page(after: 0, limit: 100, scanLimit: 100, filter: AlertFilter(), in: $0).alerts
        }
      }
      let floored = service(floor: available - 1_000)
      try await floored.checkBalanceFloors()
      #expect(try alerts().isEmpty, "available is still above the floor")
      // A payment's reservation takes available 4,000 minor units below the floor.
      _ = try await server.payments.create(PaymentLedger.Fixture.instruction(5_000), idempotencyKey: "floor-1", creator: "erp")
      for _ in 0..<3 { try await floored.checkBalanceFloors() }
      let breached = try alerts()
      #expect(breached.map(\.severity) == [.warning] && breached.first?.kind == .balanceThreshold)
      #expect(breached.first?.accountID == "icbc-cny-001" && breached.first?.message.contains("below its floor") == true)
      // Back above (a lower floor, as after a top-up): one recovery, once.
      let lower = service(floor: (available - 5_000) / 2)
      for _ in 0..<2 { try await lower.checkBalanceFloors() }
      #expect(try alerts().map(\.severity) == [.warning, .info])
    }
  }

  @Test("a client certificate expiring within 30 days raises one alert on its first call (critical within 7), not one per call")
  func certificateExpiry() async throws {
    try await withTestServer(principals: Self.principals, initialSync: false) { server in
      func alerts() throws -> [Alert] {
        try server.payments.writer.store.withReadTransaction {
          try AlertLog.page(after: 0, limit: 100, scanLimit: 100, filter: AlertFilter(), in: $0).alerts
        }
      }
      // Certificates valid for a year raise nothing.
      _ = try await Self.monitoring(server, "viewer") { try await $0.listAlerts(.init()) }
      #expect(try alerts().isEmpty)
      let soon = try server.pki.client(commonName: "viewer", notValidAfter: Date().addingTimeInterval(10 * 86_400), file: "viewer-soon")
      let sooner = try server.pki.client(commonName: "admin", notValidAfter: Date().addingTimeInterval(3 * 86_400), file: "admin-sooner")
      for files in [soon, soon, sooner, sooner] {
        _ = try await withBankLinkClient(server.client(files)) {
          try await Banklink_V1_AdminService.Client(wrapping: $0).whoAmI(.init())
        }
      }
      try await Self.waitFor { try alerts().count >= 2 }
      try await Task.sleep(for: .milliseconds(200))
      let raised = try alerts()
      #expect(raised.map(\.kind) == [.certificateExpiry, .certificateExpiry])
      let viewer = raised.first { $0.message.contains("principal 'viewer'") }
      let admin = raised.first { $0.message.contains("principal 'admin'") }
      #expect(viewer?.severity == .warning && viewer?.details["serial"]?.isEmpty == false)
      #expect(admin?.severity == .critical)
    }
  }

  @Test("a journal that does not verify raises one critical tampering alert per break, however often it is verified")
  func journalBreak() async throws {
    try await withTestServer(principals: Self.principals, initialSync: false) { server in
      try await server.payments.writer.write { txn in
        for index in 0..<3 {
          try AuditJournal.append(&txn, at: WallClock.now(), principal: "test", action: "test.entry", object: "entry-\(index)")
        }
      }
      // An insider flips one byte of entry 2 in the data file.
      try server.payments.writer.store.withWriteTransaction { txn in
        var record = try #require(try txn.get(AuditJournal.key(2), in: .audit))
        record[record.count - 1] ^= 0x01
        try txn.put(AuditJournal.key(2), record, in: .audit)
      }
      for _ in 0..<3 {
        let report = try await withBankLinkClient(server.client(try server.pki.client(commonName: "admin"))) {
          try await Banklink_V1_AdminService.Client(wrapping: $0).verifyAuditJournal(.init())
        }
        #expect(!report.valid && report.firstInvalidSequence == 2)
      }
      let alerts = try server.payments.writer.store.withReadTransaction {
        try AlertLog.page(after: 0, limit: 100, scanLimit: 100, filter: AlertFilter(), in: $0).alerts
      }
      #expect(alerts.map(\.kind) == [.tampering] && alerts.first?.severity == .critical)
      #expect(alerts.first?.details["first_invalid_sequence"] == "2")
    }
  }

  static func waitFor(_ condition: () throws -> Bool) async throws {
    let deadline = ContinuousClock.now.advanced(by: .seconds(20))
    while try !condition() {
      guard ContinuousClock.now < deadline else {
        Issue.record("condition not met within 20 s")
        return
      }
      try await Task.sleep(for: .milliseconds(20))
    }
  }
}
