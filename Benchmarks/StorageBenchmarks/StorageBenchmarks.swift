// Storage micro-benchmarks (ordo-one/benchmark): the LMDB work under GetBalance and
// CreatePayment without the gRPC stack, each beside a baseline measured in the same run.
//
//   make microbench          (swift package benchmark --target StorageBenchmarks)
//
// - "read: empty snapshot" is the baseline for "read: GetBalance snapshot" (account, balance and
//   reservation in one read transaction, as the handler does).
// - "create 32 payments, group commit off" is the baseline for "... on": 32 concurrent
//   CreatePayment ledger calls, each acknowledged only once its writes are synced to disk.
// - "journal: 100 unchained records per transaction" (what schema 1 wrote: a counter and a
//   record) is the baseline for "journal: 100 chained entries per transaction" (head read, two
//   SHA-256, entry, index and head written): the journal's own cost inside a CreatePayment
//   transaction, which "create 32 payments" includes in full.
// - "journal: verify 1,000,000 entries" reports entries per second (scaled throughput).
// - "approval: digest (baseline)" (the SHA-256 over the canonical encoding an approver signs) is
//   the baseline for the two checks ApprovePayment adds: "approval: P-256 signature check" and
//   "approval: OTP check" (unseal the secret with AES-GCM, HMAC-SHA1 over the ±1 step window).
//   The OTP check is measured here because a load test cannot exercise it: a code is accepted
//   once per principal and 30 s step.
// - "alerts: one alert to 1 subscriber (baseline)" is the baseline for "... to 1,000
//   subscribers": commit one alert, then wait until every subscriber's delivery loop
//   (AlertFeed, the code behind SubscribeAlerts, without gRPC) has read it from the store. The
//   figure is the latest subscriber's delivery, so its p99 bounds a subscriber's p99.
import BankLinkCore
import BankLinkJournal
import BankLinkPKI
import BankLinkServer
import BankLinkStore
import Benchmark
import Crypto
import Foundation
import Synchronization
import X509

/// Counts deliveries and wakes the benchmark once a number of them arrived.
final class Deliveries: Sendable {
  private struct State {
    var count = 0
    var target = Int.max
    var waiter: CheckedContinuation<Void, Never>?
  }
  private let state = Mutex(State())

  func add(_ count: Int = 1) {
    let waiter = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
      state.count += count
      guard state.count >= state.target, let waiter = state.waiter else { return nil }
      state.waiter = nil
      return waiter
    }
    waiter?.resume()
  }

  /// Waits until `target` deliveries arrived since the last reset, then resets the count.
  func wait(for target: Int) async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let ready = self.state.withLock { state -> Bool in
        if state.count >= target { return true }
        state.target = target
        state.waiter = continuation
        return false
      }
      if ready { continuation.resume() }
    }
    self.state.withLock {
      $0.count = 0
      $0.target = Int.max
    }
  }
}

/// A real store in a fresh temporary directory, holding six accounts with balances.
final class Fixture: Sendable {
  let directory: String
  let store: Store
  let cache: AccountCache
  let accountIDs: [String]

  init() async throws {
    self.directory = NSTemporaryDirectory() + "banklink-bench-\(UInt64.random(in: 0...UInt64.max))"
    self.store = try Store(configuration: .init(directory: self.directory, mapSizeMiB: 1024))
    self.cache = AccountCache(store: self.store)
    let accounts = [("icbc-cny-001", "CNY"), ("icbc-cny-002", "CNY"), ("icbc-usd-001", "USD"), ("boc-hkd-001", "HKD"),
      ("boc-usd-002", "USD"), ("db-eur-001", "EUR")].map { id, currency in
      Account(
        id: id, number: "6222 0000 \(id.count)", displayName: id, bankBIC: "ICBKCNBJ", bankName: "Bank",
        currency: CurrencyCode(currency)!)
    }
    self.accountIDs = accounts.map(\.id)
    try await self.cache.store(accounts: accounts, at: WallClock.now())
    let now = Instant(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000))
    for account in accounts {
      // Enough for any number of benchmark payments, within what a bank may report
      // (Limits.maxBankAmountMinorUnits: a larger balance is refused as malformed).
      let ledger = Money(minorUnits: Limits.maxBankAmountMinorUnits, currency: account.currency)
      try await self.cache.store(balance: LedgerBalance(accountID: account.id, ledger: ledger, asOf: now), syncedAt: now)
    }
  }

  func remove() {
    try? FileManager.default.removeItem(atPath: self.directory)
  }
}

func ledger(_ fixture: Fixture, groupCommit: Bool) -> PaymentLedger {
  PaymentLedger(
    writer: GroupCommitWriter(store: fixture.store, configuration: .init(groupCommit: groupCommit)),
    configuration: .init(approvalThresholdMajorUnits: 0),  // every payment waits for approval: no outbox
    now: { Instant(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000)) }
  )
}

let instruction = PaymentInstruction(
  debtorAccountID: "icbc-cny-001",
  creditor: Creditor(name: "Shanghai Huaxin Trading Co., Ltd.", accountNumber: "3100 2011 0904 0012 345", bic: "CMBCCNBS", country: "CN"),
  amount: Money(minorUnits: 100, currency: CurrencyCode("CNY")!),
  purpose: "benchmark", requestedExecutionDate: "", type: .domestic)

let benchmarks: @Sendable () -> Void = {
  let reads = Benchmark.Configuration(
    metrics: [.wallClock, .mallocCountTotal, .throughput], scalingFactor: .kilo, maxDuration: .seconds(3))
  let writes = Benchmark.Configuration(
    metrics: [.wallClock, .throughput], maxDuration: .seconds(5), maxIterations: 1_000)

  Benchmark("read: empty snapshot (baseline)", configuration: reads) { benchmark async throws in
    let fixture = try await Fixture()
    defer { fixture.remove() }
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
      blackHole(try fixture.store.withReadTransaction { _ in 0 })
    }
  }

  Benchmark("read: GetBalance snapshot", configuration: reads) { benchmark async throws in
    let fixture = try await Fixture()
    defer { fixture.remove() }
    let ids = fixture.accountIDs
    benchmark.startMeasurement()
    for index in benchmark.scaledIterations {
      blackHole(try fixture.cache.accountAndBalance(ids[index % ids.count]))
    }
  }

  let journal = Benchmark.Configuration(metrics: [.wallClock, .throughput], maxDuration: .seconds(5), maxIterations: 500)
  let entriesPerTransaction = 100

  Benchmark("journal: 100 unchained records per transaction (baseline)", configuration: journal) { benchmark async throws in
    let fixture = try await Fixture()
    defer { fixture.remove() }
    let counter = Array("bench_sequence".utf8)
    let now = WallClock.now()
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
      try fixture.store.withWriteTransaction { txn in
        for _ in 0..<entriesPerTransaction {
          var next: UInt64 = 1
          if let bytes = try txn.get(counter, in: .meta) {
            var reader = RecordReader(bytes)
            next = try reader.readUInt64() + 1
          }
          var value = RecordWriter(capacity: 8)
          value.write(next)
          try txn.put(counter, value.bytes, in: .meta)
          var record = RecordWriter(capacity: 128)
          record.write(UInt8(1))
          record.write(now.millisecondsSinceEpoch)
          record.write("erp")
          record.write("payment.created")
          record.write("pay-s000000000000001")
          record.write("123456 CNY icbc-cny-001 BL1764000000000123 pending_approval")
          try txn.put(AuditJournal.key(next), record.bytes, in: .principals)
        }
      }
    }
  }

  Benchmark("journal: 100 chained entries per transaction", configuration: journal) { benchmark async throws in
    let fixture = try await Fixture()
    defer { fixture.remove() }
    let now = WallClock.now()
    let details: AuditPayload = [
      "debtor_account": "icbc-cny-001", "amount_minor": "123456", "currency": "CNY", "end_to_end_id": "BL1764000000000123",
      "status": "pending_approval", "instruction_sha256": String(repeating: "ab", count: 32),
    ]
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
      try fixture.store.withWriteTransaction { txn in
        for _ in 0..<entriesPerTransaction {
          try AuditJournal.append(&txn, at: now, principal: "erp", action: "payment.created", object: "pay-s000000000000001", details: details)
        }
      }
    }
  }

  Benchmark(
    "journal: verify 1,000,000 entries",
    configuration: .init(metrics: [.wallClock, .throughput], scalingFactor: .mega, maxDuration: .seconds(30), maxIterations: 3)
  ) { benchmark async throws in
    let fixture = try await Fixture()
    defer { fixture.remove() }
    let now = WallClock.now()
    for block in 0..<1_000 {
      try fixture.store.withWriteTransaction { txn in
        for index in 0..<1_000 {
          try AuditJournal.append(
            &txn, at: now, principal: "erp", action: "payment.created", object: "pay-\(block)-\(index)",
            details: ["amount_minor": "123456", "currency": "CNY", "status": "approved"])
        }
      }
    }
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations.prefix(1) {
      let report = try fixture.store.withReadTransaction { try JournalVerifier.verify(in: $0) }
      precondition(report.valid && report.entriesVerified == 1_000_000, report.message)
    }
  }

  let checks = Benchmark.Configuration(metrics: [.wallClock, .throughput], scalingFactor: .kilo, maxDuration: .seconds(3))

  Benchmark("approval: digest (baseline)", configuration: checks) { benchmark in
    for index in benchmark.scaledIterations {
      blackHole(ApprovalDigest.digest(paymentID: "pay-s000000000000001", instruction: instruction, policyVersion: 3, level: index & 1))
    }
  }

  Benchmark("approval: P-256 signature check", configuration: checks) { benchmark in
    let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
    let digest = ApprovalDigest.digest(paymentID: "pay-s000000000000001", instruction: instruction, policyVersion: 3, level: 1)
    let signature = try! CertificateSignatures.sign(digest, with: key)
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
      precondition(CertificateSignatures.isValid(signature, for: digest, by: key.publicKey))
    }
  }

  Benchmark("approval: OTP check", configuration: checks) { benchmark in
    let vault = OTPVault(key: SymmetricKey(size: .bits256))
    let secret = TOTP.newSecret()
    let sealed = try! vault.seal(secret, for: "alice")
    let now = WallClock.now()
    // A code from the step before, inside the ±1 step window.
    let code = TOTP.code(secret: secret, step: TOTP.step(at: now) - 1)
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
      let opened = try! vault.unseal(sealed, for: "alice")
      precondition(TOTP.matchingStep(code, secret: opened, at: now) != nil)
    }
  }

  for subscribers in [1, 1_000] {
    Benchmark(
      subscribers == 1 ? "alerts: one alert to 1 subscriber (baseline)" : "alerts: one alert to 1,000 subscribers",
      configuration: .init(metrics: [.wallClock, .throughput], maxDuration: .seconds(10), maxIterations: 2_000)
    ) { benchmark async throws in
      let fixture = try await Fixture()
      defer { fixture.remove() }
      let hub = try AlertHub(store: fixture.store)
      let writer = GroupCommitWriter(store: fixture.store)
      let deliveries = Deliveries()
      try await withThrowingTaskGroup(of: Void.self) { group in
        for index in 0..<subscribers {
          let subscription = try hub.subscribe(principal: "bench-\(index % 4)")
          group.addTask {
            defer { subscription.cancel() }
            try await AlertFeed.run(
              store: fixture.store, hub: hub, subscription: subscription, after: 0, filter: AlertFilter(),
              send: { alerts in deliveries.add(alerts.count) }, caughtUp: { _ in deliveries.add() })
          }
        }
        await deliveries.wait(for: subscribers)  // every subscriber caught up
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
          try await writer.write { txn in
            try AlertLog.raise(&txn, at: WallClock.now(), severity: .warning, kind: .anomaly, accountID: "icbc-cny-001", message: "bench")
          }
          await deliveries.wait(for: subscribers)
        }
        benchmark.stopMeasurement()
        hub.shutDown()
        try await group.waitForAll()
      }
    }
  }

  for groupCommit in [false, true] {
    Benchmark("create 32 payments, group commit \(groupCommit ? "on" : "off")", configuration: writes) { benchmark async throws in
      let fixture = try await Fixture()
      defer { fixture.remove() }
      let payments = ledger(fixture, groupCommit: groupCommit)
      let run = UInt64.random(in: 0...UInt64.max)
      var round = 0
      benchmark.startMeasurement()
      for _ in benchmark.scaledIterations {
        round += 1
        let thisRound = round
        try await withThrowingTaskGroup(of: Void.self) { group in
          for caller in 0..<32 {
            group.addTask {
              _ = try await payments.create(instruction, idempotencyKey: "b-\(run)-\(thisRound)-\(caller)", creator: "erp")
            }
          }
          try await group.waitForAll()
        }
      }
    }
  }
}
