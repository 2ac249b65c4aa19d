import BankLinkCore
import BankLinkStore
import BankLinkTestSupport
import Foundation
import Testing

@Suite("LMDB store on a real environment in a temporary directory")
struct StoreTests {
  static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

  @Test("committed data survives closing and reopening the environment")
  func survivesReopen() async throws {
    try await withTemporaryDirectory { directory in
      let path = directory.appending("data")
      do {
        let store = try Store(configuration: .init(directory: path, mapSizeMiB: 8))
        try store.withWriteTransaction { txn in
          try txn.put(Self.bytes("alice"), Self.bytes("approver"), in: .principals)
          try txn.put(Self.bytes("erp"), Self.bytes("payer"), in: .principals)
        }
      }
      let reopened = try Store(configuration: .init(directory: path, mapSizeMiB: 8))
      let values = try reopened.withReadTransaction { txn in
        (try txn.get(Self.bytes("alice"), in: .principals), try txn.get(Self.bytes("erp"), in: .principals))
      }
      #expect(values.0 == Self.bytes("approver"))
      #expect(values.1 == Self.bytes("payer"))
      #expect(try reopened.storedSchemaVersion() == Store.schemaVersion)
    }
  }

  @Test("a throwing write transaction writes nothing")
  func abortedTransactionWritesNothing() async throws {
    struct Boom: Error {}
    try await withTemporaryDirectory { directory in
      let store = try Store(configuration: .init(directory: directory.path, mapSizeMiB: 8))
      #expect(throws: Boom.self) {
        try store.withWriteTransaction { txn in
          try txn.put(Self.bytes("half"), Self.bytes("written"), in: .principals)
          throw Boom()
        }
      }
      let value = try store.withReadTransaction { txn in try txn.get(Self.bytes("half"), in: .principals) }
      #expect(value == nil)
    }
  }

  @Test("async write: committed when it returns, nothing written when it throws, concurrent writers all land")
  func asyncWrite() async throws {
    struct Boom: Error {}
    try await withTemporaryDirectory { directory in
      let store = try Store(configuration: .init(directory: directory.path, mapSizeMiB: 8))
      let echoed = try await store.write { txn in
        try txn.put(Self.bytes("async"), Self.bytes("kept"), in: .principals)
        return "done"
      }
      #expect(echoed == "done")
      await #expect(throws: Boom.self) {
        try await store.write { txn in
          try txn.put(Self.bytes("half"), Self.bytes("written"), in: .principals)
          throw Boom()
        }
      }
      try await withThrowingTaskGroup(of: Void.self) { group in
        for index in 0..<50 {
          group.addTask {
            try await store.write { txn in try txn.put(Self.bytes("key-\(index)"), Self.bytes("\(index)"), in: .principals) }
          }
        }
        try await group.waitForAll()
      }
      let (kept, half, count) = try store.withReadTransaction { txn in
        var count = 0
        try txn.scan(.principals) { key, _ in
          if key.starts(with: Self.bytes("key-")) { count += 1 }
          return true
        }
        return (try txn.get(Self.bytes("async"), in: .principals), try txn.get(Self.bytes("half"), in: .principals), count)
      }
      #expect(kept == Self.bytes("kept"))
      #expect(half == nil)
      #expect(count == 50)
    }
  }

  @Test("map full is the typed error naming the setting, and reads keep working after it")
  func mapFull() async throws {
    try await withTemporaryDirectory { directory in
      let store = try Store(configuration: .init(directory: directory.path, mapSizeMiB: Limits.minMapSizeMiB))
      try store.withWriteTransaction { txn in try txn.put(Self.bytes("kept"), Self.bytes("yes"), in: .principals) }

      let value = [UInt8](repeating: 0xAB, count: 64 * 1024)
      var failure: StoreError?
      // 1 MiB cannot hold 64 records of 64 KiB: one of these commits must fail.
      for batch in 0..<64 {
        do {
          try store.withWriteTransaction { txn in
            try txn.put(Self.bytes("filler-\(batch)"), value, in: .principals)
          }
        } catch let error as StoreError {
          failure = error
          break
        }
      }
      let error = try #require(failure)
      #expect(error.code == .mapFull)
      #expect(error.message.contains("storage.map_size_mib"))

      let kept = try store.withReadTransaction { txn in try txn.get(Self.bytes("kept"), in: .principals) }
      #expect(kept == Self.bytes("yes"))
    }
    // The operator's fix: the same data directory opened with a larger map takes writes again,
    // and nothing committed before the failure was lost.
    try await withTemporaryDirectory { directory in
      do {
        let small = try Store(configuration: .init(directory: directory.path, mapSizeMiB: Limits.minMapSizeMiB))
        var batch = 0
        while true {
          do {
            try small.withWriteTransaction { txn in
              try txn.put(Self.bytes("filler-\(batch)"), [UInt8](repeating: 0xAB, count: 64 * 1024), in: .principals)
            }
            batch += 1
          } catch let error as StoreError {
            #expect(error.code == .mapFull)
            break
          }
        }
        #expect(batch > 0)
      }
      let larger = try Store(configuration: .init(directory: directory.path, mapSizeMiB: 8))
      try larger.withWriteTransaction { txn in
        #expect(try txn.delete(Self.bytes("filler-0"), in: .principals))
        try txn.put(Self.bytes("after"), Self.bytes("fits"), in: .principals)
      }
      #expect(try larger.withReadTransaction { try $0.get(Self.bytes("after"), in: .principals) } == Self.bytes("fits"))
    }
  }

  @Test("a data directory of another schema version is refused")
  func schemaMismatch() async throws {
    try await withTemporaryDirectory { directory in
      do {
        _ = try Store(configuration: .init(directory: directory.path, mapSizeMiB: 8, schemaVersion: Store.schemaVersion))
      }
      let error = #expect(throws: StoreError.self) {
        _ = try Store(configuration: .init(directory: directory.path, mapSizeMiB: 8, schemaVersion: Store.schemaVersion + 1))
      }
      #expect(error?.code == .schemaMismatch)
      #expect(error?.message.contains("schema version \(Store.schemaVersion)") == true)
    }
  }

  @Test("a directory of schema 2 opens as schema 3 without a rewrite; read-only it is read as it is; an older build would refuse it")
  func formatOnlySchemaStep() async throws {
    try await withTemporaryDirectory { directory in
      do {
        let old = try Store(configuration: .init(directory: directory.path, mapSizeMiB: 8, schemaVersion: 2))
        try old.withWriteTransaction { try $0.put(Self.bytes("kept"), Self.bytes("as it was"), in: .principals) }
      }
      // Read-only (a copy verified by `banklink audit verify`): opened, nothing written.
      let copy = try Store(configuration: .init(directory: directory.path, mapSizeMiB: 8, readOnly: true))
      #expect(try copy.storedSchemaVersion() == 2)
      let store = try Store(configuration: .init(directory: directory.path, mapSizeMiB: 8))
      #expect(store.migratedFrom == 2)
      #expect(try store.storedSchemaVersion() == 3)
      #expect(try store.withReadTransaction { try $0.get(Self.bytes("kept"), in: .principals) } == Self.bytes("as it was"))
      // The previous build (schema 2) refuses the directory now.
      let refused = #expect(throws: StoreError.self) {
        _ = try Store(configuration: .init(directory: directory.path, mapSizeMiB: 8, schemaVersion: 2))
      }
      #expect(refused?.code == .schemaMismatch)
    }
  }

  @Test("a joined scan finds each record's namesake in the other database, across gaps long and short, as look-ups would")
  func joinedScan() async throws {
    try await withTemporaryDirectory { directory in
      let store = try Store(configuration: .init(directory: directory.path, mapSizeMiB: 8))
      // Primary keys: every third number; the other database: some of them, many keys between
      // (gaps longer than the steps a joined scan takes before it seeks), keys before the first
      // and after the last, and keys that are a prefix of primary keys.
      let primary = stride(from: 0, to: 600, by: 3).map { String(format: "k%04d", $0) }
      var other = ["a", "k", "k000", "z"] + stride(from: 0, to: 600, by: 6).map { String(format: "k%04d", $0) }
      other += (300..<400).map { String(format: "k%04d", $0) } + ["k0450x"]
      try store.withWriteTransaction { txn in
        for key in primary { try txn.put(Self.bytes(key), Self.bytes("p" + key), in: .payments) }
        for key in Set(other) { try txn.put(Self.bytes(key), Self.bytes("o" + key), in: .reconPaymentMatches) }
      }
      for start in [nil, Self.bytes("k0300"), Self.bytes("k0301")] {
        var joined: [String: String?] = [:]
        var expected: [String: String?] = [:]
        try store.withReadTransaction { txn in
          try txn.scanInPlace(.payments, joining: .reconPaymentMatches, from: start) { key, value, match in
            let name = String(decoding: key, as: UTF8.self)
            #expect(String(decoding: value, as: UTF8.self) == "p" + name)
            joined.updateValue(match.map { String(decoding: $0, as: UTF8.self) }, forKey: name)
            return true
          }
          try txn.scan(.payments, from: start) { key, _ in
            expected.updateValue(
              try txn.get(key, in: .reconPaymentMatches).map { String(decoding: $0, as: UTF8.self) }, forKey: String(decoding: key, as: UTF8.self))
            return true
          }
        }
        #expect(joined == expected && joined.count == primary.filter { start == nil || $0 >= String(decoding: start!, as: UTF8.self) }.count)
        #expect(joined.values.contains { $0 == nil } && joined.values.contains { $0 != nil })
      }
    }
  }

  @Test("write transactions run on one named writer thread, on the CPUs configured for it")
  func writerThreadPlacement() async throws {
    try await withTemporaryDirectory { directory in
      let store = try Store(configuration: .init(directory: directory.path, mapSizeMiB: 16, writerCPUs: [0]))
      let (cpus, name) = try await store.write { _ in
        (currentThreadCPUs(), (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "")
      }
      #expect(cpus == [0])
      #expect(name == "banklink-writer\n")
      // Group-committed writes use the same thread.
      let grouped = try await GroupCommitWriter(store: store).write { _ in currentThreadCPUs() }
      #expect(grouped == [0])
    }
  }

  @Test("a writer CPU the process cannot use is refused, naming the setting")
  func writerThreadBadCPU() async throws {
    try await withTemporaryDirectory { directory in
      for cpus in [[Limits.maxCPUIndex], [0, Limits.maxCPUIndex]] {
        // Also when another CPU of the list is usable: the kernel would drop the bad one silently.
        let error = #expect(throws: StoreError.self) {
          _ = try Store(configuration: .init(directory: directory.path, mapSizeMiB: 16, writerCPUs: cpus))
        }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains("storage.writer_cpus") == true)
      }
    }
  }

  @Test("a map size outside the limits is refused before anything is opened")
  func mapSizeLimits() async throws {
    try await withTemporaryDirectory { directory in
      let error = #expect(throws: StoreError.self) {
        _ = try Store(configuration: .init(directory: directory.path, mapSizeMiB: 0))
      }
      #expect(error?.code == .invalidArgument)
      #expect(error?.message.contains("storage.map_size_mib") == true)
    }
  }

  @Test("scans visit keys in order from a start key, and stop when asked")
  func scanOrder() async throws {
    try await withTemporaryDirectory { directory in
      let store = try Store(configuration: .init(directory: directory.path, mapSizeMiB: 8))
      try store.withWriteTransaction { txn in
        for key in ["d", "a", "c", "b", "e"] {
          try txn.put(Self.bytes(key), Self.bytes(key.uppercased()), in: .principals)
        }
      }
      var visited: [String] = []
      try store.withReadTransaction { txn in
        try txn.scan(.principals, from: Self.bytes("b")) { key, value in
          visited.append(String(decoding: key, as: UTF8.self) + String(decoding: value, as: UTF8.self))
          return visited.count < 3
        }
      }
      #expect(visited == ["bB", "cC", "dD"])
    }
  }

  @Test("records: fields read back in place, truncation refused at every length, a payment's state read without decoding it")
  func recordCodec() throws {
    var writer = RecordWriter()
    writer.write(UInt8(7))
    writer.write(UInt32(0xDEAD_BEEF))
    writer.write(UInt64.max - 1)
    writer.write(Int64(-42))
    writer.write("")
    writer.write("江苏恒瑞 Logistics")
    writer.write("a plain string longer than a small string's fifteen bytes")
    let bytes = writer.bytes
    var reader = RecordReader(bytes)
    #expect(try reader.readUInt8() == 7 && reader.readUInt32() == 0xDEAD_BEEF && reader.readUInt64() == UInt64.max - 1)
    #expect(try reader.readInt64() == -42 && reader.readString() == "" && reader.readString() == "江苏恒瑞 Logistics")
    #expect(try reader.readString() == "a plain string longer than a small string's fifteen bytes")
    try reader.finish()
    // Every shorter record fails with `corrupted`, never reads past its end.
    for length in 0..<bytes.count {
      var short = RecordReader(Array(bytes.prefix(length)))
      let error = #expect(throws: StoreError.self) {
        _ = try short.readUInt8()
        _ = try short.readUInt32()
        _ = try short.readUInt64()
        _ = try short.readInt64()
        for _ in 0..<3 { _ = try short.readString() }
      }
      #expect(error?.message.contains("truncated") == true, "\(length): \(String(describing: error))")
    }
    let now = Instant(millisecondsSinceEpoch: 1_796_342_400_000)
    for status in PaymentStatus.allCases {
      let payment = Payment(
        id: "pay-s000000000000001",
        instruction: PaymentInstruction(
          debtorAccountID: "icbc-cny-001",
          creditor: Creditor(name: "Supplier Co., Ltd.", accountNumber: "6222", iban: "", bic: "PCBCCNBJ", country: "CN"),
          amount: Money(minorUnits: 12_345, currency: CurrencyCode("CNY")!), purpose: "INV-1", requestedExecutionDate: "2026-12-04",
          type: .domestic),
        status: status, creator: "erp", idempotencyKey: "k", endToEndID: "BL1", createdAt: now, updatedAt: now)
      #expect(try Payment.status(ofRecord: payment.record) == status)
      #expect(try Payment(record: payment.record) == payment)
    }
    #expect(throws: StoreError.self) { try Payment.status(ofRecord: [1, 0, 0]) }
    // The state read in place stops at the record's end at every length, never past it.
    let record = Payment(
      id: "pay-s000000000000002",
      instruction: PaymentInstruction(
        debtorAccountID: "icbc-cny-001", creditor: Creditor(name: "S", accountNumber: "6222", iban: "", bic: "", country: "CN"),
        amount: Money(minorUnits: 1, currency: CurrencyCode("CNY")!), purpose: "", requestedExecutionDate: "2026-12-04", type: .domestic),
      status: .submitted, creator: "erp", idempotencyKey: "k", endToEndID: "BL2", createdAt: now, updatedAt: now
    ).record
    let statusEnd = record.count - (3 * 4 + 2 * 8 + 4 * 4 + "erp".utf8.count + "k".utf8.count + "BL2".utf8.count)
    for length in 0..<statusEnd {
      let error = #expect(throws: StoreError.self) { try Payment.status(ofRecord: Array(record.prefix(length))) }
      #expect(error?.code == .corrupted, "\(length)")
    }
    #expect(try Payment.status(ofRecord: Array(record.prefix(statusEnd))) == .submitted)
  }

  @Test("every database reaches its own LMDB handle; one the store did not open is a typed error")
  func databaseHandles() async throws {
    try await withTemporaryDirectory { directory in
      // As many as the environment holds: the handle table at its fullest.
      let extra = (0..<(Limits.maxNamedDatabases - Database.all.count)).map { Database("extra_\($0)") }
      let databases = Database.all + extra
      let store = try Store(configuration: .init(directory: directory.path, mapSizeMiB: 8, databases: databases))
      try store.withWriteTransaction { txn in
        for database in databases { try txn.put(Self.bytes("which"), Self.bytes(database.name), in: database) }
      }
      // A database made anew (not the static the store opened) finds the same handle.
      let found = try store.withReadTransaction { txn in
        try databases.map { (try txn.get(Self.bytes("which"), in: Database($0.name)), try txn.count($0)) }
      }
      for (database, (value, count)) in zip(databases, found) {
        // (The store keeps its schema version in `meta` too.)
        #expect(value == Self.bytes(database.name) && (count == 1 || database == .meta), "\(database)")
      }
      let error = #expect(throws: StoreError.self) {
        try store.withReadTransaction { txn in try txn.get(Self.bytes("which"), in: Database("never_opened")) }
      }
      #expect(error?.code == .notFound)
    }
  }

  @Test("append: only a key past the last one is written; any other is refused and overwrites nothing")
  func appendOnly() async throws {
    try await withTemporaryDirectory { directory in
      let store = try Store(configuration: .init(directory: directory.path, mapSizeMiB: 8))
      try store.withWriteTransaction { txn in
        try txn.append([0, 1], Self.bytes("first"), in: .principals)
        try txn.append([0, 2], Self.bytes("second"), in: .principals)
      }
      for key: [UInt8] in [[0, 2], [0, 1], [0, 1, 5], [0]] {
        let error = #expect(throws: StoreError.self) {
          try store.withWriteTransaction { txn in try txn.append(key, Self.bytes("overwrite"), in: .principals) }
        }
        #expect(error?.code == .corrupted, "\(key)")
      }
      try store.withWriteTransaction { txn in try txn.append([0, 3], Self.bytes("third"), in: .principals) }
      let values = try store.withReadTransaction { txn in
        try [[UInt8]]([[0, 1], [0, 2], [0, 3]]).map { try txn.get($0, in: .principals) }
      }
      #expect(values == [Self.bytes("first"), Self.bytes("second"), Self.bytes("third")])
    }
  }
}
