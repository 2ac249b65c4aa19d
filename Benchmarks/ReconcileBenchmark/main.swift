// Reconciliation at scale (`make bench-reconcile`): ENTRIES booked entries (default 1,000,000)
// against as many payments of one account — 90 % booked with their EndToEndId, 8 % without a
// reference (found by amount, value date and counterparty), 2 % with nothing to match — in a
// real LMDB store in a temporary directory. Setup (payments written directly, the statement
// imported through StatementStore from a generated camt.053) is timed apart from the run.
//
// Figures: the run's wall time and CPU time, beside a baseline measured in the same process on
// the same data: one read transaction that decodes every entry and payment in scope (what any
// run must at least do); the process's peak RSS after the run; and the bytes its commits wrote.
import BankLinkCore
import BankLinkServer
import BankLinkStore
import Foundation

@main
struct ReconcileBenchmark {
  static func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
  }

  static func peakRSSMiB() -> Int {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    let line = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") } ?? ""
    return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
  }

  /// The process's anonymous (heap) resident memory, which unlike the peak RSS leaves out the
  /// store's memory-mapped file pages that a run touches.
  static func rssAnonMiB() -> Int {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    let line = status.split(separator: "\n").first { $0.hasPrefix("RssAnon:") } ?? ""
    return (Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
  }

  /// Samples ``rssAnonMiB()`` every 20 ms on a thread of its own and keeps the largest.
  final class AnonymousPeak: @unchecked Sendable {
    private let lock = NSLock()
    private var peak = 0
    private var running = true

    init() {
      Thread.detachNewThread {
        while self.lock.withLock({ self.running }) {
          let sample = ReconcileBenchmark.rssAnonMiB()
          self.lock.withLock { self.peak = max(self.peak, sample) }
          usleep(20_000)
        }
      }
    }

    func stop() -> Int {
      let sample = ReconcileBenchmark.rssAnonMiB()
      return self.lock.withLock {
        self.running = false
        return max(self.peak, sample)
      }
    }
  }

  /// Bytes this process has passed to write system calls (`wchar` of `/proc/self/io`): LMDB
  /// writes its commits' dirty pages with `pwritev`, so a run's difference is what it wrote.
  static func bytesWritten() -> Int64 {
    let io = (try? String(contentsOfFile: "/proc/self/io", encoding: .utf8)) ?? ""
    let line = io.split(separator: "\n").first { $0.hasPrefix("wchar:") } ?? ""
    return Int64(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
  }

  static func measure<T>(_ label: String, _ body: () throws -> T) rethrows -> (T, wall: Double, cpu: Double) {
    let cpu = Self.cpuSeconds()
    let start = ContinuousClock.now
    let result = try body()
    let wall = (ContinuousClock.now - start) / .seconds(1)
    let used = Self.cpuSeconds() - cpu
    print(String(format: "%@: %.2f s wall, %.2f s CPU", label, wall, used))
    return (result, wall, used)
  }

  /// `count` settled payments of the simulator's first account, written directly into a new
  /// data directory (the start-up benchmark's large data set).
  static func settledPayments(_ count: Int, directory: String) throws {
    let store = try Store(configuration: .init(directory: directory, mapSizeMiB: 16 * 1024))
    let now = Instant(millisecondsSinceEpoch: 1_796_342_400_000)
    let cny = CurrencyCode("CNY")!
    _ = try Self.measure("setup: \(count) settled payments written") {
      var index = 0
      while index < count {
        let end = min(index + 50_000, count)
        try store.withWriteTransaction { txn in
          for i in index..<end {
            let id = "pay-s" + String(format: "%015d", i + 1)
            let endToEnd = "BS" + String(format: "%013d", i)
            let payment = Payment(
              id: id,
              instruction: PaymentInstruction(
                debtorAccountID: "icbc-cny-001",
                creditor: Creditor(name: "Supplier \(i) Trading Co., Ltd.", accountNumber: "6222\(i)", bic: "PCBCCNBJ", country: "CN"),
                amount: Money(minorUnits: Int64(100 + i % 100_000), currency: cny), purpose: "INV-\(i)", requestedExecutionDate: now.isoDate,
                type: .domestic),
              status: .settled, creator: "erp", idempotencyKey: "k\(i)", endToEndID: endToEnd, createdAt: now, updatedAt: now)
            try txn.put(Array(id.utf8), payment.record, in: .payments)
            try txn.put(Array(endToEnd.utf8), Array(id.utf8), in: .paymentsByEndToEnd)
          }
        }
        index = end
      }
    }
  }

  static func main() async throws {
    let count = Int(ProcessInfo.processInfo.environment["ENTRIES"] ?? "") ?? 1_000_000
    // `make bench-startup` only needs a data directory of settled payments, kept.
    if let keep = ProcessInfo.processInfo.environment["PAYMENTS_ONLY_DATA_DIR"] {
      try Self.settledPayments(count, directory: keep)
      return
    }
    let directory = NSTemporaryDirectory() + "/banklink-reconcile-\(getpid())"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let store = try Store(configuration: .init(directory: directory + "/data", mapSizeMiB: 16 * 1024))
    let now = Instant(millisecondsSinceEpoch: 1_796_342_400_000)  // 2026-12-03
    let date = now.isoDate
    let cny = CurrencyCode("CNY")!
    let cache = AccountCache(store: store)
    _ = try await cache.store(
      accounts: [Account(id: "bench-cny", number: "6222000011112222", displayName: "Bench", bankBIC: "ICBKCNBJ", bankName: "Bench", currency: cny)],
      at: now)

    let exact = count * 90 / 100
    let heuristic = count * 8 / 100
    func amount(_ index: Int) -> Int64 { index < exact ? Int64(100 + index % 100_000) : Int64(50_000_000 + index) }
    func endToEnd(_ index: Int) -> String { "BE" + String(format: "%013d", index) }

    // Payments: written directly, submitted to the bank, 50,000 per transaction.
    _ = try Self.measure("setup: \(count) payments written") {
      var index = 0
      while index < count {
        let end = min(index + 50_000, count)
        try store.withWriteTransaction { txn in
          for i in index..<end {
            let id = "pay-s" + String(format: "%015d", i + 1)
            let payment = Payment(
              id: id,
              instruction: PaymentInstruction(
                debtorAccountID: "bench-cny",
                creditor: Creditor(name: "Supplier \(i) Trading Co., Ltd.", accountNumber: "6222\(i)", bic: "PCBCCNBJ", country: "CN"),
                amount: Money(minorUnits: amount(i), currency: cny), purpose: "INV-\(i)", requestedExecutionDate: date, type: .domestic),
              status: .submitted, creator: "erp", idempotencyKey: "k\(i)", endToEndID: endToEnd(i), createdAt: now, updatedAt: now)
            try txn.put(Array(id.utf8), payment.record, in: .payments)
            try txn.put(Array(endToEnd(i).utf8), Array(id.utf8), in: .paymentsByEndToEnd)
          }
        }
        index = end
      }
    }

    // The statement: a camt.053 of `count` entries, imported as a clerk would.
    let file = directory + "/statement.xml"
    _ = try Self.measure("setup: camt.053 of \(count) entries generated") {
      _ = FileManager.default.createFile(atPath: file, contents: nil)
      let handle = FileHandle(forWritingAtPath: file)!
      var total: Int64 = 0
      for i in 0..<count { total += amount(i) }
      handle.write(Data("""
        <?xml version="1.0" encoding="UTF-8"?>
        <Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt>
        <GrpHdr><MsgId>BENCH</MsgId><CreDtTm>\(date)T23:00:00Z</CreDtTm></GrpHdr><Stmt><Id>BENCH</Id><ElctrncSeqNb>1</ElctrncSeqNb>
        <Acct><Id><Othr><Id>6222000011112222</Id></Othr></Id><Ccy>CNY</Ccy></Acct>
        <Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="CNY">\(total / 100).\(String(format: "%02d", total % 100))</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>\(date)</Dt></Dt></Bal>
        <Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="CNY">0.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>\(date)</Dt></Dt></Bal>

        """.utf8))
      var chunk = ""
      for i in 0..<count {
        let minor = i < exact + heuristic ? amount(i) : Int64(90_000_000 + i)
        let reference = i < exact ? "<Refs><EndToEndId>\(endToEnd(i))</EndToEndId></Refs>" : ""
        chunk += """
          <Ntry><Amt Ccy="CNY">\(minor / 100).\(String(format: "%02d", minor % 100))</Amt><CdtDbtInd>DBIT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>\
          <BookgDt><Dt>\(date)</Dt></BookgDt><ValDt><Dt>\(date)</Dt></ValDt><AcctSvcrRef>B\(i)</AcctSvcrRef>\
          <NtryDtls><TxDtls>\(reference)<RltdPties><Cdtr><Pty><Nm>SUPPLIER \(i) TRADING CO LTD</Nm></Pty></Cdtr></RltdPties>\
          <RmtInf><Ustrd>INV-\(i)</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>

          """
        if chunk.utf8.count > 1 << 20 {
          handle.write(Data(chunk.utf8))
          chunk = ""
        }
      }
      handle.write(Data((chunk + "</Stmt></BkToCstmrStmt></Document>\n").utf8))
      try handle.close()
    }
    let statements = StatementStore(store: store, cache: cache, now: { now })
    let size = (try FileManager.default.attributesOfItem(atPath: file)[.size] as? NSNumber)?.int64Value ?? 0
    let cpu = Self.cpuSeconds()
    let start = ContinuousClock.now
    let imported = try await statements.importFile(
      at: file, sha256: String(repeating: "ab", count: 32), bytes: size, fileName: "statement.xml", declared: nil, importedBy: "bench")
    print(String(format: "setup: import of %d entries (%d MiB): %.2f s wall, %.2f s CPU", imported.entries, size >> 20,
      (ContinuousClock.now - start) / .seconds(1), Self.cpuSeconds() - cpu))

    // Baseline: decode every entry and payment in scope in one read transaction.
    let (decoded, baseWall, baseCPU) = try Self.measure("baseline: read and decode every entry and payment") {
      try store.withReadTransaction { txn -> Int in
        var n = 0
        try txn.scan(.statementEntries) { key, value in
          _ = try StoredStatementEntry(key: key, record: value)
          n += 1
          return true
        }
        try txn.scan(.payments) { _, value in
          _ = try Payment(record: value)
          n += 1
          return true
        }
        return n
      }
    }
    let pagesBefore = try Self.pages(store)
    let rssBefore = Self.peakRSSMiB()
    let anonBefore = Self.rssAnonMiB()
    let anonymous = AnonymousPeak()
    let writtenBefore = Self.bytesWritten()
    let reconciler = Reconciler(store: store, now: { now })
    let (outcome, runWall, runCPU) = try Self.measure("run: reconcile \(count) entries against \(count) payments") {
      try reconciler.reconcile(accountID: "bench-cny", fromDate: date, toDate: date, by: "bench")
    }
    let anonPeak = anonymous.stop()
    let written = Self.bytesWritten() - writtenBefore
    let report = outcome.report
    print("run: matched \(report.matched), unmatched entries \(report.unmatchedEntries), unmatched payments \(report.unmatchedPayments), settled \(report.settled)")
    print(String(format: "ratio run/baseline: %.1f× wall, %.1f× CPU (baseline decoded %d records)", runWall / baseWall, runCPU / baseCPU, decoded))
    print("peak RSS: \(rssBefore) MiB before the run, \(Self.peakRSSMiB()) MiB after (with the store's mapped pages)")
    print("anonymous (heap) RSS: \(anonBefore) MiB before the run, peak \(anonPeak) MiB during it")
    print("written by the run's commits: \(written >> 20) MiB, \(written / Int64(max(count, 1))) bytes per entry")
    // Where those bytes go: the pages each database gained, per entry.
    let pagesAfter = try Self.pages(store)
    let grown = pagesAfter.map { ($0.key, $0.value - (pagesBefore[$0.key] ?? 0)) }.filter { $0.1 != 0 }.sorted { $0.1 > $1.1 }
    for (name, pages) in grown {
      print("  \(name): \(pages) pages, \(Int64(pages) * 4096 / Int64(max(count, 1))) bytes per entry")
    }
  }

  /// Pages per database, by name (LMDB's statistics).
  static func pages(_ store: Store) throws -> [String: Int] {
    try store.withReadTransaction { txn in
      var pages: [String: Int] = [:]
      for database in Database.all { pages[database.name] = try txn.pages(database) }
      return pages
    }
  }
}
