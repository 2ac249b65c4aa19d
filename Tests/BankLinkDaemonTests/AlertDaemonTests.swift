import BankLinkClient
import BankLinkCore
import BankLinkProto
import BankLinkTestSupport
import Foundation
import GRPCCore
import SwiftProtobuf
import Synchronization
import Testing

/// Alerts on the real daemon: a subscriber that resumes from its last sequence after a kill -9
/// sees every alert once, in order; and the CLI's `alerts watch|list|ack`.
@Suite("Alerts on the real daemon", .serialized)
struct AlertDaemonTests {
  static let payments = 40

  static func instruction(_ index: Int) -> Banklink_V1_PaymentInstruction {
    .with {
      $0.debtorAccountID = "icbc-cny-001"
      $0.creditor = .with {
        $0.name = "Zhejiang Lianda Electronics Co., Ltd."
        $0.accountNumber = "1202 0212 0990 0033 218"
        $0.bic = "ICBKCNBJ"
        $0.country = "CN"
      }
      $0.amount = .with { $0.minorUnits = 1_000 + Int64(index); $0.currencyCode = "CNY" }
      $0.purpose = "alert test \(index)"
      $0.type = .domestic
    }
  }

  @Test("kill -9 while the bank's rejections raise alerts: resuming from the last sequence seen, every alert arrives once, in order")
  func resumeAcrossKill() async throws {
    try await withTemporaryDirectory { directory in
      let pki = try TestPKI(directory: directory)
      let config = directory.appending("banklinkd.json")
      // The simulated bank rejects every payment (RJCT AC04) two seconds after receiving it:
      // each rejection raises a bank_rejection alert in the transaction that applies it.
      try Data("""
        {"listen": "127.0.0.1:0", "data_dir": "data",
         "tls": {"ca": "ca.pem", "certificate": "server.pem", "key": "server.key"},
         "connector": {"history_days": 1, "rejection_rate": 1.0},
         "payments": {"submit_interval_ms": 100},
         "principals": [{"identity": "erp", "roles": ["payer"]}, {"identity": "viewer", "roles": ["viewer"]},
                        {"identity": "admin", "roles": ["admin"]}]}
        """.utf8).write(to: URL(fileURLWithPath: config))
      let socket = try NotifySocket(path: directory.appending("notify.sock"))
      let erp = try pki.client(commonName: "erp", file: "erp")
      let viewer = try pki.client(commonName: "viewer", file: "viewer")
      let admin = try pki.client(commonName: "admin", file: "admin")

      let first = try await RunningDaemon.start(config: config, socket: socket)
      let port = Shared(first.port)
      let seen = Shared<[UInt64]>([])
      let stop = Shared(false)
      // The subscriber: from the start, then after the last sequence it saw, reconnecting to
      // wherever the daemon listens now.
      let subscriber = Task {
        while !stop.withLock({ $0 }) {
          let last = seen.withLock { $0.last }
          do {
            let client = pki.clientConfiguration(address: "127.0.0.1:\(port.withLock { $0 })", identity: viewer)
            try await withBankLinkClient(client) { grpc in
              try await Banklink_V1_MonitoringService.Client(wrapping: grpc).subscribeAlerts(.with {
                if let last { $0.afterSequence = last } else { $0.fromStart = true }
              }) { response in
                for try await event in response.messages {
                  if case .alert(let alert) = event.event { seen.withLock { $0.append(alert.sequence) } }
                  if stop.withLock({ $0 }) { return }
                }
              }
            }
          } catch {
            try? await Task.sleep(for: .milliseconds(100))
          }
        }
      }
      defer { subscriber.cancel() }

      try await withBankLinkClient(pki.clientConfiguration(address: "127.0.0.1:\(first.port)", identity: erp)) { grpc in
        let service = Banklink_V1_PaymentService.Client(wrapping: grpc)
        // Spread over about four seconds, so the bank's rejections (and their alerts) arrive
        // over time rather than in one status poll, and the kill lands while they are raised.
        for index in 0..<Self.payments {
          // Just after start the balance may not be synced yet (UNAVAILABLE): retried, bounded.
          var attempts = 0
          while true {
            do {
              _ = try await service.createPayment(.with { $0.idempotencyKey = "alert-\(index)"; $0.instruction = Self.instruction(index) })
              break
            } catch let error as RPCError where error.code == .unavailable && attempts < 100 {
              attempts += 1
              try await Task.sleep(for: .milliseconds(100))
            }
          }
          try await Task.sleep(for: .milliseconds(100))
        }
      }
      // Kill once some rejections have been raised and seen, with more to come.
      let killBy = ContinuousClock.now.advanced(by: .seconds(30))
      while seen.withLock({ $0.count }) < 5 && ContinuousClock.now < killBy { try await Task.sleep(for: .milliseconds(20)) }
      await first.kill9()
      let beforeKill = seen.withLock { $0.count }
      #expect(beforeKill >= 5 && beforeKill < Self.payments, "the kill must land while alerts are being raised (\(beforeKill) seen)")

      let daemon = try await RunningDaemon.start(config: config, socket: socket)
      defer { if daemon.process.isRunning { daemon.process.terminate() } }
      port.withLock { $0 = daemon.port }
      // Every payment ends rejected, each with its alert; the subscriber catches up.
      let head = try await withBankLinkClient(pki.clientConfiguration(address: "127.0.0.1:\(daemon.port)", identity: admin)) { grpc in
        let monitoring = Banklink_V1_MonitoringService.Client(wrapping: grpc)
        let deadline = ContinuousClock.now.advanced(by: .seconds(60))
        while ContinuousClock.now < deadline {
          let stored = try await monitoring.listAlerts(.with { $0.pageSize = 1_000 }).alerts
          if stored.filter({ $0.kind == .bankRejection }).count >= Self.payments {
            // 40 rejections within seconds: one burst alert on top, even across the kill.
            let bursts = stored.filter { alert in alert.kind == .rejectionBurst }.count
            #expect(bursts == 1)
            return stored.count
          }
          try await Task.sleep(for: .milliseconds(200))
        }
        return 0
      }
      #expect(head == Self.payments + 1)
      let caughtUpBy = ContinuousClock.now.advanced(by: .seconds(20))
      while seen.withLock({ $0.count }) < head && ContinuousClock.now < caughtUpBy { try await Task.sleep(for: .milliseconds(20)) }
      stop.withLock { $0 = true }
      #expect(seen.withLock { $0 } == (1...UInt64(max(head, 1))).map { $0 }, "every alert once, in order")

      // The CLI: watch from the start (exits after --count), list, acknowledge.
      let environment = cliEnvironment(port: daemon.port, caPath: pki.caPath, identity: admin)
      let watched = try runProgram(Binaries.cli, ["alerts", "watch", "--from", "0", "--count", "3"], environment: environment)
      #expect(watched.status == 0, "\(watched.stderr)")
      let lines = watched.stdout.split(separator: "\n")
      #expect(lines.count == 3 && lines.first?.hasPrefix("#1  ") == true && lines.allSatisfy { $0.contains("bank_rejection") }, "\(watched.stdout)")
      let acked = try runProgram(Binaries.cli, ["alerts", "ack", "2", "--comment", "creditor account closed: supplier informed"], environment: environment)
      #expect(acked.status == 0 && acked.stdout.contains("acknowledged by admin"), "\(acked.stdout) \(acked.stderr)")
      let open = try runProgram(Binaries.cli, ["alerts", "list", "--open", "--kind", "bank_rejection", "--json"], environment: environment)
      let listed = try Banklink_V1_ListAlertsResponse(jsonString: open.stdout)
      #expect(listed.alerts.count == Self.payments - 1 && !listed.alerts.contains { $0.sequence == 2 })
      await daemon.stop()
    }
  }
}
