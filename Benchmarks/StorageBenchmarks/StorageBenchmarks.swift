// Storage micro-benchmarks (ordo-one/benchmark): the LMDB work under GetBalance and
// CreatePayment without the gRPC stack, each beside a baseline measured in the same run.
//
//   make microbench          (swift package benchmark --target StorageBenchmarks)
//
// - "read: empty snapshot" is the baseline for "read: GetBalance snapshot" (account, balance and
//   reservation in one read transaction, as the handler does).
// - "create 32 payments, group commit off" is the baseline for "... on": 32 concurrent
//   CreatePayment ledger calls, each acknowledged only once its writes are synced to disk.
import BankLinkCore
import BankLinkServer
import BankLinkStore
import Benchmark
import Foundation

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
      // Enough for any number of benchmark payments.
      let ledger = Money(minorUnits: 1 << 60, currency: account.currency)
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
