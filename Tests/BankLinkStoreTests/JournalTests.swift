import BankLinkCore
@testable import BankLinkJournal
import BankLinkStore
import BankLinkTestSupport
import Foundation
import Testing

@Suite("Audit journal on a real LMDB environment")
struct JournalTests {
  static func open(_ path: String, schemaVersion: UInt32 = Store.schemaVersion, migrations: [SchemaMigration] = []) throws -> Store {
    try Store(configuration: .init(directory: path, mapSizeMiB: 16, schemaVersion: schemaVersion, migrations: migrations))
  }

  /// Appends `count` entries, `concurrency` writers at a time, each in its own transaction.
  static func fill(_ store: Store, count: Int, concurrency: Int = 8) async throws -> [JournalReceipt] {
    try await withThrowingTaskGroup(of: JournalReceipt.self) { group in
      var receipts: [JournalReceipt] = []
      for index in 0..<count {
        if index >= concurrency, let receipt = try await group.next() { receipts.append(receipt) }
        group.addTask {
          try await store.write { txn in
            try AuditJournal.append(
              &txn, at: Instant(millisecondsSinceEpoch: 1_764_000_000_000 + Int64(index)), principal: "erp",
              action: "payment.created", object: "pay-\(index % 5)", details: ["n": String(index), "note": "line\nbreak \"q\""])
          }
        }
      }
      return try await group.reduce(into: receipts) { $0.append($1) }
    }
  }

  static func verify(_ store: Store, from: UInt64 = 0, to: UInt64 = 0) throws -> JournalVerifier.Report {
    try store.withReadTransaction { try JournalVerifier.verify(from: from, to: to, in: $0) }
  }

  @Test("concurrent appends get gap-free sequences in commit order; the chain verifies and ends at the last receipt")
  func appendAndVerify() async throws {
    try await withTemporaryDirectory { directory in
      let store = try Self.open(directory.path)
      #expect(try Self.verify(store).valid)  // empty
      let receipts = try await Self.fill(store, count: 200)
      #expect(receipts.map(\.sequence).sorted() == Array(1...200), "\(receipts.count) receipts")
      let report = try Self.verify(store)
      #expect(report.valid, "\(report.message)")
      #expect(report.entriesVerified == 200)
      let last = try #require(receipts.max { $0.sequence < $1.sequence })
      #expect(report.headHash == last.entryHash)
      // Every receipt is the stored entry's hash.
      let entries = try store.withReadTransaction { try AuditJournal.entries(after: 0, limit: 1_000, in: $0) }
      #expect(Set(entries.map(\.receipt)) == Set(receipts), "receipts differ from the stored entries")
      // The object index holds each object's entries in order.
      let about = try store.withReadTransaction { try AuditJournal.entries(about: "pay-3", limit: 1_000, in: $0) }
      #expect(about.count == 40)
      #expect(about.allSatisfy { $0.object == "pay-3" })
      #expect(about.map(\.sequence) == about.map(\.sequence).sorted())
      // A range verifies against the entry before it.
      #expect(try Self.verify(store, from: 50, to: 60).entriesVerified == 11)
    }
  }

  @Test("a head that fell behind the entries never lets an append overwrite one: refused, the entry kept")
  func appendNeverOverwrites() async throws {
    try await withTemporaryDirectory { directory in
      let store = try Self.open(directory.path)
      _ = try await Self.fill(store, count: 5)
      let before = try store.withReadTransaction { try AuditJournal.entries(after: 0, limit: 10, in: $0) }
      // The head record set back to entry 3 (a restored or damaged meta record).
      try store.withWriteTransaction { txn in
        var head = RecordWriter()
        head.write(UInt64(3))
        head.writeRaw(before[2].entryHash)
        try txn.put(AuditJournal.headKey, head.bytes, in: .meta)
      }
      let error = #expect(throws: StoreError.self) {
        try store.withWriteTransaction { txn in
          try AuditJournal.append(&txn, at: Instant(millisecondsSinceEpoch: 0), principal: "mallory", action: "payment.settled", object: "pay-1")
        }
      }
      #expect(error?.code == .corrupted)
      let after = try store.withReadTransaction { try AuditJournal.entries(after: 0, limit: 10, in: $0) }
      #expect(after == before)
    }
  }

  @Test("the payload is canonical JSON: sorted keys, no whitespace, JSON's escapes and nothing more")
  func canonicalPayload() {
    let payload: AuditPayload = ["z": "last", "a": "quote \" backslash \\ tab \t nl \n bell \u{07} 中文 é", "m": ""]
    #expect(payload.canonicalJSON == #"{"a":"quote \" backslash \\ tab \t nl \n bell \u0007 中文 é","m":"","z":"last"}"#)
    #expect(AuditPayload().canonicalJSON == "{}")
    // Keys in byte order whatever order they were given or set in (upper case before lower,
    // a prefix before its extensions, multi-byte UTF-8 last); a key given twice keeps its last
    // value; nil removes.
    var built: AuditPayload = ["b": "1", "B": "2", "bb": "3", "é": "4", "a": "5", "b": "6"]
    #expect(built.canonicalJSON == #"{"B":"2","a":"5","b":"6","bb":"3","é":"4"}"#)
    built["aa"] = "7"
    built["B"] = nil
    built["missing"] = nil
    built["bb"] = "8"
    #expect(built.canonicalJSON == #"{"a":"5","aa":"7","b":"6","bb":"8","é":"4"}"#)
    #expect(built["aa"] == "7" && built["B"] == nil && built.fields == ["a": "5", "aa": "7", "b": "6", "bb": "8", "é": "4"])
  }

  @Test("the entry hash is SHA-256 over the documented encoding (docs/audit.md)")
  func knownHash() {
    // Computed independently with scripts/verify_audit_export.py's entry_hash():
    //   python3 -c 'import sys; sys.path.insert(0,"scripts"); import verify_audit_export as v;
    //   print(v.entry_hash({"sequence":1,"time_ms":1764000000000,"principal":"erp",
    //   "action":"payment.created","object":"pay-s000000000000001","payload":"{\"a\":\"b\"}"}, bytes(32)).hex())'
    let entry = AuditEntry(
      sequence: 1, time: Instant(millisecondsSinceEpoch: 1_764_000_000_000), principal: "erp", action: "payment.created",
      object: "pay-s000000000000001", payload: #"{"a":"b"}"#, previousHash: AuditJournal.genesisHash)
    #expect(Self.hex(entry.entryHash) == Self.knownHashHex)
  }

  static let knownHashHex = "ee135ccf472dc1e1a6aa2dd282b941863d9173ed4e73e933f777dca6d5ed8916"

  static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

  @Test("a changed byte, a re-hashed entry, a removed entry and a cut-off end are each found at their sequence")
  func tamperingIsFound() async throws {
    try await withTemporaryDirectory { directory in
      let store = try Self.open(directory.path)
      _ = try await Self.fill(store, count: 20, concurrency: 1)

      // 1. One byte of entry 5's payload changed in the data file ("n":"4" → "n":"9").
      let original5 = try #require(try store.withReadTransaction { try $0.get(AuditJournal.key(5), in: .audit) })
      var edited = original5
      let needle = Array(#""n":"4""#.utf8)
      let at = try #require((0...(edited.count - needle.count)).first { Array(edited[$0..<$0 + needle.count]) == needle })
      edited[at + needle.count - 2] = UInt8(ascii: "9")
      try store.withWriteTransaction { try $0.put(AuditJournal.key(5), edited, in: .audit) }
      var report = try Self.verify(store)
      #expect(!report.valid && report.firstInvalidSequence == 5, "\(report)")
      #expect(report.entriesVerified == 4)

      // 2. The insider also recomputes entry 5's hash: now entry 6 no longer links.
      var forged = try store.withReadTransaction { try #require(try AuditJournal.entry(5, in: $0)) }
      forged.payload = forged.payload.replacingOccurrences(of: #""n":"4""#, with: #""n":"9""#)
      forged.entryHash = forged.computedHash
      try store.withWriteTransaction { txn in
        var record = RecordWriter()
        record.write(AuditJournal.recordFormat)
        record.write(forged.time.millisecondsSinceEpoch)
        for text in [forged.principal, forged.action, forged.object, forged.payload] { record.write(text) }
        record.writeRaw(forged.previousHash)
        record.writeRaw(forged.entryHash)
        try txn.put(AuditJournal.key(5), record.bytes, in: .audit)
      }
      report = try Self.verify(store)
      #expect(!report.valid && report.firstInvalidSequence == 6, "\(report)")
      try store.withWriteTransaction { try $0.put(AuditJournal.key(5), original5, in: .audit) }
      #expect(try Self.verify(store).valid)

      // 3. Entry 12 removed.
      let original12 = try #require(try store.withReadTransaction { try $0.get(AuditJournal.key(12), in: .audit) })
      try store.withWriteTransaction { _ = try $0.delete(AuditJournal.key(12), in: .audit) }
      report = try Self.verify(store)
      #expect(!report.valid && report.firstInvalidSequence == 12, "\(report)")
      try store.withWriteTransaction { try $0.put(AuditJournal.key(12), original12, in: .audit) }

      // 4. The last entry removed: the chain verifies up to 19 but no longer ends at the head.
      try store.withWriteTransaction { _ = try $0.delete(AuditJournal.key(20), in: .audit) }
      report = try Self.verify(store)
      #expect(!report.valid && report.firstInvalidSequence == 20, "\(report)")
    }
  }

  @Test("schema 1 audit records become the start of the chain on open; a bad record migrates nothing")
  func migratesSchemaOne() async throws {
    try await withTemporaryDirectory { directory in
      let path = directory.appending("data")
      // A directory as schema 1 left it: format-1 records and the old counter.
      do {
        let old = try Self.open(path, schemaVersion: 1)
        try old.withWriteTransaction { txn in
          for sequence in UInt64(1)...3 {
            var record = RecordWriter()
            record.write(UInt8(1))
            record.write(Int64(1_764_000_000_000 + Int64(sequence)))
            record.write("erp")
            record.write("payment.cancelled")
            record.write("pay-\(sequence)")
            record.write(sequence == 2 ? "" : "reason \(sequence)")
            try txn.put(AuditJournal.key(sequence), record.bytes, in: .audit)
          }
          var counter = RecordWriter()
          counter.write(UInt64(3))
          try txn.put(AuditJournal.legacySequenceKey, counter.bytes, in: .meta)
        }
      }
      // Without the migration this build refuses the directory.
      #expect(throws: StoreError.self) { _ = try Self.open(path) }
      let store = try Self.open(path, migrations: [AuditJournal.migration])
      #expect(store.migratedFrom == 1)
      #expect(try store.storedSchemaVersion() == Store.schemaVersion)
      let report = try Self.verify(store)
      #expect(report.valid && report.entriesVerified == 3, "\(report)")
      let entries = try store.withReadTransaction { try AuditJournal.entries(after: 0, limit: 10, in: $0) }
      #expect(entries.map(\.payload) == [
        #"{"detail":"reason 1","migrated_from_schema":"1"}"#, #"{"migrated_from_schema":"1"}"#,
        #"{"detail":"reason 3","migrated_from_schema":"1"}"#,
      ])
      #expect(entries.map(\.object) == ["pay-1", "pay-2", "pay-3"])
      #expect(try store.withReadTransaction { try $0.get(AuditJournal.legacySequenceKey, in: .meta) } == nil)
      // New entries continue the chain.
      let next = try await store.write { txn in
        try AuditJournal.append(&txn, at: Instant(millisecondsSinceEpoch: 1_764_000_001_000), principal: "erp", action: "payment.created", object: "pay-4")
      }
      #expect(next.sequence == 4)
      #expect(try Self.verify(store).valid)
    }

    try await withTemporaryDirectory { directory in
      let path = directory.appending("data")
      do {
        let old = try Self.open(path, schemaVersion: 1)
        try old.withWriteTransaction { txn in
          try txn.put(AuditJournal.key(1), [9, 9, 9], in: .audit)
        }
      }
      #expect(throws: StoreError.self) { _ = try Self.open(path, migrations: [AuditJournal.migration]) }
      // Nothing was written: the directory is still schema 1 with its record as it was.
      let old = try Self.open(path, schemaVersion: 1)
      #expect(try old.storedSchemaVersion() == 1)
      #expect(try old.withReadTransaction { try $0.get(AuditJournal.key(1), in: .audit) } == [9, 9, 9])
    }
  }

  @Test("a signed checkpoint survives verification; a journal rewritten before it, hashes and all, does not")
  func checkpoints() async throws {
    try await withTemporaryDirectory { directory in
      let pki = try TestPKI(directory: directory)
      let certificate = try String(contentsOfFile: pki.serverCertificatePath, encoding: .utf8)
      let signer = try JournalCheckpoint.Signer(
        certificatePEM: certificate, privateKeyPEM: String(contentsOfFile: pki.serverKeyPath, encoding: .utf8))
      let verifier = try JournalCheckpoint.Verifier(certificatePEM: certificate)
      let store = try Self.open(directory.appending("data"))
      // Nothing to sign in an empty journal.
      #expect(try store.withWriteTransaction { try signer.checkpoint(&$0, at: Instant(millisecondsSinceEpoch: 1)) } == nil)
      _ = try await Self.fill(store, count: 10, concurrency: 1)
      let checkpoint = try #require(try store.withWriteTransaction { try signer.checkpoint(&$0, at: Instant(millisecondsSinceEpoch: 2)) })
      #expect(checkpoint.sequence == 11)
      // A second one with nothing new in between is not written.
      #expect(try store.withWriteTransaction { try signer.checkpoint(&$0, at: Instant(millisecondsSinceEpoch: 3)) } == nil)
      #expect(try store.withReadTransaction { try JournalCheckpoint.lastCheckpoint($0) } == 11)
      _ = try await Self.fill(store, count: 3, concurrency: 1)

      var report = try store.withReadTransaction { try JournalVerifier.verify(checkpoints: verifier, in: $0) }
      #expect(report.valid && report.checkpointsVerified == 1 && report.lastCheckpoint == 11, "\(report)")

      // Another certificate's checkpoints are counted, not checked.
      let otherDirectory = try TemporaryDirectory()
      defer { otherDirectory.remove() }
      let other = try TestPKI(directory: otherDirectory)
      let otherVerifier = try JournalCheckpoint.Verifier(certificatePEM: String(contentsOfFile: other.serverCertificatePath, encoding: .utf8))
      report = try store.withReadTransaction { try JournalVerifier.verify(checkpoints: otherVerifier, in: $0) }
      #expect(report.valid && report.checkpointsVerified == 0 && report.checkpointsOtherCertificate == 1, "\(report)")

      // An insider rewrites entry 4 and re-chains every entry after it, checkpoint included:
      // every hash and link is consistent again, but the checkpoint's signature is not.
      try store.withWriteTransaction { txn in
        var entries = try AuditJournal.entries(after: 0, limit: 100, in: txn)
        entries[3].payload = entries[3].payload.replacingOccurrences(of: #""n":"3""#, with: #""n":"7""#)
        for index in 3..<entries.count {
          if index > 3 { entries[index].previousHash = entries[index - 1].entryHash }
          entries[index].entryHash = entries[index].computedHash
          try AuditJournal.write(entries[index], rewriting: true, txn: &txn)
        }
      }
      #expect(try store.withReadTransaction { try JournalVerifier.verify(in: $0) }.valid)
      report = try store.withReadTransaction { try JournalVerifier.verify(checkpoints: verifier, in: $0) }
      #expect(!report.valid && report.firstInvalidSequence == 11, "\(report)")
    }
  }

  @Test("a read-only open verifies a data directory and cannot write to it")
  func readOnly() async throws {
    try await withTemporaryDirectory { directory in
      do {
        let store = try Self.open(directory.path)
        _ = try await Self.fill(store, count: 10)
      }
      let readOnly = try Store(configuration: .init(directory: directory.path, mapSizeMiB: Limits.minMapSizeMiB, readOnly: true))
      #expect(try Self.verify(readOnly).entriesVerified == 10)
      #expect(throws: StoreError.self) {
        try readOnly.withWriteTransaction { try $0.put([1], [1], in: .meta) }
      }
      // A directory that is not a data directory is refused, not created.
      #expect(throws: StoreError.self) {
        _ = try Store(configuration: .init(directory: directory.appending("absent"), mapSizeMiB: 1, readOnly: true))
      }
      #expect(!FileManager.default.fileExists(atPath: directory.appending("absent")))
    }
  }
}
