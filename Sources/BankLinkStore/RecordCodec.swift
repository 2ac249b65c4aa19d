import BankLinkCore

/// Appends fields to a binary record: fixed-width big-endian integers (so keys sort
/// numerically) and length-prefixed UTF-8 strings.
public struct RecordWriter: Sendable {
  public private(set) var bytes: [UInt8]

  public init(capacity: Int = 64) {
    self.bytes = []
    self.bytes.reserveCapacity(capacity)
  }

  public mutating func write(_ value: UInt8) { self.bytes.append(value) }

  public mutating func write(_ value: UInt32) {
    withUnsafeBytes(of: value.bigEndian) { self.bytes.append(contentsOf: $0) }
  }

  public mutating func write(_ value: UInt64) {
    withUnsafeBytes(of: value.bigEndian) { self.bytes.append(contentsOf: $0) }
  }

  /// Signed values are written with the sign bit flipped so that their byte order matches their
  /// numeric order (for keys that contain times).
  public mutating func write(_ value: Int64) {
    self.write(UInt64(bitPattern: value) ^ (1 << 63))
  }

  public mutating func write(_ value: String) {
    // Straight from the string's storage: no intermediate array per field.
    var value = value
    value.withUTF8 { utf8 in
      self.write(UInt32(utf8.count))
      self.bytes.append(contentsOf: utf8)
    }
  }

  /// Raw bytes without a length (for key prefixes).
  public mutating func writeRaw(_ value: [UInt8]) { self.bytes.append(contentsOf: value) }
}

/// Reads fields written by ``RecordWriter``; every read checks bounds and throws
/// ``StoreError`` `.corrupted` on a short or malformed record.
public struct RecordReader: Sendable {
  private let bytes: [UInt8]
  private var offset = 0

  public init(_ bytes: [UInt8]) { self.bytes = bytes }

  public var isAtEnd: Bool { self.offset == self.bytes.count }

  private mutating func take(_ count: Int) throws -> ArraySlice<UInt8> {
    let start = try self.advance(count)
    return self.bytes[start..<start + count]
  }

  /// Checks that `count` more bytes are there, moves past them and returns where they start.
  private mutating func advance(_ count: Int) throws -> Int {
    guard count >= 0, self.bytes.count - self.offset >= count else {
      throw StoreError(code: .corrupted, message: "record truncated at byte \(self.offset) (wanted \(count) more)")
    }
    defer { self.offset += count }
    return self.offset
  }

  /// A big-endian integer, read in place (no slice, so no reference counting
  /// per field: records are decoded by the million in a reconciliation run).
  private mutating func integer<Integer: FixedWidthInteger>(_ type: Integer.Type) throws -> Integer {
    let start = try self.advance(MemoryLayout<Integer>.size)
    return self.bytes.withUnsafeBytes { Integer(bigEndian: $0.loadUnaligned(fromByteOffset: start, as: Integer.self)) }
  }

  public mutating func readUInt8() throws -> UInt8 {
    let start = try self.advance(1)
    return self.bytes[start]
  }

  public mutating func readUInt32() throws -> UInt32 { try self.integer(UInt32.self) }

  public mutating func readUInt64() throws -> UInt64 { try self.integer(UInt64.self) }

  public mutating func readInt64() throws -> Int64 {
    Int64(bitPattern: try self.readUInt64() ^ (1 << 63))
  }

  public mutating func readBytes(_ count: Int) throws -> [UInt8] {
    Array(try self.take(count))
  }

  public mutating func readString() throws -> String {
    let count = Int(try self.readUInt32())
    let start = try self.advance(count)
    return self.bytes.withUnsafeBufferPointer { String(decoding: UnsafeBufferPointer(rebasing: $0[start..<start + count]), as: UTF8.self) }
  }

  /// Steps over a string written by ``RecordWriter/write(_:)-(String)`` without decoding it.
  public mutating func skipString() throws {
    _ = try self.advance(Int(try self.readUInt32()))
  }

  /// Steps over `count` bytes.
  public mutating func skip(_ count: Int) throws {
    _ = try self.advance(count)
  }

  /// Checks that the whole record was consumed: trailing bytes mean a format mismatch.
  public func finish() throws {
    guard self.isAtEnd else {
      throw StoreError(code: .corrupted, message: "record has \(self.bytes.count - self.offset) unexpected trailing bytes")
    }
  }
}

/// Record layouts of the domain types. Each starts with a format byte so a later schema can
/// read old records or refuse them clearly.
extension Account {
  static let recordFormat: UInt8 = 1

  public var record: [UInt8] {
    var writer = RecordWriter(capacity: 128)
    writer.write(Account.recordFormat)
    writer.write(self.id)
    writer.write(self.number)
    writer.write(self.iban)
    writer.write(self.displayName)
    writer.write(self.bankBIC)
    writer.write(self.bankName)
    writer.write(self.currency.code)
    writer.write(self.status.rawValue)
    return writer.bytes
  }

  public init(record: [UInt8]) throws {
    var reader = RecordReader(record)
    try expectFormat(try reader.readUInt8(), Account.recordFormat, "account")
    let id = try reader.readString()
    let number = try reader.readString()
    let iban = try reader.readString()
    let displayName = try reader.readString()
    let bankBIC = try reader.readString()
    let bankName = try reader.readString()
    let currency = try decodeCurrency(try reader.readString())
    guard let status = AccountStatus(rawValue: try reader.readString()) else {
      throw StoreError(code: .corrupted, message: "account \(id) has an unknown status")
    }
    try reader.finish()
    self.init(
      id: id, number: number, iban: iban, displayName: displayName, bankBIC: bankBIC, bankName: bankName,
      currency: currency, status: status
    )
  }
}

extension BookedTransaction {
  static let recordFormat: UInt8 = 1

  public var record: [UInt8] {
    var writer = RecordWriter(capacity: 256)
    writer.write(BookedTransaction.recordFormat)
    writer.write(self.id)
    writer.write(self.accountID)
    writer.write(self.amount.minorUnits)
    writer.write(self.amount.currency.code)
    writer.write(self.direction == .credit ? UInt8(1) : UInt8(0))
    writer.write(self.bookingTime.millisecondsSinceEpoch)
    writer.write(self.valueDate)
    writer.write(self.counterparty.name)
    writer.write(self.counterparty.accountNumber)
    writer.write(self.counterparty.bankBIC)
    writer.write(self.counterparty.bankName)
    writer.write(self.endToEndID)
    writer.write(self.bankReference)
    writer.write(self.description)
    return writer.bytes
  }

  public init(record: [UInt8]) throws {
    var reader = RecordReader(record)
    try expectFormat(try reader.readUInt8(), BookedTransaction.recordFormat, "transaction")
    let id = try reader.readString()
    let accountID = try reader.readString()
    let minorUnits = try reader.readInt64()
    let currency = try decodeCurrency(try reader.readString())
    let direction: Direction = try reader.readUInt8() == 1 ? .credit : .debit
    let bookingTime = Instant(millisecondsSinceEpoch: try reader.readInt64())
    let valueDate = try reader.readString()
    let counterparty = Counterparty(
      name: try reader.readString(),
      accountNumber: try reader.readString(),
      bankBIC: try reader.readString(),
      bankName: try reader.readString()
    )
    let endToEndID = try reader.readString()
    let bankReference = try reader.readString()
    let description = try reader.readString()
    try reader.finish()
    self.init(
      id: id, accountID: accountID, amount: Money(minorUnits: minorUnits, currency: currency), direction: direction,
      bookingTime: bookingTime, valueDate: valueDate, counterparty: counterparty, endToEndID: endToEndID,
      bankReference: bankReference, description: description
    )
  }
}

private func expectFormat(_ found: UInt8, _ expected: UInt8, _ kind: String) throws {
  guard found == expected else {
    throw StoreError(code: .corrupted, message: "\(kind) record has format \(found), expected \(expected)")
  }
}

private func decodeCurrency(_ code: String) throws -> CurrencyCode {
  guard let currency = CurrencyCode(code) else {
    throw StoreError(code: .corrupted, message: "record holds an invalid currency code '\(code)'")
  }
  return currency
}

extension PaymentInstruction {
  /// Canonical bytes of the money-moving fields: equal instructions encode equally. Used to
  /// tell a retried request from a different request under the same idempotency key.
  public var canonicalRecord: [UInt8] {
    var writer = RecordWriter(capacity: 256)
    self.write(to: &writer)
    return writer.bytes
  }

  func write(to writer: inout RecordWriter) {
    writer.write(self.debtorAccountID)
    writer.write(self.creditor.name)
    writer.write(self.creditor.accountNumber)
    writer.write(self.creditor.iban)
    writer.write(self.creditor.bic)
    writer.write(self.creditor.country)
    writer.write(self.amount.minorUnits)
    writer.write(self.amount.currency.code)
    writer.write(self.purpose)
    writer.write(self.requestedExecutionDate)
    writer.write(self.type.rawValue)
  }

  init(reading reader: inout RecordReader) throws {
    let debtor = try reader.readString()
    let creditor = Creditor(
      name: try reader.readString(), accountNumber: try reader.readString(), iban: try reader.readString(),
      bic: try reader.readString(), country: try reader.readString())
    let minorUnits = try reader.readInt64()
    let currency = try decodeCurrency(try reader.readString())
    let purpose = try reader.readString()
    let date = try reader.readString()
    guard let type = PaymentType(rawValue: try reader.readString()) else {
      throw StoreError(code: .corrupted, message: "payment record has an unknown payment type")
    }
    self.init(
      debtorAccountID: debtor, creditor: creditor, amount: Money(minorUnits: minorUnits, currency: currency),
      purpose: purpose, requestedExecutionDate: date, type: type)
  }
}

extension Payment {
  static let recordFormat: UInt8 = 1

  public var record: [UInt8] {
    var writer = RecordWriter(capacity: 384)
    writer.write(Payment.recordFormat)
    writer.write(self.id)
    self.instruction.write(to: &writer)
    writer.write(self.status.rawValue)
    writer.write(self.creator)
    writer.write(self.idempotencyKey)
    writer.write(self.endToEndID)
    writer.write(self.batchID)
    writer.write(self.createdAt.millisecondsSinceEpoch)
    writer.write(self.updatedAt.millisecondsSinceEpoch)
    writer.write(self.statusReason)
    writer.write(self.bankStatusCode)
    writer.write(self.bankReasonCode)
    return writer.bytes
  }

  /// The status of a stored payment, read without decoding the rest of the record: for scans
  /// that pass over most payments by their state.
  public static func status(ofRecord record: [UInt8]) throws -> PaymentStatus {
    try record.withUnsafeBytes { try Self.status(ofRecord: $0) }
  }

  /// ``status(ofRecord:)-([UInt8])`` of a record read in place (``ReadableTransaction/scanInPlace(_:from:_:)``):
  /// a scan over a million payments copies none of them.
  public static func status(ofRecord record: UnsafeRawBufferPointer) throws -> PaymentStatus {
    // A plain loop over the length prefixes: asked of every stored payment by a reconciliation
    // run, where nested throwing helpers cost more than the reading.
    guard let format = record.first, format == Payment.recordFormat else {
      throw StoreError(code: .corrupted, message: "payment record has format \(record.first.map(String.init) ?? "none"), expected \(Payment.recordFormat)")
    }
    // The id, then the instruction: debtor account, the creditor's five fields (7 strings),
    // amount (8 bytes), currency, purpose, execution date, type (4 strings)
    // (``PaymentInstruction/write(to:)``); then the status.
    var offset = 1
    for field in 0..<11 {
      if field == 7 { offset += 8 }
      guard record.count - offset >= 4 else { throw Self.truncated(at: offset) }
      offset += 4 + Int(UInt32(bigEndian: record.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
    }
    guard record.count - offset >= 4 else { throw Self.truncated(at: offset) }
    let count = Int(UInt32(bigEndian: record.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
    offset += 4
    guard record.count - offset >= count else { throw Self.truncated(at: offset) }
    // Compared as bytes: no String is made and no string switch run.
    let name = UnsafeRawBufferPointer(rebasing: record[offset..<offset + count])
    for (bytes, status) in Self.statusNames where bytes.count == count && bytes.elementsEqual(name) {
      return status
    }
    throw StoreError(code: .corrupted, message: "a payment record has an unknown status")
  }

  private static func truncated(at offset: Int) -> StoreError {
    StoreError(code: .corrupted, message: "payment record truncated at byte \(offset)")
  }

  /// Every state's stored name, as bytes.
  static let statusNames: [(bytes: [UInt8], status: PaymentStatus)] = PaymentStatus.allCases.map { (Array($0.rawValue.utf8), $0) }

  public init(record: [UInt8]) throws {
    var reader = RecordReader(record)
    try expectFormat(try reader.readUInt8(), Payment.recordFormat, "payment")
    let id = try reader.readString()
    let instruction = try PaymentInstruction(reading: &reader)
    guard let status = PaymentStatus(rawValue: try reader.readString()) else {
      throw StoreError(code: .corrupted, message: "payment \(id) has an unknown status")
    }
    self.init(
      id: id, instruction: instruction, status: status, creator: try reader.readString(),
      idempotencyKey: try reader.readString(), endToEndID: try reader.readString(), batchID: try reader.readString(),
      createdAt: Instant(millisecondsSinceEpoch: try reader.readInt64()),
      updatedAt: Instant(millisecondsSinceEpoch: try reader.readInt64()), statusReason: try reader.readString(),
      bankStatusCode: try reader.readString(), bankReasonCode: try reader.readString())
    try reader.finish()
  }
}
