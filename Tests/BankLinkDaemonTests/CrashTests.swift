import BankLinkBanks
import BankLinkClient
import BankLinkCore
import BankLinkPKI
import BankLinkProto
import BankLinkTestSupport
import Foundation
import GRPCCore
import BankLinkServer
import SwiftProtobuf
import Synchronization
import Testing
import X509

/// `kill -9` under payment load against the real banklinkd process.
///
/// `make test` runs a short form; `make crash-test` sets BANKLINK_CRASH_ROUNDS and
/// BANKLINK_CRASH_LOAD_MS for a longer one.
@Suite("Crash safety", .serialized)
struct CrashTests {
  static var rounds: Int { Int(ProcessInfo.processInfo.environment["BANKLINK_CRASH_ROUNDS"] ?? "") ?? 2 }
  static var loadMilliseconds: Int { Int(ProcessInfo.processInfo.environment["BANKLINK_CRASH_LOAD_MS"] ?? "") ?? 1_500 }
  static let workers = 16
  /// Payments a round must have acknowledged before its kill (bounded by the wait below), so
  /// each kill lands on a daemon that is writing.
  static let minimumAcknowledgedPerRound = 12
  static let maxWaitForProgressSeconds = 20
  static let accounts = ["icbc-cny-001", "icbc-cny-002"]

  /// What the load generator learned.
  struct Outcome: Sendable {
    var acknowledged: [String: String] = [:]  // idempotency key → payment id
    var unacknowledged: Set<String> = []
  }

  static func instruction(_ key: String) -> Banklink_V1_PaymentInstruction {
    .with {
      // Deterministic per key (String.hashValue is seeded per process): a retry after a crash is
      // the same request, and a run is reproducible.
      $0.debtorAccountID = accounts[key.utf8.reduce(0) { ($0 &* 31 &+ Int($1)) & 0xFFFF } % accounts.count]
      $0.creditor = .with {
        $0.name = "Zhejiang Lianda Electronics Co., Ltd."
        $0.accountNumber = "1202 0212 0990 0033 218"
        $0.bic = "ICBKCNBJ"
        $0.country = "CN"
      }
      // Deterministic per key, so a retry is the same request.
      $0.amount = .with { $0.minorUnits = 100 + Int64(key.utf8.reduce(0) { ($0 &* 31 &+ Int($1)) & 0xFFFF }); $0.currencyCode = "CNY" }
      $0.purpose = "crash test \(key)"
      $0.type = .domestic
    }
  }

  final class Recorder: Sendable {
    let state = Mutex(Outcome())
    func acknowledged(_ key: String, _ id: String) { self.state.withLock { $0.acknowledged[key] = id } }
    func failed(_ key: String) { self.state.withLock { _ = $0.unacknowledged.insert(key) } }
    var outcome: Outcome { self.state.withLock { $0 } }
  }

  /// Creates payments from `workers` tasks until the load window ends, while the daemon is
  /// killed mid-load by the caller.
  static func load(round: Int, client: ClientConfiguration, until stop: Shared<ContinuousClock.Instant>, recorder: Recorder) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
      for worker in 0..<Self.workers {
        group.addTask {
          try await withBankLinkClient(client) { grpc in
            let payments = Banklink_V1_PaymentService.Client(wrapping: grpc)
            var index = 0
            while ContinuousClock.now < stop.withLock({ $0 }) {
              let key = "r\(round)-w\(worker)-\(index)"
              index += 1
              do {
                let response = try await payments.createPayment(
                  .with { $0.idempotencyKey = key; $0.instruction = Self.instruction(key) }, options: Self.failFast)
                recorder.acknowledged(key, response.payment.paymentID)
              } catch {
                recorder.failed(key)
                try? await Task.sleep(for: .milliseconds(50))
              }
            }
          }
        }
      }
      try await group.waitForAll()
    }
  }

  static var failFast: CallOptions {
    var options = CallOptions.defaults
    options.timeout = .seconds(3)
    options.waitForReady = false
    return options
  }

  @Test("kill -9 under load loses no acknowledged payment, creates none twice, pays each once")
  func killNineUnderLoad() async throws {
    try await withTemporaryDirectory { directory in
      let pki = try TestPKI(directory: directory)
      let erp = try pki.client(commonName: "erp")
      let config = directory.appending("banklinkd.json")
      try Data("""
        {"listen": "127.0.0.1:0", "data_dir": "data",
         "tls": {"ca": "ca.pem", "certificate": "server.pem", "key": "server.key"},
         "connector": {"history_days": 2, "activity_interval_ms": 200},
         "sync": {"interval_ms": 200},
         "payments": {"approval_threshold_major": 10000000000, "submit_interval_ms": 100},
         "principals": [{"identity": "erp", "roles": ["payer"]}]}
        """.utf8).write(to: URL(fileURLWithPath: config))
      let socket = try NotifySocket(path: directory.appending("notify.sock"))
      let recorder = Recorder()

      for round in 0..<Self.rounds {
        let daemon = try await RunningDaemon.start(config: config, socket: socket)
        let client = pki.clientConfiguration(address: "127.0.0.1:\(daemon.port)", identity: erp)
        // The load runs until a second after the kill. The kill comes after the load window, and
        // not before this round has had payments acknowledged (a busy machine — CI on two cores —
        // can take most of the window to get the first ones through), within a bound.
        let stop = Shared(ContinuousClock.now.advanced(by: .seconds(3_600)))
        let before = recorder.outcome.acknowledged.count
        async let loaded: Void = Self.load(round: round, client: client, until: stop, recorder: recorder)
        try await Task.sleep(for: .milliseconds(Self.loadMilliseconds))
        let progressBy = ContinuousClock.now.advanced(by: .seconds(Self.maxWaitForProgressSeconds))
        while recorder.outcome.acknowledged.count - before < Self.minimumAcknowledgedPerRound, ContinuousClock.now < progressBy {
          try await Task.sleep(for: .milliseconds(50))
        }
        await daemon.kill9()
        stop.withLock { $0 = ContinuousClock.now.advanced(by: .seconds(1)) }
        try await loaded
        _ = socket.receive(timeoutSeconds: 0)  // drain a stray STOPPING, if any (non-blocking)
      }

      // Restart, retry every unacknowledged key, and let the bank finish.
      let daemon = try await RunningDaemon.start(config: config, socket: socket)
      let client = pki.clientConfiguration(address: "127.0.0.1:\(daemon.port)", identity: erp)
      let result = recorder.outcome
      #expect(result.acknowledged.count >= Self.rounds * Self.minimumAcknowledgedPerRound, "the load must actually create payments")
      let retried = try await withBankLinkClient(client) { grpc in
        let payments = Banklink_V1_PaymentService.Client(wrapping: grpc)
        var ids: [String: String] = [:]
        for key in result.unacknowledged.union(result.acknowledged.keys) {
          let response = try await payments.createPayment(.with { $0.idempotencyKey = key; $0.instruction = Self.instruction(key) })
          ids[key] = response.payment.paymentID
        }
        return ids
      }
      for (key, id) in result.acknowledged {
        #expect(retried[key] == id, "acknowledged payment \(key) changed id or vanished")
      }

      let all = try await withBankLinkClient(client) { grpc -> [Banklink_V1_Payment] in
        let payments = Banklink_V1_PaymentService.Client(wrapping: grpc)
        let deadline = ContinuousClock.now.advanced(by: .seconds(90))
        while true {
          var listed: [Banklink_V1_Payment] = []
          var token = ""
          repeat {
            let page = try await payments.listPayments(.with { $0.pageSize = 1000; $0.pageToken = token })
            listed += page.payments
            token = page.nextPageToken
          } while !token.isEmpty
          let open = listed.filter { [.approved, .submitted, .accepted].contains($0.status) }
          if open.isEmpty || ContinuousClock.now > deadline { return listed }
          try await Task.sleep(for: .milliseconds(250))
        }
      }
      // Exactly one payment per key, and nothing but what was asked for.
      let keys = all.map(\.idempotencyKey)
      #expect(Set(keys).count == keys.count, "a key created two payments")
      #expect(Set(keys) == Set(retried.keys))
      #expect(all.allSatisfy { $0.status == .settled }, "\(Dictionary(grouping: all, by: \.status).mapValues(\.count))")

      // Settled payments stay reserved until a synced ledger balance includes their debits. Poll
      // (bounded) until no account holds a reservation; the assertion below reports what remains.
      let balances = try await withBankLinkClient(pki.clientConfiguration(address: "127.0.0.1:\(daemon.port)", identity: erp)) { grpc in
        let accounts = Banklink_V1_AccountService.Client(wrapping: grpc)
        let deadline = ContinuousClock.now.advanced(by: .seconds(30))
        while true {
          var balances: [Banklink_V1_Balance] = []
          for account in Self.accounts { balances.append(try await accounts.getBalance(.with { $0.accountID = account })) }
          if balances.allSatisfy({ $0.available == $0.ledger }) || ContinuousClock.now > deadline { return balances }
          try await Task.sleep(for: .milliseconds(100))
        }
      }
      await daemon.stop()

      // The bank's own records: every payment received, and booked exactly once.
      let bank = try BankSimulator(
        configuration: .init(directory: directory.appending("data/simulator"), historyDays: 2), clock: WallClock.now)
      let receipts = try bank.receipts()
      let duplicates = receipts.values.filter { $0 > 1 }.count
      for payment in all {
        #expect(receipts[payment.endToEndID] != nil, "the bank never received \(payment.paymentID)")
      }
      var booked: [String: Int] = [:]
      for account in Self.accounts {
        var cursor: String?
        while true {
          let page = try await bank.fetchTransactions(accountID: account, after: cursor, limit: 1000, deadline: .now.advanced(by: .seconds(5)))
          for entry in page.transactions where !entry.endToEndID.isEmpty { booked[entry.endToEndID, default: 0] += 1 }
          cursor = page.nextCursor
          if !page.hasMore { break }
        }
      }
      for payment in all {
        #expect(booked[payment.endToEndID] == 1, "\(payment.paymentID) booked \(booked[payment.endToEndID] ?? 0) times")
      }
      // Everything settled and booked: nothing is reserved any more.
      for balance in balances {
        #expect(balance.available == balance.ledger, "\(balance.accountID): available \(balance.available.minorUnits) ≠ ledger \(balance.ledger.minorUnits)")
      }
      print("crash test: \(Self.rounds) kill -9 rounds, \(all.count) payments, \(result.unacknowledged.count) unacknowledged keys retried, \(duplicates) resends deduplicated by the bank")
    }
  }

  @Test("kill -9 while approvers approve: the journal still verifies, and every receipt returned is in it")
  func killNineDuringApprovals() async throws {
    try await withTemporaryDirectory { directory in
      let pki = try TestPKI(directory: directory)
      let config = directory.appending("banklinkd.json")
      // Every payment needs one approver; no one-time password, so that approvals are not
      // limited to one per approver and 30 s step.
      try Data("""
        {"rules": [{"id": "all", "match": {"min_amount_minor": "1"},
          "requirement": {"levels": [{"required_approvals": 1, "roles": ["ROLE_APPROVER"]}],
                          "approval_window_seconds": "3600", "require_otp": false}}]}
        """.utf8).write(to: URL(fileURLWithPath: directory.appending("policy.json")))
      try Data("""
        {"listen": "127.0.0.1:0", "data_dir": "data",
         "tls": {"ca": "ca.pem", "certificate": "server.pem", "key": "server.key"},
         "connector": {"history_days": 1},
         "payments": {"approval_policy_file": "policy.json", "submit_interval_ms": 100},
         "principals": [{"identity": "erp", "roles": ["payer"]}, {"identity": "alice", "roles": ["approver"]},
                        {"identity": "bob", "roles": ["approver"]}, {"identity": "admin", "roles": ["admin"]}]}
        """.utf8).write(to: URL(fileURLWithPath: config))
      let socket = try NotifySocket(path: directory.appending("notify.sock"))
      let identities = try ["erp", "alice", "bob", "admin"].reduce(into: [String: ClientIdentityFiles]()) {
        $0[$1] = try pki.client(commonName: $1)
      }
      let first = try await RunningDaemon.start(config: config, socket: socket)
      func client(_ who: String, _ daemon: RunningDaemon) -> ClientConfiguration {
        pki.clientConfiguration(address: "127.0.0.1:\(daemon.port)", identity: identities[who]!)
      }
      let receipts = Shared<[(sequence: UInt64, hash: Data)]>([])

      // Payments waiting for approval, then approvers working through them until the kill.
      let paymentIDs = try await withBankLinkClient(client("erp", first)) { grpc in
        let payments = Banklink_V1_PaymentService.Client(wrapping: grpc)
        var ids: [String] = []
        for index in 0..<Self.approvalCrashPayments {
          let key = "approve-\(index)"
          let response = try await payments.createPayment(.with { $0.idempotencyKey = key; $0.instruction = Self.instruction(key) })
          #expect(response.payment.status == .pendingApproval)
          receipts.withLock { $0.append((response.receipt.journalSequence, response.receipt.entryHash)) }
          ids.append(response.payment.paymentID)
        }
        return ids
      }
      let queue = Shared(paymentIDs[...])
      let approved = Shared<[String: String]>([:])  // payment id → approver, acknowledged
      let stopAt = ContinuousClock.now.advanced(by: .seconds(20))
      async let approving: Void = withThrowingTaskGroup(of: Void.self) { group in
        for (worker, who) in ["alice", "bob", "alice", "bob"].enumerated() {
          let files = identities[who]!
          let configuration = client(who, first)
          group.addTask {
            let key = try Certificate.PrivateKey(pemEncoded: String(contentsOfFile: files.keyPath, encoding: .utf8))
            try await withBankLinkClient(configuration) { grpc in
              let payments = Banklink_V1_PaymentService.Client(wrapping: grpc)
              while ContinuousClock.now < stopAt, let id = queue.withLock({ $0.popFirst() }) {
                do {
                  let payment = try await payments.getPayment(.with { $0.paymentID = id }, options: Self.failFast)
                  let signature = try CertificateSignatures.sign(Array(payment.approvalDigest), with: key)
                  let response = try await payments.approvePayment(
                    .with {
                      $0.paymentID = id
                      $0.signature = Data(signature)
                      $0.requestID = "crash-\(worker)-\(id)"
                    }, options: Self.failFast)
                  receipts.withLock { $0.append((response.receipt.journalSequence, response.receipt.entryHash)) }
                  approved.withLock { $0[id] = who }
                } catch {
                  return  // the daemon is gone
                }
              }
            }
          }
        }
        try await group.waitForAll()
      }
      // Kill once some approvals are acknowledged and some are still to come.
      let killDeadline = ContinuousClock.now.advanced(by: .seconds(15))
      while approved.withLock({ $0.count }) < Self.approvalCrashPayments / 4 && ContinuousClock.now < killDeadline {
        try await Task.sleep(for: .milliseconds(5))
      }
      await first.kill9()
      try await approving
      _ = socket.receive(timeoutSeconds: 0)
      let acknowledged = approved.withLock { $0 }
      #expect(acknowledged.count >= Self.approvalCrashPayments / 4, "approvals must have been acknowledged before the kill")
      #expect(acknowledged.count < Self.approvalCrashPayments, "the kill must interrupt the approvals")

      let daemon = try await RunningDaemon.start(config: config, socket: socket)
      defer { if daemon.process.isRunning { daemon.process.terminate() } }
      try await withBankLinkClient(client("admin", daemon)) { grpc in
        let admin = Banklink_V1_AdminService.Client(wrapping: grpc)
        let report = try await admin.verifyAuditJournal(.init())
        #expect(report.valid, "\(report.message)")
        // Every receipt a client was given names an entry of the chain, with that hash.
        for receipt in receipts.withLock({ $0 }) {
          let page = try await admin.listAuditEntries(.with { $0.afterSequence = receipt.sequence - 1; $0.pageSize = 1 })
          #expect(page.entries.first?.sequence == receipt.sequence && page.entries.first?.entryHash == receipt.hash,
            "receipt \(receipt.sequence) is not in the journal")
        }
      }
      // Every acknowledged approval survived, by the approver who was told it was recorded.
      try await withBankLinkClient(client("erp", daemon)) { grpc in
        let payments = Banklink_V1_PaymentService.Client(wrapping: grpc)
        for (id, who) in acknowledged {
          let payment = try await payments.getPayment(.with { $0.paymentID = id })
          #expect(payment.approvals.map(\.approver) == [who], "\(id): \(payment.approvals.map(\.approver))")
          #expect(payment.status != .pendingApproval)
        }
      }
      await daemon.stop()
    }
  }

  static let approvalCrashPayments = 80
}
