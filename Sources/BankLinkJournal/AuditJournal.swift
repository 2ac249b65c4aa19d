import BankLinkCore
import BankLinkStore
import Crypto
import Foundation

/// The tamper-evident audit journal: every state change is appended as an entry in the same
/// LMDB transaction as the change, each entry's hash covering the previous entry's hash.
///
/// Layout (docs/audit.md specifies the hash precisely enough to verify an export elsewhere):
/// - ``Database/audit``: 8-byte big-endian sequence → format 2 record: time, principal, action,
///   object, payload (canonical JSON), previous hash, entry hash.
/// - ``Database/auditByObject``: object, 0x00, sequence → empty: an object's entries in order.
/// - ``Database/meta`` `audit_head`: the last sequence and its hash, so that an append reads
///   one record instead of the chain.
///
/// Sequences are gap-free and issued in commit order: the head is read and written inside the
/// appending transaction, and LMDB serialises write transactions.
public enum AuditJournal {
  /// Format of the records this build writes. Format 1 (earlier builds: no payload, no hashes)
  /// is converted by ``migration``.
  static let recordFormat: UInt8 = 2
  static let legacyRecordFormat: UInt8 = 1
  static let headKey = Array("audit_head".utf8)
  /// The counter earlier builds kept; removed when their records are chained.
  static let legacySequenceKey = Array("audit_sequence".utf8)
  /// The previous hash of the first entry.
  public static let genesisHash = [UInt8](repeating: 0, count: 32)

  /// Appends an entry inside the caller's transaction and returns its receipt. Nothing is
  /// written if the transaction aborts, the head included.
  @discardableResult
  public static func append(
    _ txn: inout WriteTransaction, at time: Instant, principal: String, action: String, object: String,
    details: AuditPayload = AuditPayload()
  ) throws -> JournalReceipt {
    let head = try Self.head(txn.get(Self.headKey, in: .meta))
    let sequence = head.sequence + 1
    // The request that caused the entry, when it came from an RPC (RequestContext).
    var details = details
    if let requestID = RequestContext.requestID, details["request_id"] == nil { details["request_id"] = requestID }
    let entry = AuditEntry(
      sequence: sequence, time: time, principal: principal, action: action, object: object,
      payload: details.canonicalJSON, previousHash: head.entryHash)
    try Self.write(entry, txn: &txn)
    return entry.receipt
  }

  /// The receipt of the last entry, or nil when the journal is empty.
  public static func head(_ txn: some ReadableTransaction) throws -> JournalReceipt? {
    let head = try Self.head(txn.get(Self.headKey, in: .meta))
    return head.sequence == 0 ? nil : head
  }

  /// Entries about `object`, oldest first, from sequence `after` + 1, at most `limit`.
  public static func entries(
    about object: String, after: UInt64 = 0, limit: Int, in txn: some ReadableTransaction
  ) throws -> [AuditEntry] {
    let prefix = Array(object.utf8) + [0]
    var keys: [[UInt8]] = []
    try txn.scan(.auditByObject, from: prefix + Self.key(after + 1)) { key, _ in
      guard key.count == prefix.count + 8, key.starts(with: prefix), keys.count < limit else { return false }
      keys.append(Array(key.suffix(8)))
      return true
    }
    return try keys.map { key in
      guard let value = try txn.get(key, in: .audit) else {
        throw StoreError(code: .corrupted, message: "the audit index of \(LogText.prefix(object)) names a missing entry")
      }
      return try Self.decode(key: key, value: value)
    }
  }

  /// Entries from sequence `after` + 1, oldest first, at most `limit`.
  public static func entries(after: UInt64, limit: Int, in txn: some ReadableTransaction) throws -> [AuditEntry] {
    var entries: [AuditEntry] = []
    try txn.scan(.audit, from: Self.key(after + 1)) { key, value in
      guard entries.count < limit else { return false }
      entries.append(try Self.decode(key: key, value: value))
      return true
    }
    return entries
  }

  /// The entry with `sequence`, or nil.
  public static func entry(_ sequence: UInt64, in txn: some ReadableTransaction) throws -> AuditEntry? {
    let key = Self.key(sequence)
    return try txn.get(key, in: .audit).map { try Self.decode(key: key, value: $0) }
  }

  // MARK: Records

  /// Stores `entry` and moves the head to it. A new entry is appended (a sequence already used
  /// is refused, never overwritten); `rewriting` replaces the record under the entry's sequence
  /// (the schema migration, which rewrites every record in its new format).
  static func write(_ entry: AuditEntry, rewriting: Bool = false, txn: inout WriteTransaction) throws {
    var record = RecordWriter(capacity: 96 + entry.payload.utf8.count)
    record.write(Self.recordFormat)
    record.write(entry.time.millisecondsSinceEpoch)
    record.write(entry.principal)
    record.write(entry.action)
    record.write(entry.object)
    record.write(entry.payload)
    record.writeRaw(entry.previousHash)
    record.writeRaw(entry.entryHash)
    let key = Self.key(entry.sequence)
    if rewriting {
      try txn.put(key, record.bytes, in: .audit)
    } else {
      try txn.append(key, record.bytes, in: .audit)
    }
    var objectKey: [UInt8] = []
    objectKey.reserveCapacity(entry.object.utf8.count + 1 + key.count)
    objectKey.append(contentsOf: entry.object.utf8)
    objectKey.append(0)
    objectKey.append(contentsOf: key)
    try txn.put(objectKey, [], in: .auditByObject)
    var head = RecordWriter(capacity: 40)
    head.write(entry.sequence)
    head.writeRaw(entry.entryHash)
    try txn.put(Self.headKey, head.bytes, in: .meta)
  }

  /// Decodes a stored entry as it is, without checking its hash (``JournalVerifier`` does).
  public static func decode(key: [UInt8], value: [UInt8]) throws -> AuditEntry {
    var keyReader = RecordReader(key)
    let sequence = try keyReader.readUInt64()
    var reader = RecordReader(value)
    let format = try reader.readUInt8()
    guard format == Self.recordFormat else {
      throw StoreError(code: .corrupted, message: "audit entry \(sequence) has record format \(format), expected \(Self.recordFormat)")
    }
    let time = Instant(millisecondsSinceEpoch: try reader.readInt64())
    let principal = try reader.readString()
    let action = try reader.readString()
    let object = try reader.readString()
    let payload = try reader.readString()
    let previous = try reader.readBytes(32)
    let stored = try reader.readBytes(32)
    try reader.finish()
    return AuditEntry(
      sequence: sequence, time: time, principal: principal, action: action, object: object, payload: payload,
      previousHash: previous, storedHash: stored)
  }

  static func head(_ bytes: [UInt8]?) throws -> JournalReceipt {
    guard let bytes else { return JournalReceipt(sequence: 0, entryHash: Self.genesisHash) }
    var reader = RecordReader(bytes)
    let head = JournalReceipt(sequence: try reader.readUInt64(), entryHash: try reader.readBytes(32))
    try reader.finish()
    return head
  }

  /// The key of entry `sequence`: 8 bytes big-endian, so LMDB's order is the numeric order.
  public static func key(_ sequence: UInt64) -> [UInt8] {
    var writer = RecordWriter(capacity: 8)
    writer.write(sequence)
    return writer.bytes
  }

  // MARK: Migration from format 1

  /// Schema 1 → 2: the unchained audit records of earlier builds become the first entries of
  /// the chain, in their order, with their text as the payload's `detail`; the object index and
  /// the head are built. Runs in the transaction that records the new schema version.
  public static let migration = SchemaMigration(from: 1, description: "chain the audit records into the journal") { txn in
    var legacy: [(key: [UInt8], value: [UInt8])] = []
    try txn.scan(.audit) { key, value in
      legacy.append((key, value))
      return true
    }
    var previous = Self.genesisHash
    var expected: UInt64 = 1
    for (key, value) in legacy {
      var keyReader = RecordReader(key)
      let sequence = try keyReader.readUInt64()
      var reader = RecordReader(value)
      guard try reader.readUInt8() == Self.legacyRecordFormat else {
        throw StoreError(code: .corrupted, message: "audit record \(sequence) is not in the format of schema 1")
      }
      guard sequence == expected else {
        throw StoreError(code: .corrupted, message: "audit records of schema 1 skip from \(expected - 1) to \(sequence)")
      }
      let time = Instant(millisecondsSinceEpoch: try reader.readInt64())
      let principal = try reader.readString()
      let action = try reader.readString()
      let object = try reader.readString()
      let detail = try reader.readString()
      var payload = AuditPayload()
      if !detail.isEmpty { payload["detail"] = detail }
      payload["migrated_from_schema"] = "1"
      let entry = AuditEntry(
        sequence: sequence, time: time, principal: principal, action: action, object: object,
        payload: payload.canonicalJSON, previousHash: previous)
      try Self.write(entry, rewriting: true, txn: &txn)
      previous = entry.entryHash
      expected += 1
    }
    _ = try txn.delete(Self.legacySequenceKey, in: .meta)
  }
}

/// The proof of a change a mutating reply carries: the journal entry that records it.
public struct JournalReceipt: Sendable, Hashable {
  public var sequence: UInt64
  public var entryHash: [UInt8]

  public init(sequence: UInt64, entryHash: [UInt8]) {
    self.sequence = sequence
    self.entryHash = entryHash
  }
}

/// One journal entry.
extension AuditEntry {
  /// The payload's fields (a flat JSON object of strings, as ``AuditPayload`` writes it); empty
  /// when the payload is not one.
  public var details: [String: String] {
    (try? JSONSerialization.jsonObject(with: Data(self.payload.utf8)) as? [String: String]) ?? [:]
  }
}

public struct AuditEntry: Sendable, Hashable {
  public var sequence: UInt64
  public var time: Instant
  /// Who made the change: a principal's identity, or `system` / `bank`.
  public var principal: String
  /// What happened, e.g. `payment.created`.
  public var action: String
  /// What it happened to: a payment id, a batch id, an account id.
  public var object: String
  /// Canonical JSON (``AuditPayload``); never a secret.
  public var payload: String
  public var previousHash: [UInt8]
  /// The hash as stored. ``computedHash`` is what it must be.
  public var entryHash: [UInt8]

  /// A new entry: its hash is computed.
  init(
    sequence: UInt64, time: Instant, principal: String, action: String, object: String, payload: String,
    previousHash: [UInt8]
  ) {
    self.init(
      sequence: sequence, time: time, principal: principal, action: action, object: object, payload: payload,
      previousHash: previousHash, storedHash: [])
    self.entryHash = self.computedHash
  }

  /// An entry as read: its stored hash is kept as it is.
  init(
    sequence: UInt64, time: Instant, principal: String, action: String, object: String, payload: String,
    previousHash: [UInt8], storedHash: [UInt8]
  ) {
    self.sequence = sequence
    self.time = time
    self.principal = principal
    self.action = action
    self.object = object
    self.payload = payload
    self.previousHash = previousHash
    self.entryHash = storedHash
  }

  public var receipt: JournalReceipt { JournalReceipt(sequence: self.sequence, entryHash: self.entryHash) }

  /// SHA-256 of the payload's UTF-8 bytes.
  public var payloadDigest: [UInt8] { Array(SHA256.hash(data: Array(self.payload.utf8))) }

  /// SHA-256 over the entry's canonical encoding (docs/audit.md, "The entry hash"):
  ///
  ///     "banklink-audit-v1" ‖ u64(sequence) ‖ i64(time_ms) ‖ str(principal) ‖ str(action)
  ///       ‖ str(object) ‖ payload_digest (32) ‖ previous_hash (32)
  ///
  /// integers big-endian, `str` a u32 big-endian byte count then the UTF-8 bytes.
  public var computedHash: [UInt8] {
    // One buffer, allocated once, hashed in one call; the payload is hashed where it lies.
    var bytes: [UInt8] = []
    bytes.reserveCapacity(
      Self.domain.utf8.count + 16 + 12 + self.principal.utf8.count + self.action.utf8.count + self.object.utf8.count + 64)
    bytes.append(contentsOf: Self.domain.utf8)
    func integer<Integer: FixedWidthInteger>(_ value: Integer) {
      withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }
    func field(_ text: String) {
      var text = text
      text.withUTF8 { utf8 in
        integer(UInt32(utf8.count))
        bytes.append(contentsOf: utf8)
      }
    }
    integer(self.sequence)
    integer(UInt64(bitPattern: self.time.millisecondsSinceEpoch))
    field(self.principal)
    field(self.action)
    field(self.object)
    var payload = self.payload
    payload.withUTF8 { SHA256.hash(data: UnsafeRawBufferPointer($0)) }.withUnsafeBytes { bytes.append(contentsOf: $0) }
    bytes.append(contentsOf: self.previousHash)
    // Copied out of the digest in one piece (`Array(digest)` iterates it byte by byte).
    return bytes.withUnsafeBytes { SHA256.hash(data: $0).withUnsafeBytes { Array($0) } }
  }

  /// Domain separation: no other hash BankLink computes starts with these bytes.
  public static let domain = "banklink-audit-v1"
}

/// The details of a journal entry: string fields, written as canonical JSON — an object with
/// keys in ascending order of their UTF-8 bytes, no whitespace, strings escaped as JSON requires
/// and nothing more (`"` `\` and control characters; `\b \f \n \r \t` short, others `\u00xx`;
/// everything else as UTF-8). Python's `json.dumps(d, sort_keys=True, separators=(",", ":"),
/// ensure_ascii=False)` writes the same bytes for the same fields.
public struct AuditPayload: Sendable, Hashable, ExpressibleByDictionaryLiteral {
  /// The fields in canonical order (ascending UTF-8 bytes of their keys), each key once: a
  /// payload has a handful of fields and is built for every journal entry, so a sorted pair of
  /// arrays rather than a dictionary to hash and then sort.
  private var keys: [String] = []
  private var values: [String] = []

  public init() {}

  /// A key given twice keeps its last value.
  public init(dictionaryLiteral elements: (String, String)...) {
    self.keys.reserveCapacity(elements.count)
    self.values.reserveCapacity(elements.count)
    for (key, value) in elements { self[key] = value }
  }

  /// The fields by key. (Keys are told apart by their bytes here, by canonical equivalence in a
  /// `Dictionary`: of two keys that differ only in Unicode normalisation, the later one's value.)
  public var fields: [String: String] {
    Dictionary(zip(self.keys, self.values), uniquingKeysWith: { _, later in later })
  }

  /// Where `key` is, or where it would go.
  private func place(of key: String) -> (index: Int, found: Bool) {
    var key = key
    return key.withUTF8 { wanted in
      for index in self.keys.indices {
        var existing = self.keys[index]
        let order = existing.withUTF8 { Self.compare(wanted, $0) }
        if order == 0 { return (index, true) }
        if order < 0 { return (index, false) }
      }
      return (self.keys.count, false)
    }
  }

  /// The order of two keys' UTF-8 bytes: negative, zero or positive.
  private static func compare(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> Int {
    let common = min(a.count, b.count)
    if common > 0, let left = a.baseAddress, let right = b.baseAddress {
      let order = memcmp(left, right, common)
      if order != 0 { return Int(order) }
    }
    return a.count - b.count
  }

  public subscript(key: String) -> String? {
    get {
      let (index, found) = self.place(of: key)
      return found ? self.values[index] : nil
    }
    set {
      let (index, found) = self.place(of: key)
      switch (found, newValue) {
      case (true, let value?): self.values[index] = value
      case (true, nil):
        self.keys.remove(at: index)
        self.values.remove(at: index)
      case (false, let value?):
        self.keys.insert(key, at: index)
        self.values.insert(value, at: index)
      case (false, nil): break
      }
    }
  }

  public var canonicalJSON: String {
    var out: [UInt8] = []
    out.reserveCapacity(zip(self.keys, self.values).reduce(2) { $0 + $1.0.utf8.count + $1.1.utf8.count + 6 })
    out.append(UInt8(ascii: "{"))
    for index in self.keys.indices {
      if index > 0 { out.append(UInt8(ascii: ",")) }
      Self.appendString(self.keys[index], to: &out)
      out.append(UInt8(ascii: ":"))
      Self.appendString(self.values[index], to: &out)
    }
    out.append(UInt8(ascii: "}"))
    return String(decoding: out, as: UTF8.self)
  }

  private static func appendString(_ text: String, to out: inout [UInt8]) {
    out.append(UInt8(ascii: "\""))
    // Most values need no escaping: copied whole.
    if text.utf8.allSatisfy({ $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) {
      out.append(contentsOf: text.utf8)
      out.append(UInt8(ascii: "\""))
      return
    }
    for byte in text.utf8 {
      switch byte {
      case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
      case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
      case 0x08: out += [UInt8(ascii: "\\"), UInt8(ascii: "b")]
      case 0x0C: out += [UInt8(ascii: "\\"), UInt8(ascii: "f")]
      case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
      case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
      case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
      case 0..<0x20:
        out += Array("\\u00".utf8) + [Self.hexDigits[Int(byte >> 4)], Self.hexDigits[Int(byte & 0x0F)]]
      default: out.append(byte)
      }
    }
    out.append(UInt8(ascii: "\""))
  }

  private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
}
